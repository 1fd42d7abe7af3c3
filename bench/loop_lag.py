"""Event-loop lag while a source with a very large local tree is polled.

A ``LoopMonitor`` (the one behind ``ftpsource_event_loop_lag_seconds``) samples the loop every 10 ms
while the watcher runs the first poll of a 1,000,000-file tree (``existing: skip``: every file is
recorded) and then a steady poll. The goal: nothing holds the loop for more than 100 ms. The change
watches over the tree (one inotify watch per directory) are set up by the first start's listing, in
its worker thread, so they are inside a judged figure. Reported, not judged: the adapter's start (its
inotify instance and the root's watch) with the state load, and a restart's record load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import parse_source_config
from ftpsource.credentials import Credentials
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import Watcher

from .common import LoopLag, Result, fmt_s
from .poll import make_tree

__all__ = ["run"]

LIMIT_S = 0.100
START = "adapter start (inotify instance, root watch) and state load"
RESTART = "restart: a million records loaded"
JUDGED = ("first start", "steady")


async def _polls(root: Path, state: Path) -> tuple[dict[str, tuple[float, float]], int]:
    config = parse_source_config(f"url: file://{root}\nexisting: skip\n".encode())
    store = AsyncStore.open(state)

    def watcher() -> Watcher:
        return Watcher(config, "big", store, Credentials(), Metrics(), adapter_factory=LocalAdapter)

    async def phase(name: str, work: Awaitable[Any]) -> None:
        lag = LoopLag()
        t0 = time.perf_counter()
        async with lag.measuring():
            await work
            took = time.perf_counter() - t0
            await asyncio.sleep(0.05)
        out[name] = (lag.worst_s, took)

    async def start(src: LocalAdapter, first: Watcher) -> None:
        await src.__aenter__()
        await first._load()

    out: dict[str, tuple[float, float]] = {}
    first = watcher()
    src = LocalAdapter(config, Credentials(), config.policy().path_filter)
    try:
        await phase(START, start(src, first))
        # The first listing watches every directory it walks; the steady one finds those watches again.
        await phase("first start", first.poll_once(src, first_start=True))
        await phase("steady", first.poll_once(src))
        watched = len(list(src._watches.watched))
    finally:
        await src.close()
    await phase(RESTART, watcher()._load())
    store.close()
    return out, watched


def run(scratch: Path, quick: bool) -> Result:
    dirs, per_dir = (100, 1000) if quick else (1000, 1000)
    root = scratch / "tree"
    n = make_tree(root, dirs, per_dir)
    lags, watched = asyncio.run(_polls(root, scratch / "state.db"))
    worst = max(lag for phase, (lag, _) in lags.items() if phase in JUDGED)
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
        details=[
            f"{phase}: worst lag {fmt_s(lag)}, {'poll' if phase in JUDGED else 'took'} {fmt_s(took)}"
            + ("" if phase in JUDGED else " (not judged)")
            for phase, (lag, took) in lags.items()
        ]
        + [
            f"change watches: {watched:,} directories, added by the first start's listing in its worker thread",
            f"worst event-loop lag: {fmt_s(max(lag for lag, _ in lags.values()))} (all phases)",
            "lag sampled every 10 ms by the server's LoopMonitor; ratio = worst lag (first start, steady) / 100 ms",
        ],
    )
