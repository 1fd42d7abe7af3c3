"""Command line: ``ftpsource serve | watch | check | state | demo``.

Every failure exits non-zero with one line naming the problem; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import ServerSettings, parse_source_config
from .credentials import load_credentials
from .errors import ConfigError, FtpsourceError
from .logging import setup_logging
from .metrics import Metrics
from .store import AsyncStore, OutboxRow
from .watcher import Watcher, run_session

__all__ = ["main"]

log = logging.getLogger(__name__)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"FTPSOURCE_{name}", default)


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["json", "text"], default=_env("LOG_FORMAT"))
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftpsource", description="File-arrival event source for Argo Events.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server Argo's generic EventSource connects to")
    serve.add_argument("--listen", default=_env("LISTEN", "0.0.0.0:8080"))
    serve.add_argument("--metrics-listen", default=_env("METRICS_LISTEN", "0.0.0.0:9090"),
                       help="host:port for /metrics, /healthz, /readyz; empty to disable")
    serve.add_argument("--state", default=_env("STATE", "ftpsource.db"), help="SQLite state file (local disk)")
    serve.add_argument("--auth-token-file", default=_env("AUTH_TOKEN_FILE"))
    serve.add_argument("--credentials-dir", default=_env("CREDENTIALS_DIR"))
    serve.add_argument("--tls-cert", default=_env("TLS_CERT"))
    serve.add_argument("--tls-key", default=_env("TLS_KEY"))
    serve.add_argument("--grace", type=float, default=float(_env("GRACE", "10") or 10),
                       help="seconds to wait for streams to close on SIGTERM")
    serve.add_argument("--keepalive", type=float, default=float(_env("KEEPALIVE", "30") or 30),
                       help="seconds between pings to idle clients; unanswered ones are dropped")
    _add_common(serve)

    watch = sub.add_parser("watch", help="run one source without Argo; print events as JSON lines")
    watch.add_argument("config", help="source config file (YAML or JSON)")
    watch.add_argument("--state", default=_env("STATE", "ftpsource.db"))
    watch.add_argument("--credentials-dir", default=_env("CREDENTIALS_DIR"))
    watch.add_argument("--name", default="watch", help="event name (part of the default source id)")
    _add_common(watch)

    demo = sub.add_parser("demo", help="embedded FTP server, gRPC server and scripted uploads (under a minute)")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the servers up afterwards and print how to use them")
    _add_common(demo)

    from . import operator  # check and state live beside their helpers

    operator.add_commands(sub, _add_common)
    return parser


def _read_config_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None


async def _watch(args: argparse.Namespace) -> int:
    config = parse_source_config(_read_config_file(args.config))
    credentials = load_credentials(_path_or_none(args.credentials_dir), config.credentials)
    store = AsyncStore.open(Path(args.state))
    watcher = Watcher(config, config.source_id(args.name), store, credentials, Metrics())

    async def write(row: OutboxRow) -> None:
        sys.stdout.write(row.payload.decode("utf-8") + "\n")
        sys.stdout.flush()

    try:
        await run_session(watcher, write)
    finally:
        store.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keep_running=args.keep_running, show_logs=args.debug)


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    settings = ServerSettings(
        listen=args.listen,
        metrics_listen=args.metrics_listen or None,
        state=Path(args.state),
        auth_token_file=_path_or_none(args.auth_token_file),
        credentials_dir=_path_or_none(args.credentials_dir),
        tls_cert=_path_or_none(args.tls_cert),
        tls_key=_path_or_none(args.tls_key),
        log_format=args.log_format or "text",
        log_level=args.log_level,
        grace_s=args.grace,
        keepalive_s=args.keepalive,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError(["--tls-cert and --tls-key go together"])
    asyncio.run(serve(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "serve": _serve,
        "watch": lambda a: asyncio.run(_watch(a)),
        "demo": _demo,
    }
    from . import operator

    handlers.update(operator.HANDLERS)
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        return 130
    except FtpsourceError as exc:
        if args.debug:
            raise
        print(f"ftpsource {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if args.debug:
            raise
        print(f"ftpsource {args.command}: unexpected error: {exc!r} (rerun with --debug)", file=sys.stderr)
        return 1


def json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


if __name__ == "__main__":
    raise SystemExit(main())
