"""Change-triggered rescans are coalesced: a file being written does not cause back-to-back full rescans."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.model import Listing
from ftpsource.credentials import Credentials
from ftpsource.metrics import Metrics
from ftpsource.store import AsyncStore
from ftpsource.watcher import MIN_RESCAN_S, Watcher


class Restless(LocalAdapter):
    """A local source whose change notifications never stop (a file is always being written)."""

    lists = 0

    async def list(self) -> Listing:
        Restless.lists += 1
        return await super().list()

    async def wait_for_change(self, timeout: float) -> None:
        await asyncio.sleep(0)


async def test_changes_while_a_file_is_written_do_not_run_rescans_back_to_back(tmp_path: Path, root: Path) -> None:
    (root / "growing").write_bytes(b"x")
    config = parse_source_config(f"url: file://{root}\nstable_for: 1h\npoll_interval: 1h\n".encode())
    store = AsyncStore.open(tmp_path / "state.db")
    watcher = Watcher(config, "s", store, Credentials(), Metrics(), adapter_factory=Restless)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(2.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
    # Without coalescing this is thousands; with it, at most one rescan per MIN_RESCAN_S.
    assert 2 <= Restless.lists <= 2.0 / MIN_RESCAN_S + 1, Restless.lists
