"""Goal 2: one poll of an unchanged 100,000-file tree within 2.5x the time of ``find -printf``.

The tree is 1,000 directories x 100 one-byte files. "One poll" is the steady state: the local
adapter's listing plus ``detect.plan_poll`` against records that already describe every file as
READY (built by running the real decisions once: first poll, then ``after_verify`` with a digest).
The baseline is ``find DIR -type f -printf '%s %T@ %p\\n' >/dev/null``, which reads the same
metadata. Both run on a warm dentry/inode cache; runs alternate; best of 5.

Also reported, not judged: the whole ``Watcher.poll_once`` (listing + decisions + metrics + the
store's per-poll bookkeeping), the part of a real poll cycle the goal's definition leaves out.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import subprocess
import time
from pathlib import Path

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import SourceConfig
from ftpsource.core.detect import Policy, after_verify, plan_poll
from ftpsource.core.model import Digest, FileRecord, Listing, State
from ftpsource.credentials import Credentials
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import Watcher, freeze_long_lived

from .common import Result, best_of_alternating, fmt_s, spawn_overhead_s

__all__ = ["make_tree", "run", "steady_records"]

LIMIT = 2.5
ROUNDS = 5  # a round is ~1 s: a few more than elsewhere, as this goal has the least headroom


class _GcPauses:
    """A ``gc.callbacks`` hook adding up the collector's pauses."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


def make_tree(root: Path, dirs: int, per_dir: int) -> int:
    root.mkdir(exist_ok=True)
    for d in range(dirs):
        sub = root / f"d{d:04d}"
        sub.mkdir()
        for i in range(per_dir):
            with open(sub / f"f{i:03d}.csv", "wb") as f:
                f.write(b"x")
    return dirs * per_dir


def steady_records(listing: Listing, policy: Policy, now: float) -> dict[str, FileRecord]:
    """Records as a long-running watcher holds them: every listed file verified and READY."""
    first = plan_poll(listing.entries, {}, now, policy, first_start=True)
    records = {r.path: r for r in first.upserts}
    later = now + policy.stable_for_s + 1
    second = plan_poll(listing.entries, records, later, policy)
    for req in second.verify:
        fake = hashlib.sha256(req.record.path.encode()).hexdigest()
        digest = Digest("sha256", fake, "local", req.entry.size)
        outcome = after_verify(req, digest, req.entry, later, policy)
        records[outcome.record.path] = outcome.record
    not_ready = sum(1 for r in records.values() if r.state is not State.READY)
    if not_ready:
        raise AssertionError(f"{not_ready} records not READY after the set-up polls")
    return records


def run(scratch: Path, quick: bool) -> Result:
    dirs, per_dir = (200, 100) if quick else (1000, 100)
    root = scratch / "tree"
    n = make_tree(root, dirs, per_dir)

    cfg = SourceConfig(url=f"file://{root}")
    policy = cfg.policy()
    src = LocalAdapter(cfg, Credentials(), policy.path_filter)
    loop = asyncio.new_event_loop()
    try:
        return _measure(loop, scratch, root, n, cfg, policy, src, quick)
    finally:
        loop.close()


def _measure(
    loop: asyncio.AbstractEventLoop,
    scratch: Path,
    root: Path,
    n: int,
    cfg: SourceConfig,
    policy: Policy,
    src: LocalAdapter,
    quick: bool,
) -> Result:
    find_argv = ["find", str(root), "-type", "f", "-printf", r"%s %T@ %p\n"]
    subprocess.run(find_argv, check=True, stdout=subprocess.DEVNULL)  # warm the caches for everyone
    listing = loop.run_until_complete(src.list())
    if len(listing.entries) != n:
        raise AssertionError(f"listed {len(listing.entries)} files, expected {n}")
    now = time.time()
    records = steady_records(listing, policy, now)
    later = now + 2 * policy.stable_for_s + 2
    overhead = spawn_overhead_s()

    store = AsyncStore.open(scratch / "state.db")
    watcher = Watcher(cfg, "bench", store, Credentials(), Metrics())
    watcher.records = records
    freeze_long_lived()  # as the watcher does after loading records or a poll that added many
    split: dict[str, list[float]] = {"listing": [], "planning": [], "gc": []}
    gc_pause = _GcPauses()

    def find() -> float:
        t0 = time.perf_counter()
        subprocess.run(find_argv, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0 - overhead

    def poll() -> float:
        gc_pause.total = 0.0
        t0 = time.perf_counter()
        lst = loop.run_until_complete(src.list())
        t1 = time.perf_counter()
        plan = plan_poll(lst.entries, records, later, policy, unlisted_dirs=lst.unlisted_dirs)
        t2 = time.perf_counter()
        split["gc"].append(gc_pause.total)
        if plan.upserts or plan.removals or plan.events or plan.verify:
            raise AssertionError("steady-state poll was not a no-op")
        split["listing"].append(t1 - t0)
        split["planning"].append(t2 - t1)
        return t2 - t0

    def poll_once() -> float:
        t0 = time.perf_counter()
        loop.run_until_complete(watcher.poll_once(src))
        return time.perf_counter() - t0

    gc.callbacks.append(gc_pause)
    try:
        times = best_of_alternating([("find", find), ("poll", poll), ("poll_once", poll_once)], rounds=ROUNDS)
    finally:
        gc.callbacks.remove(gc_pause)
        store.close()
    base, ours = min(times["find"]), min(times["poll"])
    listing_s, planning_s = min(split["listing"]), min(split["planning"])
    whole = min(times["poll_once"])
    return Result(
        name="poll",
        goal="One poll of an unchanged 100,000-file tree within 2.5× `find -printf`",
        baseline=f"`find -type f -printf …`: {fmt_s(base)}",
        measured=f"listing + `plan_poll`: {fmt_s(ours)}",
        ratio=ours / base,
        limit=LIMIT,
        higher_is_better=False,
        size=f"{n:,} files in {n // 100:,} dirs",
        quick=quick,
        details=[
            f"ratio = (listing + plan_poll) / find; warm caches, alternating runs, best of {ROUNDS}",
            f"listing (`LocalAdapter.list`): {fmt_s(listing_s)} ({listing_s / base:.2f}× find); "
            f"planning (`plan_poll`): {fmt_s(planning_s)} ({planning_s / base:.2f}× find, "
            f"{planning_s / n * 1e6:.1f} µs/file)",
            f"whole `Watcher.poll_once` (adds metrics, pending/tracked counts and the store's poll "
            f"bookkeeping; not judged): {fmt_s(whole)} ({whole / base:.2f}× find)",
            f"cyclic GC pauses inside the timed poll: {fmt_s(min(split['gc']))} to {fmt_s(max(split['gc']))} "
            "(included above; the new Entry objects of every listing can set off a full collection "
            "over every record)",
            "all runs: " + "; ".join(f"{k} {', '.join(fmt_s(t) for t in v)}" for k, v in times.items()),
            f"`find` times exclude process spawn ({overhead * 1000:.1f} ms)",
        ],
    )
