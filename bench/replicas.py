"""``replicas``: N sources with a burst each, served by two ``ftpsource serve`` replicas on one PostgreSQL
database against the same N served by one replica.

Each source is a local directory into which 500 small files appear at once (directories renamed in,
as in ``delivery``); every source has its own gRPC stream, opened by one client process as Argo's
EventSource pods would. With two replicas the streams are spread over both, as a Service spreads
connections. The clock runs from the last rename to the moment the client holds the last ``ready``
event of every source. Both layouts run against a fresh database of one PostgreSQL cluster (fsync on),
alternating, best of 2. ratio = two-replica time / one-replica time, both counted beyond stable_for
(the wait every file needs whatever serves it); the goal is <= 0.8.

The replicas are real processes (``tests.support.harness.ServerProcess``), so two of them can use two
cores; the client's decoding runs in the benchmark's own process.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import urllib.request
from pathlib import Path

from tests.support.harness import ServerProcess, Stream, open_stream
from tests.support.postgres import PostgresCluster, postgres_cluster

from .common import Result, fmt_s
from .delivery import _move_in, _stage

__all__ = ["run"]

SOURCES = 16
FILES_PER_SOURCE = 500
STABLE_FOR_S = 2.0
LIMIT = 0.8
RUNS = 2
LAG_METRIC = "ftpsource_event_loop_lag_max_seconds"


async def _collect(streams: list[Stream], count: int, give_up: float) -> float:
    """Until every stream has ``count`` distinct ready files; returns when the last one arrived."""
    last = time.perf_counter()

    async def one(stream: Stream) -> None:
        nonlocal last
        seen: set[str] = set()
        while len(seen) < count:
            event = await asyncio.wait_for(stream.events.get(), max(0.1, give_up - time.perf_counter()))
            if event["type"] == "ftpsource.file.ready":
                seen.add(event["subject"])
        last = max(last, time.perf_counter())

    await asyncio.gather(*(one(s) for s in streams))
    return last


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worst_lag_s(metrics_port: int) -> float:
    """A replica's ``ftpsource_event_loop_lag_max_seconds`` (its worst lag over the last minute)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return max(float(line.split()[-1]) for line in text.splitlines() if line.startswith(LAG_METRIC + " "))


def _trial(
    cluster: PostgresCluster, scratch: Path, replicas: int, sources: int, files: int, lags: list[float]
) -> float:
    scratch.mkdir()
    db = cluster.create_database(scratch)
    metrics_ports = [_free_port() for _ in range(replicas)]
    servers = [
        ServerProcess(
            db.url,
            scratch / f"replica{i}.log",
            extra=["--state-password-file", str(db.password_file), "--metrics-listen", f"127.0.0.1:{port}"],
        )
        for i, port in enumerate(metrics_ports)
    ]
    roots, stagings = [], []
    for s in range(sources):
        root, staging = scratch / f"src{s:02d}", scratch / f"staging{s:02d}"
        root.mkdir()
        _stage(staging, files, 10)
        roots.append(root)
        stagings.append(staging)
    try:
        ports = [server.start() for server in servers]

        async def measure() -> float:
            streams = [
                await open_stream(
                    ports[s % replicas],
                    {"url": f"file://{root}", "stable_for": f"{STABLE_FOR_S:g}s", "poll_interval": "30s"},
                    name=f"bench{s:02d}",
                    own_connection=True,
                )
                for s, root in enumerate(roots)
            ]
            try:
                await asyncio.sleep(1.5)  # every stream open, every first (empty) poll done
                last_in = 0.0
                for staging, root in zip(stagings, roots, strict=True):
                    last_in = _move_in(staging, root)
                last_event = await _collect(streams, files, last_in + 120)
                lags.extend([_worst_lag_s(port) for port in metrics_ports])
                return last_event - last_in
            finally:
                for stream in streams:
                    await stream.close()

        return asyncio.run(measure())
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.terminate()
        cluster.drop_database(db)
        shutil.rmtree(scratch, ignore_errors=True)


def run(scratch: Path, quick: bool) -> Result:
    sources, files = (8, 250) if quick else (SOURCES, FILES_PER_SOURCE)
    times: dict[int, list[float]] = {1: [], 2: []}
    lags: list[float] = []
    with postgres_cluster(durable=True) as cluster:
        for i in range(RUNS):
            for replicas in (1, 2):
                times[replicas].append(_trial(cluster, scratch / f"r{replicas}-{i}", replicas, sources, files, lags))
    one, two = min(times[1]) - STABLE_FOR_S, min(times[2]) - STABLE_FOR_S
    total = sources * files
    return Result(
        name="replicas",
        goal=f"{sources} sources' bursts ({total:,} files) on two replicas in ≤ {LIMIT}× the time of one replica "
        "(beyond stable_for)",
        baseline=f"one replica: stable_for + {fmt_s(one)}",
        measured=f"two replicas: stable_for + {fmt_s(two)}",
        ratio=two / one,
        limit=LIMIT,
        higher_is_better=False,
        size=f"{sources} sources × {files} files",
        quick=quick,
        details=[
            f"stable_for = {STABLE_FOR_S:g} s, so {STABLE_FOR_S:g} s of each time is waiting; replicas are "
            "`ftpsource serve` processes on one PostgreSQL database (fsync on), streams spread evenly",
            f"best of {RUNS}, alternating; all runs: one {', '.join(fmt_s(t) for t in times[1])}; "
            f"two {', '.join(fmt_s(t) for t in times[2])}",
            f"worst event-loop lag: {fmt_s(max(lags))} (the replicas' `{LAG_METRIC}`, read after each burst)",
        ],
    )
