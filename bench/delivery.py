"""10,000 small files appearing at once are all delivered to a gRPC client within stable_for + 3 s
(``delivery``, SQLite state) or stable_for + 6 s (``delivery-pg``, PostgreSQL state).

A real in-process server (``tests.support.harness.run_server``) and a real gRPC client stream
(``tests.support.harness.open_stream``, in a process of its own, as Argo's client is) with
``stable_for: 2s``. The files are written to a staging
directory first and then appear at once: 100 directories of 100 files each are renamed into the
watched root. The clock runs from the last rename to the moment the client holds the last
``ready`` event.
ratio = elapsed / (stable_for + slack); the goal is ratio <= 1. Every file must arrive exactly once.
Best of 2 runs, each with a fresh server, state and tree. The server logs as it does by default
(JSON lines at INFO, one per event), into /dev/null. ``delivery-pg`` runs a PostgreSQL cluster of its
own (``tests/support/postgres.py``, with fsync on, as a real database has it) and a fresh database
per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ftpsource.logging import setup_logging
from tests.support.harness import open_stream, run_server
from tests.support.postgres import PgDatabase, postgres_cluster

from .common import LoopLag, Result, fmt_s

__all__ = ["run", "run_pg"]

STABLE_FOR_S = 2.0
SLACK_S = 3.0
PG_SLACK_S = 6.0
DIRS = 100
RUNS = 2
LIMIT = 1.0


def _stage(staging: Path, count: int, dirs: int) -> None:
    for d in range(dirs):
        (staging / f"d{d:03d}").mkdir(parents=True)
    for i in range(count):
        with open(staging / f"d{i % dirs:03d}" / f"file-{i:05d}.csv", "wb") as f:
            f.write(b"id,value\n%d,%d\n" % (i, i * i))


def _move_in(staging: Path, root: Path) -> float:
    """Rename the staged directories into the watched root: the files appear within milliseconds."""
    for sub in sorted(staging.iterdir()):
        sub.rename(root / sub.name)
    return time.monotonic()


async def _run(
    scratch: Path, count: int, slack_s: float = SLACK_S, state: dict[str, Any] | None = None, lag: LoopLag | None = None
) -> tuple[float, float, float, int, int]:
    root, staging = scratch / "in", scratch / "staging"
    root.mkdir()
    _stage(staging, count, DIRS)
    config = {"url": f"file://{root}", "stable_for": f"{STABLE_FOR_S:g}s", "poll_interval": "30s"}
    budget = STABLE_FOR_S + slack_s
    async with run_server(scratch, **(state or {})) as srv, (lag or LoopLag()).measuring():
        # The client is a process of its own, as Argo's is: its decoding is not the server's work.
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.delivery",
            str(srv.port),
            json.dumps(config),
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert client.stdin is not None and client.stdout is not None
        try:
            if await client.stdout.readline() != b"open\n":
                raise RuntimeError("the benchmark's client could not open its stream")
            await asyncio.sleep(1.0)  # the stream is open and the first (empty) poll is done
            started = time.monotonic()
            last_created = await asyncio.to_thread(_move_in, staging, root)
            client.stdin.write(b"%r\n" % (last_created + 3 * budget))
            await client.stdin.drain()
            report = json.loads(await client.stdout.readline())
        finally:
            if client.returncode is None:
                client.kill()
            await client.wait()
    last_event = max(last_created, report["last"])
    return last_created - started, last_event - last_created, budget, report["distinct"], report["duplicates"]


async def _client(port: int, config: dict[str, Any], count: int) -> None:
    """The benchmark's gRPC client: counts ``ready`` events until all ``count`` came or the deadline
    (a monotonic time read from stdin) passed, then prints what it got as one JSON line."""
    stream = await open_stream(port, config, name="bench")
    print("open", flush=True)
    loop = asyncio.get_running_loop()
    deadline = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
    seen: set[str] = set()
    duplicates = 0
    last_event = 0.0
    give_up = time.monotonic() + 600
    try:
        while len(seen) < count:
            if deadline is not None and deadline.done():
                line, deadline = deadline.result(), None
                give_up = float(line) if line.strip() else time.monotonic()  # no deadline: the parent went
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(stream.events.get(), min(remaining, 0.5))
            except TimeoutError:
                continue
            if event["type"] != "ftpsource.file.ready":
                continue
            subject = event["subject"]
            if subject in seen:
                duplicates += 1
            seen.add(subject)
            last_event = time.monotonic()
    finally:
        await stream.close()
    print(json.dumps({"distinct": len(seen), "duplicates": duplicates, "last": last_event}), flush=True)


@contextlib.contextmanager
def _production_logging() -> Iterator[None]:
    """The server's default logging (JSON lines at INFO, one line per event), written to /dev/null."""
    logger = logging.getLogger("ftpsource")
    saved = logger.handlers[:], logger.level, logger.propagate
    with open(os.devnull, "w", encoding="utf-8") as sink:
        setup_logging("json", "INFO")
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)
        try:
            yield
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved


def run(scratch: Path, quick: bool) -> Result:
    return _measure(scratch, quick, "delivery", "SQLite", SLACK_S, lambda _: None)


def run_pg(scratch: Path, quick: bool) -> Result:
    with postgres_cluster(durable=True) as cluster:
        return _measure(scratch, quick, "delivery-pg", "PostgreSQL", PG_SLACK_S, cluster.create_database)


def _measure(
    scratch: Path, quick: bool, name: str, backend: str, slack_s: float, database: Callable[[Path], PgDatabase | None]
) -> Result:
    count = 2_000 if quick else 10_000
    runs, lag = [], LoopLag()
    with _production_logging():
        for i in range(RUNS):
            attempt = scratch / f"run{i}"
            attempt.mkdir()
            db = database(attempt)
            state = None if db is None else {"state": db.url, "state_password_file": db.password_file}
            runs.append(asyncio.run(_run(attempt, count, slack_s, state, lag)))
            shutil.rmtree(attempt, ignore_errors=True)
    # Best run: on a shared VM the slow ones measure the neighbours. All of them are listed below.
    create_s, elapsed, budget, delivered, duplicates = min(runs, key=lambda r: (-r[3], r[4], r[1]))
    error = None
    if delivered < count:
        error = f"only {delivered:,} of {count:,} files delivered within {3 * budget:.0f} s"
    elif duplicates:
        error = f"{duplicates} files delivered more than once"
    return Result(
        name=name,
        goal=f"10,000 new files all delivered to a gRPC client within stable_for + {slack_s:g} s ({backend} state)",
        baseline=f"stable_for + {slack_s:g} s = {fmt_s(budget)}",
        measured=f"last file in → last event received: {fmt_s(elapsed)}",
        ratio=elapsed / budget,
        limit=LIMIT,
        higher_is_better=False,
        size=f"{count:,} files in {DIRS} dirs",
        quick=quick,
        error=error,
        details=[
            f"ratio = elapsed / (stable_for + {slack_s:g} s) with stable_for = {STABLE_FOR_S:g} s; real in-process "
            f"server with {backend} state, real gRPC client in its own process (as Argo's) on loopback, inotify + "
            "polling and JSON logs at INFO (to /dev/null) as in production",
            f"the {DIRS} directory renames took {fmt_s(create_s)}; {delivered:,} distinct files delivered, "
            f"{duplicates} duplicates; time beyond stable_for: {fmt_s(max(0.0, elapsed - STABLE_FOR_S))}",
            f"best of {RUNS} runs; all runs: {', '.join(fmt_s(r[1]) for r in runs)}",
            lag.line,
        ],
    )


if __name__ == "__main__":
    asyncio.run(_client(int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])))
