"""More concurrent downloads than hashing threads: none of them stalls waiting for a thread."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import ClassVar

from ftpsource.adapters import Adapter
from ftpsource.adapters.base import _HASH_POOL
from ftpsource.config import parse_source_config
from ftpsource.core.model import Entry, Listing
from ftpsource.credentials import Credentials

CHUNKS = 40


class Trickle(Adapter):
    """A remote file that arrives a chunk at a time, as a download does. Records how far every
    download had got when the first one was read to the end."""

    progress: ClassVar[dict[str, int]] = {}
    when_first_done: ClassVar[dict[str, int] | None] = None

    async def list(self) -> Listing:
        return Listing([])

    async def stat(self, path: str) -> Entry | None:
        return Entry(path, CHUNKS * 1024, 1.0)

    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        for i in range(CHUNKS):
            yield b"x" * 1024
            Trickle.progress[path] = i + 1
            await asyncio.sleep(0.005)
        if Trickle.when_first_done is None:
            Trickle.when_first_done = dict(Trickle.progress)


async def test_more_downloads_than_hashing_threads_all_progress(tmp_path: Path) -> None:
    config = parse_source_config(f"url: file://{tmp_path}".encode())
    src = Trickle(config, Credentials(), config.policy().path_filter)
    n = _HASH_POOL._max_workers * 3
    digests = await asyncio.wait_for(
        asyncio.gather(*(src.digest(f"f{i}", "sha256", None, CHUNKS * 1024) for i in range(n))), 60
    )
    expected = hashlib.sha256(b"x" * 1024 * CHUNKS).hexdigest()
    assert all(d.value == expected and d.size == CHUNKS * 1024 for d in digests)
    # Every download kept going meanwhile. Before, a download without a hashing thread stopped
    # reading after a few chunks until an earlier file was hashed to the end (its connection idle).
    snapshot = Trickle.when_first_done
    assert snapshot is not None and len(snapshot) == n
    assert min(snapshot.values()) >= CHUNKS // 2, sorted(snapshot.values())
