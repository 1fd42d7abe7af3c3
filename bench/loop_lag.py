"""Event-loop lag while a source with a very large local tree is polled.

A ``LoopMonitor`` (the one behind ``ftpsource_event_loop_lag_seconds``) samples the loop every 10 ms
while the watcher runs the first poll of a 1,000,000-file tree (``existing: skip``: every file is
recorded) and then a steady poll. The goal: nothing holds the loop for more than 100 ms.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import parse_source_config
from ftpsource.credentials import Credentials
from ftpsource.loopmon import LoopMonitor
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import Watcher

from .common import Result, fmt_s
from .poll import make_tree

__all__ = ["run"]

LIMIT_S = 0.100


async def _polls(root: Path, state: Path) -> dict[str, tuple[float, float]]:
    config = parse_source_config(f"url: file://{root}\nexisting: skip\n".encode())
    store = AsyncStore.open(state)
    watcher = Watcher(config, "big", store, Credentials(), Metrics(), adapter_factory=LocalAdapter)
    out: dict[str, tuple[float, float]] = {}
    async with LocalAdapter(config, Credentials(), config.policy().path_filter) as src:
        first_start = await watcher._load()
        for phase in ("first start", "steady"):
            monitor = LoopMonitor(interval_s=0.01, window_s=3600.0)
            monitor.start()
            t0 = time.perf_counter()
            await watcher.poll_once(src, first_start=first_start)
            took = time.perf_counter() - t0
            await asyncio.sleep(0.05)
            out[phase] = (monitor.worst_lag_s(), took)
            await monitor.stop()
            first_start = False
    store.close()
    return out


def run(scratch: Path, quick: bool) -> Result:
    dirs, per_dir = (100, 1000) if quick else (1000, 1000)
    root = scratch / "tree"
    n = make_tree(root, dirs, per_dir)
    lags = asyncio.run(_polls(root, scratch / "state.db"))
    worst = max(lag for lag, _ in lags.values())
    return Result(
        name="loop-lag",
        goal=f"no event-loop stall over {LIMIT_S * 1000:.0f} ms while a {n:,}-file tree is polled",
        baseline=f"limit: {fmt_s(LIMIT_S)}",
        measured=f"worst lag {fmt_s(worst)}",
        ratio=worst / LIMIT_S,
        limit=1.0,
        higher_is_better=False,
        size=f"{n:,} files",
        quick=quick,
        details=[f"{phase}: worst lag {fmt_s(lag)}, poll {fmt_s(took)}" for phase, (lag, took) in lags.items()]
        + ["lag sampled every 10 ms by the server's LoopMonitor; ratio = worst lag / 100 ms"],
    )
