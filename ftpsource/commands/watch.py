"""``ftpsource watch``: run one source without Argo and print its events as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..credentials import load_credentials
from ..metrics import Metrics
from ..policy import authorize
from ..stage import load_stage_credentials
from ..store import AsyncStore, OutboxRow
from ..watcher import Watcher, run_session
from .common import STATE_HELP, STATE_PASSWORD_HELP, add_common, env, path_or_none, read_config

__all__ = ["add_parser", "run"]


async def _watch(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    credentials = load_credentials(path_or_none(args.credentials_dir), config.credentials)
    authorize(config, credentials, allowed_roots=None)  # the operator's own config may read its own root
    stage_credentials = load_stage_credentials(path_or_none(args.credentials_dir), config)
    store = AsyncStore.open(args.state, path_or_none(args.state_password_file))
    source_id = config.source_id(args.name)
    watcher = Watcher(config, source_id, store, credentials, Metrics(), stage_credentials=stage_credentials)

    async def write(row: OutboxRow) -> None:
        sys.stdout.write(row.payload.decode("utf-8") + "\n")
        sys.stdout.flush()

    try:
        await run_session(watcher, write)
    finally:
        store.close()
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_watch(args))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    watch = sub.add_parser("watch", help="run one source without Argo; print events as JSON lines")
    watch.add_argument("config", help="source config file (YAML or JSON)")
    watch.add_argument("--state", default=env("STATE", "ftpsource.db"), help=STATE_HELP)
    watch.add_argument("--state-password-file", default=env("STATE_PASSWORD_FILE"), help=STATE_PASSWORD_HELP)
    watch.add_argument("--credentials-dir", default=env("CREDENTIALS_DIR"))
    watch.add_argument("--name", default="watch", help="event name (part of the default source id)")
    add_common(watch)
    watch.set_defaults(handler=run)
