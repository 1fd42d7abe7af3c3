"""The local adapter's inotify watches, on a real filesystem: one per directory the listing walked."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from inotify_simple import INotify

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import Watcher
from tests.support.harness import eventually

LONG = 60.0  # a poll interval no test waits for: what arrives earlier was woken by inotify


def local(root: Path, **kw: object) -> LocalAdapter:
    cfg = parse_source_config(yaml.safe_dump({"url": f"file://{root}", **kw}))
    return LocalAdapter(cfg, Credentials(), PathFilter(cfg.include, cfg.exclude, cfg.recursive))


def inotify_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd, gone already
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
    return n


@contextlib.asynccontextmanager
async def running(watcher: Watcher, store: AsyncStore) -> AsyncIterator[None]:
    """The watcher running as a task for the block; then stopped, and its store closed."""
    task = asyncio.create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()


async def woken_within(src: LocalAdapter, seconds: float) -> bool:
    """Whether a change wakes the adapter within ``seconds``; then what else is on its way is let
    through and forgotten, so the next call starts afresh."""
    t0 = time.monotonic()
    await src.wait_for_change(seconds)
    woken = time.monotonic() - t0 < seconds
    await asyncio.sleep(0.1)
    await src.wait_for_change(0)
    return woken


async def test_a_file_in_a_directory_made_after_the_start_is_polled_without_waiting_for_the_interval(
    tmp_path: Path, root: Path
) -> None:
    config = parse_source_config(f"url: file://{root}\nstable_for: 200ms\npoll_interval: 60s\n".encode())
    store = AsyncStore.open(tmp_path / "state.db")
    adapters: list[LocalAdapter] = []

    def factory(*args: object) -> LocalAdapter:
        adapters.append(LocalAdapter(*args))
        return adapters[-1]

    watcher = Watcher(config, "s", store, Credentials(), Metrics(), adapter_factory=factory)
    async with running(watcher, store):
        await asyncio.wait_for(watcher.polled.wait(), 20)
        (root / "late").mkdir()
        # The root's watch wakes a poll, whose listing walks and watches the new directory ...
        await eventually(lambda: str(root / "late") in adapters[0]._watches.watched, 10, "the new directory watched")
        (root / "late" / "a.csv").write_text("x\n")
        # ... so a file written there now is found long before the 60 s poll interval.
        await eventually(lambda: "late/a.csv" in watcher.records, 10, "the new file polled")


async def test_watches_follow_the_listing(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    async with local(root) as src:  # hidden directories are excluded by default
        assert set(src._watches.watched) == set()  # only the root, not yet listed
        await src.list()
        assert set(src._watches.watched) == {str(root), str(root / "a"), str(root / "a" / "b")}
        # A removed directory's watch is dropped, and one made again under the same name is watched anew.
        (root / "a" / "b").rmdir()
        await src.list()
        assert set(src._watches.watched) == {str(root), str(root / "a")}
        (root / "a" / "b").mkdir()
        await src.list()
        await woken_within(src, 0.1)  # forget the wake-ups of the changes made above
        (root / "a" / "b" / "f").write_text("x")
        assert await woken_within(src, 10)
        # Nothing outside the root is watched: a file there wakes nothing.
        (outside / "g").write_text("x")
        assert not await woken_within(src, 0.3)


async def test_a_flat_source_watches_its_root_only(root: Path) -> None:
    (root / "sub").mkdir()
    async with local(root, recursive=False) as src:
        await src.list()
        assert list(src._watches.watched) == [str(root)]


async def test_the_root_is_watched_before_the_first_listing(root: Path) -> None:
    async with local(root) as src:
        (root / "early.csv").write_text("x")
        assert await woken_within(src, 10)


async def test_watches_are_closed_with_the_adapter(root: Path) -> None:
    for i in range(20):
        (root / f"d{i}").mkdir()
    before, fds_before = inotify_fds(), len(os.listdir("/proc/self/fd"))
    async with local(root) as src:
        await src.list()
        assert inotify_fds() == before + 1
        assert len(src._watches.watched) == 21
    assert inotify_fds() == before
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_at_the_watch_limit_one_warning_and_polling_goes_on(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_space(self: INotify, path: object, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(INotify, "add_watch", no_space)
    for i in range(3):
        (root / f"d{i}").mkdir()
    config = parse_source_config(f"url: file://{root}\nstable_for: 0s\npoll_interval: 200ms\n".encode())
    store = AsyncStore.open(tmp_path / "state.db")
    watcher = Watcher(config, "s", store, Credentials(), Metrics(), adapter_factory=LocalAdapter)
    async with running(watcher, store):
        with caplog.at_level(logging.WARNING, logger="ftpsource.adapters.dirwatch"):
            await asyncio.wait_for(watcher.polled.wait(), 20)
            (root / "d1" / "a.csv").write_text("x\n")
            await eventually(lambda: "d1/a.csv" in watcher.records, 10, "the file polled")
    limits = [r.getMessage() for r in caplog.records if "fs.inotify.max_user_watches" in r.getMessage()]
    assert len(limits) == 1, limits


async def test_without_an_inotify_instance_the_listing_still_works(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_fd(self: INotify, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(INotify, "__init__", no_fd)
    (root / "a.csv").write_text("x")
    with caplog.at_level(logging.WARNING, logger="ftpsource.adapters.dirwatch"):
        async with local(root) as src:
            assert [e.path for e in (await src.list()).entries] == ["a.csv"]
            assert list(src._watches.watched) == []
    assert any("fs.inotify.max_user_instances" in r.getMessage() for r in caplog.records)


async def test_an_adapter_cancelled_while_it_starts_leaves_no_inotify_instance_open(root: Path) -> None:
    before = inotify_fds()
    for _ in range(5):
        task = asyncio.create_task(local(root).__aenter__())
        await asyncio.sleep(0)  # the change watches are being made in a worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deadline = asyncio.get_running_loop().time() + 5
    while inotify_fds() > before and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # the last start may still be finishing in its thread
    assert inotify_fds() == before
