"""Retention through a real gRPC stream, with an injected clock: what is pruned, and what is not."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftpsource.clock import ShiftedClock
from ftpsource.watcher import PRUNE_EVERY_S
from tests.support.harness import all_delivered, eventually, ready, run_server, stream_to

HOUR = 3600.0


Rows = Callable[..., int]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], Rows]:
    """Server settings for a state on each backend, and a way to count rows in it."""
    if request.param == "sqlite":
        state = tmp_path / "state.db"

        def sqlite_rows(table: str, where: str = "TRUE") -> int:
            db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
            try:
                return int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])
            finally:
                db.close()

        return {"state": state}, sqlite_rows
    pg = request.getfixturevalue("pg_db")

    def pg_rows(table: str, where: str = "TRUE") -> int:
        with pg.connect() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()
        assert row is not None
        return int(row[0])

    return {"state": pg.url, "state_password_file": pg.password_file}, pg_rows


async def test_identity_holds_within_the_retention_and_state_is_pruned_after_it(
    tmp_path: Path, root: Path, backend: tuple[dict[str, Any], Rows]
) -> None:
    settings, rows = backend
    clock = ShiftedClock()
    config = {"url": f"file://{root}", "stable_for": "200ms", "poll_interval": "300ms"}
    async with (
        run_server(tmp_path, clock=clock, retention_s=2 * HOUR, **settings) as srv,
        stream_to(srv.port, config) as stream,
    ):
        (root / "a.csv").write_bytes(b"same bytes")
        first = await stream.until(ready("a.csv"))
        await all_delivered(srv)
        (session,) = srv.app.sessions.all()
        watcher = session.watcher
        assert watcher is not None
        records = watcher.records

        async def polled() -> None:
            watcher.polled.clear()
            srv.app.wake_all()
            await eventually(watcher.polled.is_set, what="a poll")
            watcher.polled.clear()
            await eventually(watcher.polled.is_set, what="a second poll")

        (root / "a.csv").unlink()
        await polled()
        assert "a.csv" not in records  # memory holds live files only ...
        assert rows("files", "path='a.csv' AND state='deleted'") == 1  # ... the tombstone is in the store
        clock.advance(HOUR)  # within the retention: the same bytes are recognised
        (root / "a.csv").write_bytes(b"same bytes")
        (root / "marker.txt").write_bytes(b"m")
        await stream.until(ready("marker.txt"))
        await all_delivered(srv)
        assert [e["subject"] for e in stream.received].count("a.csv") == 1
        (root / "a.csv").unlink()
        await polled()
        (root / "a.csv").write_bytes(b"new bytes")  # new bytes after a delete: the next generation
        changed = await stream.until(ready("a.csv"))
        assert changed["data"]["reason"] == "reupload" and changed["data"]["generation"] == 2
        await all_delivered(srv)
        (root / "a.csv").unlink()
        await polled()
        clock.advance(2 * HOUR + PRUNE_EVERY_S)  # past the retention (and the pruning period)
        await polled()
        assert "a.csv" not in records  # the tombstone is gone ...
        assert rows("outbox") == 0  # delivered events went too
        assert rows("files") == 1  # ... only marker.txt is remembered
        (root / "a.csv").write_bytes(b"same bytes")  # so the same bytes are a new file again
        again = await stream.until(ready("a.csv"))
        assert again["data"]["reason"] == "new" and again["data"]["generation"] == 1
        assert again["id"] == first["id"]  # the same version: the same deterministic id
