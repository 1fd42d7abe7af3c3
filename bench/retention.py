"""A year of a busy source in minutes: 10,000 new files a day, each gone the next day.

The clock is injected, so a simulated day costs only its work: the watcher polls an in-memory source
(a real ``Adapter`` whose files live in a dict) through the real decision core, verification, SQLite
store, outbox and retention pruning; every event is marked delivered as a stream would. State file
size and RSS are read after the first day, once the retention window has filled, and at the end.
Only live files are held in memory (tombstones stay in the store), so ``records`` stays at one day's files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from ftpsource.adapters import Adapter
from ftpsource.config import parse_source_config
from ftpsource.core.model import Entry, Listing
from ftpsource.credentials import Credentials
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import RETENTION_S, Watcher

from .common import LoopLag, Result, rss_mb

__all__ = ["run"]

DAY = 86400.0
LIMIT_RATIO = 1.1  # end of the year vs the end of the first retention window


class MemorySource(Adapter):
    """Files in a dict: ``path -> (content, mtime)``."""

    files: dict[str, tuple[bytes, float]]

    async def list(self) -> Listing:
        return Listing([Entry(p, len(c), m) for p, (c, m) in self.files.items()])

    async def stat(self, path: str) -> Entry | None:
        found = self.files.get(path)
        return None if found is None else Entry(path, len(found[0]), found[1])

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        yield self.files[path][0]


def _state_mb(state: Path) -> float:
    return sum(p.stat().st_size for p in state.parent.glob(state.name + "*")) / 2**20


async def _simulate(tmp: Path, days: int, per_day: int, retention_s: float) -> dict[str, Any]:
    config = parse_source_config(f"url: file://{tmp}\nstable_for: 30s\n".encode())
    files: dict[str, tuple[bytes, float]] = {}

    def factory(cfg: Any, creds: Any, path_filter: Any) -> MemorySource:
        src = MemorySource(cfg, creds, path_filter)
        src.files = files
        return src

    now = [1_780_000_000.0]
    state = tmp / "state.db"
    store = AsyncStore.open(state)
    watcher = Watcher(
        config,
        "busy",
        store,
        Credentials(),
        Metrics(),
        clock=lambda: now[0],
        adapter_factory=factory,
        retention_s=retention_s,
    )
    marks: dict[str, Any] = {}
    t0 = time.perf_counter()
    first_start = await watcher._load()
    async with factory(config, Credentials(), config.policy().path_filter) as src:
        for day in range(days):
            files.clear()  # yesterday's files are processed and gone
            for i in range(per_day):
                files[f"in/{day:04d}/f{i:05d}.csv"] = (hashlib.sha256(b"%d/%d" % (day, i)).digest(), now[0])
            await watcher.poll_once(src, first_start=first_start)  # new: pending; yesterday's: tombstones
            first_start = False
            now[0] += 31
            await watcher.poll_once(src)  # stable: verified and reported
            rows = await store.run(store.sync.undelivered, "busy", 10**9)
            await store.run(store.sync.mark_delivered, [r.seq for r in rows], now[0])
            now[0] += DAY - 31
            await watcher.prune()
            if day == 0:
                marks["day1"] = (_state_mb(state), rss_mb()[0], len(watcher.records))
            if day == int(retention_s // DAY) + 1:
                marks["window"] = (_state_mb(state), rss_mb()[0], len(watcher.records))
    marks["end"] = (_state_mb(state), rss_mb()[0], len(watcher.records))
    marks["outbox"] = await store.run(store.sync.undelivered_count, "busy")
    marks["seconds"] = time.perf_counter() - t0
    store.close()
    return marks


def run(tmp: Path, quick: bool) -> Result:
    days, per_day = (60, 1_000) if quick else (365, 10_000)
    retention_s = 7 * DAY if quick else RETENTION_S
    lag = LoopLag()
    marks = asyncio.run(lag.over(_simulate(tmp, days, per_day, retention_s)))
    (d1_mb, d1_rss, d1_n), (w_mb, w_rss, w_n), (e_mb, e_rss, e_n) = marks["day1"], marks["window"], marks["end"]
    ratio = max(e_mb / w_mb, e_rss / w_rss)
    retention_days = retention_s / DAY
    return Result(
        name="retention",
        goal=f"{days} days of {per_day:,} files a day (daily turnover): state and RSS flat once the "
        f"{retention_days:.0f}-day retention has filled",
        baseline=f"after day {int(retention_days) + 2}: {w_mb:.0f} MB state, {w_rss:.0f} MB RSS, {w_n:,} records",
        measured=f"after day {days}: {e_mb:.0f} MB state, {e_rss:.0f} MB RSS, {e_n:,} records",
        ratio=ratio,
        limit=LIMIT_RATIO,
        higher_is_better=False,
        size=f"{days * per_day:,} files over {days} simulated days ({marks['seconds']:.0f} s real time)",
        quick=quick,
        details=[
            f"after day 1: {d1_mb:.1f} MB state, {d1_rss:.0f} MB RSS, {d1_n:,} records; end vs day 1: state "
            f"{e_mb / d1_mb:.1f}x, RSS {e_rss / d1_rss:.2f}x (the state holds the window's delivered events, "
            "versions and tombstones by design)",
            "ratio = the larger of end/window for state size (file + WAL) and RSS",
            "the state holds the retention window's delivered events and tombstones (identity of "
            "re-uploaded content), so it grows for the retention period, then stays flat; memory holds the "
            "live files' records only",
            f"undelivered at the end: {marks['outbox']}; pid {os.getpid()}",
            lag.line,
        ],
    )
