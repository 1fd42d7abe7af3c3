"""The local adapter against a real filesystem: files that change or vanish while being hashed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from ftpsource.adapters import Verification, adapter_for
from ftpsource.adapters.local import HASH_BLOCK
from ftpsource.config import parse_source_config
from ftpsource.core.detect import VerifyRequest
from ftpsource.core.model import Entry, FileRecord, State
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials
from ftpsource.errors import FileVanished, PermanentSourceError
from tests.support.adapters import Recorder


def local(root: Path, **kw: object):
    cfg = parse_source_config(yaml.safe_dump({"url": f"file://{root}", **kw}))
    return adapter_for(cfg, Credentials(), PathFilter(cfg.include, cfg.exclude, cfg.recursive))


@pytest.fixture
def big(tmp_path: Path) -> Path:
    p = tmp_path / "root" / "big.bin"
    p.parent.mkdir()
    p.write_bytes(os.urandom(HASH_BLOCK * 2 + 123))
    return p


async def test_digest_matches_hashlib(big: Path) -> None:
    async with local(big.parent) as src:
        d = await src.digest("big.bin", "sha256", None, big.stat().st_size)
    assert d.value == hashlib.sha256(big.read_bytes()).hexdigest() and d.method == "local"


async def test_truncated_while_hashing_is_vanished(big: Path) -> None:
    async with local(big.parent) as src:
        with pytest.raises(FileVanished, match="changed while being read"):
            await src.digest("big.bin", "sha256", Recorder(lambda: os.truncate(big, 10)), big.stat().st_size)


async def test_deleted_while_hashing_is_vanished(big: Path) -> None:
    size = big.stat().st_size
    async with local(big.parent) as src:
        with pytest.raises(FileVanished):
            await src.digest("big.bin", "sha256", Recorder(big.unlink), size)
    async with local(big.parent) as src:
        with pytest.raises(FileVanished):
            await src.digest("big.bin", "sha256", None, size)  # gone before it is opened


async def test_appended_while_hashing_is_vanished(big: Path) -> None:
    def append() -> None:
        with open(big, "ab") as f:
            f.write(b"more")

    async with local(big.parent) as src:
        with pytest.raises(FileVanished):
            await src.digest("big.bin", "sha256", Recorder(append), big.stat().st_size)


async def test_missing_and_unreadable_roots(tmp_path: Path) -> None:
    async with local(tmp_path / "nope") as src:
        with pytest.raises(PermanentSourceError, match="does not exist"):
            await src.list()
    f = tmp_path / "file"
    f.write_bytes(b"")
    async with local(f) as src:
        with pytest.raises(PermanentSourceError, match="not a directory"):
            await src.list()


async def test_listing_prunes_excluded_dirs_and_respects_recursive(tmp_path: Path) -> None:
    for rel in ("a.csv", "d/b.csv", ".hidden/c.csv", "d/e/f.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    async with local(tmp_path) as src:
        assert sorted(e.path for e in (await src.list()).entries) == ["a.csv", "d/b.csv", "d/e/f.csv"]
    async with local(tmp_path, recursive=False) as src:
        assert [e.path for e in (await src.list()).entries] == ["a.csv"]


async def test_small_files_verified_together_each_keep_their_own_result(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.csv"
    outside.write_bytes(b"not ours\n")
    (root / "a.csv").write_bytes(b"x,y\n1,2\n")
    (root / "b.gz").write_bytes(b"not gzip at all")
    (root / "gone.csv").write_bytes(b"1\n")
    (root / "link.csv").symlink_to(outside)
    now = 1_700_000_000.0

    def request(name: str, size: int) -> VerifyRequest:
        rec = FileRecord(name, size, now, State.PENDING, now, now)
        return VerifyRequest(rec, Entry(name, size, now), None, f"{size}:{now!r}")

    requests = [request(n, (root / n).stat().st_size) for n in ("a.csv", "b.gz", "gone.csv", "link.csv")]
    (root / "gone.csv").unlink()
    async with local(root) as src:
        results = await src.verify_small(requests, "sha256", True)
    good, bad_gzip, gone, link = results
    assert isinstance(good, Verification) and good.digest is not None
    assert good.digest.value == hashlib.sha256(b"x,y\n1,2\n").hexdigest() and good.after is not None
    assert isinstance(bad_gzip, Verification) and bad_gzip.digest is not None and bad_gzip.digest.problem
    assert isinstance(gone, Verification) and gone.digest is None and gone.after is None and gone.vanished
    # A link out of the root is not read, whatever batch it is in.
    assert isinstance(link, Verification) and link.digest is None and "outside the source root" in str(link.vanished)


class _Sink:
    """An upload stand-in: keeps what it gets, in parts of ``read_size``; ``hold`` makes it wait."""

    def __init__(self, read_size: int, on_write: Callable[[], object] | None = None) -> None:
        self.read_size = read_size
        self.chunks: list[bytes] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self._on_write = on_write

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        if self._on_write is not None:
            self._on_write()
        await self.hold.wait()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_upload_read_hands_whole_parts_and_the_digest_of_what_it_handed(big: Path) -> None:
    sink = _Sink(HASH_BLOCK)
    async with local(big.parent) as src:
        d = await src.digest("big.bin", "sha256", None, big.stat().st_size, sink)
    data = big.read_bytes()
    assert b"".join(sink.chunks) == data and d.value == hashlib.sha256(data).hexdigest()
    assert [len(c) for c in sink.chunks] == [HASH_BLOCK, HASH_BLOCK, 123]


@pytest.mark.parametrize("change", ["truncate", "append"])
async def test_the_upload_read_of_a_file_changed_meanwhile_is_vanished(big: Path, change: str) -> None:
    def act() -> None:
        if change == "truncate":
            os.truncate(big, 10)
        else:
            with open(big, "ab") as f:
                f.write(b"x" * HASH_BLOCK * 4)

    sink = _Sink(HASH_BLOCK, act)
    async with local(big.parent) as src:
        with pytest.raises(FileVanished):
            await src.digest("big.bin", "sha256", None, big.stat().st_size, sink)
    # A file that grows is not read past one byte more than its listed size. (One deleted meanwhile
    # reads to its end: the watcher's stat after the read finds it gone.)
    assert sum(map(len, sink.chunks)) <= HASH_BLOCK * 2 + 124


@pytest.mark.parametrize("stalled", [True, False], ids=["while the upload waits", "while a read is on its way"])
async def test_a_cancelled_upload_read_leaves_no_file_open(big: Path, stalled: bool) -> None:
    async with local(big.parent) as src:
        await src.digest("big.bin", "sha256", None, big.stat().st_size, _Sink(HASH_BLOCK))
        before = _open_fds()  # the adapter's own (its change watches) are open by now
        for _ in range(5):
            sink = _Sink(HASH_BLOCK if stalled else 64 * 1024)
            if stalled:
                sink.hold.clear()
            task = asyncio.create_task(src.digest("big.bin", "sha256", None, big.stat().st_size, sink))
            while not sink.chunks:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        deadline = asyncio.get_running_loop().time() + 5
        while _open_fds() > before and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # the last read job may still be finishing in its thread
        assert _open_fds() == before


@pytest.mark.parametrize("sink", [None, _Sink(HASH_BLOCK)], ids=["hashing read", "upload read"])
async def test_a_fifo_swapped_in_for_a_file_is_not_read_and_hangs_nothing(tmp_path: Path, sink: _Sink | None) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "a.csv")  # no writer: opening it for reading without O_NONBLOCK would hang
    async with local(root) as src:
        with pytest.raises(FileVanished, match="no longer a regular file"):
            await asyncio.wait_for(src.digest("a.csv", "sha256", None, 10, sink), 10)
