"""The local adapter against a real filesystem: files that change or vanish while being hashed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from ftpsource.adapters import adapter_for
from ftpsource.adapters.local import HASH_BLOCK
from ftpsource.config import parse_source_config
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
