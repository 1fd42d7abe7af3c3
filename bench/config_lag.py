"""Goal: hostile stream configs (at the 64 KiB limit, alias bombs, deep nesting, thousands of keys) do
not block the server's event loop much more than ordinary bad configs do.

A real in-process server (``tests.support.harness.run_server``) and real gRPC clients. A probe task on
the server's loop sleeps 1 ms at a time and records how much later than asked it woke: the loop's lag,
i.e. the longest time something held the loop. Baseline: the worst lag while as many streams as the
measured round send a tiny invalid config (one bad duration), ``CONCURRENT`` at a time. Measured: the
worst lag while the hostile configs are sent, each ending in INVALID_ARGUMENT. ratio = worst lag
(hostile) / worst lag (baseline); the goal is ratio <= 5, since a few milliseconds of scheduling noise
on a shared machine are most of either figure. Parsing runs on one admission thread and the input
limits bound what it allocates (allocation is what sets off the garbage collector, which holds the
interpreter, loop included). Best of 5 alternating rounds each.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from tests.support.harness import open_stream, run_server
from tests.support.hostile import alias_bomb

from .common import Result, fmt_s

__all__ = ["run"]

LIMIT = 5.0
CONCURRENT = 8
REPEATS = 5
TINY = "url: file:///data\nstable_for: abc\n"


def hostile_configs() -> dict[str, str]:
    """Inputs built to be as costly as the limits allow, each just under 64 KiB where size matters."""
    keys = "url: file:///data\n" + "".join(f"k{i:04d}: 1\n" for i in range(2040))
    # About the most a config may hold: 127 keys, each a list of 15 short items (2,000 values).
    full = "url: file:///data\n" + "".join(f"k{i:03d}: [" + ",".join(["ab"] * 15) + "]\n" for i in range(127))
    long_value = "url: file:///data\nstable_for: '" + "9" * 65_000 + "'\n"
    wide_flow = "url: file:///data\nexclude: [" + ",".join(f"p{i}" for i in range(9000)) + "]\n"
    comments = "url: file:///data\nstable_for: abc\n" + "# " + "x" * 65_000 + "\n"
    return {
        "alias bomb (9 levels)": alias_bomb(9),
        "2,040 unknown keys": keys,
        "2,000 values within the limits": full,
        "6,000 keys": "url: file:///data\n" + "".join(f"k{i:05d}: 1\n" for i in range(6000)),
        "a 65,000-character duration": long_value,
        "a 9,000-item list": wide_flow,
        "64 KiB of comment": comments,
        "nesting 13 deep": "url: file:///data\nx: " + "[" * 13 + "]" * 13 + "\n",
    }


async def _probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t0 - 0.001)


async def _round(port: int, configs: list[str]) -> tuple[float, int]:
    """Worst loop lag while ``configs`` are sent ``CONCURRENT`` at a time; and how many were refused."""
    stop, lags = asyncio.Event(), list[float]()
    probe = asyncio.create_task(_probe(stop, lags))
    refused = 0
    for i in range(0, len(configs), CONCURRENT):
        streams = [await open_stream(port, c) for c in configs[i : i + CONCURRENT]]
        for s in streams:
            if await s.wait_end(30) == grpc.StatusCode.INVALID_ARGUMENT:
                refused += 1
            await s.close()
    await asyncio.sleep(0.05)  # the last refusals' log lines and clean-up are part of the cost
    stop.set()
    await probe
    return max(lags), refused


async def _run(scratch: Path) -> tuple[float, float, int, int, list[str]]:
    hostile = list(hostile_configs().values())
    batch = hostile * CONCURRENT
    tiny = [TINY] * len(batch)
    base_runs, hostile_runs = [], []
    refused = 0
    async with run_server(scratch, allow_roots=[]) as srv:
        await _round(srv.port, tiny[:CONCURRENT])  # warm up: channels, threads, imports
        for _ in range(REPEATS):
            lag, _ = await _round(srv.port, tiny)
            base_runs.append(lag)
            lag, refused = await _round(srv.port, batch)
            hostile_runs.append(lag)
    details = [
        f"baseline runs: {', '.join(fmt_s(x) for x in base_runs)}; "
        f"hostile runs: {', '.join(fmt_s(x) for x in hostile_runs)}"
    ]
    return min(base_runs), min(hostile_runs), refused, len(batch), details


def run(scratch: Path, quick: bool) -> Result:
    base, hostile, refused, sent, details = asyncio.run(_run(scratch))
    error = None if refused == sent else f"only {refused} of {sent} hostile configs ended in INVALID_ARGUMENT"
    return Result(
        name="config-lag",
        goal="hostile configs block the event loop no longer than ordinary bad configs (<= 5x the worst lag)",
        baseline=f"worst loop lag with a tiny bad config: {fmt_s(base)}",
        measured=f"worst loop lag with hostile configs: {fmt_s(hostile)}",
        ratio=hostile / max(base, 1e-4),
        limit=LIMIT,
        higher_is_better=False,
        size=f"{sent} streams per round, {CONCURRENT} at a time: {', '.join(hostile_configs())}",
        quick=quick,
        error=error,
        details=[
            "ratio = worst lag (hostile) / worst lag (tiny bad config); a 1 ms sleeper on the server's loop "
            "measures the lag; real in-process server and gRPC clients; best of 5 alternating rounds",
            *details,
        ],
    )
