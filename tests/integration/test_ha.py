"""Several replicas on one PostgreSQL database, with a real gRPC client.

In-process replicas here (fast); ``test_ha_processes`` runs ``ftpsource serve`` processes behind a
TCP proxy for kill -9, SIGSTOP and database restarts.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from tests.support.harness import all_delivered, eventually, open_stream, ready, run_server, stream_to
from tests.support.postgres import PgDatabase, PostgresCluster


def cfg(root: Path, **extra: Any) -> dict[str, Any]:
    # A long poll interval: a takeover must be noticed without waiting for the next poll.
    return {"url": f"file://{root}", "id": "shared", "stable_for": "200ms", "poll_interval": "60s", **extra}


def state(db: PgDatabase, root: Path) -> dict[str, Any]:
    """Settings of one replica: the shared database, and the watched root allowed (``--allow-root``)."""
    return {"state": db.url, "state_password_file": db.password_file, "allow_roots": [root]}


async def test_supersede_across_replicas_aborts_the_older_stream_promptly(tmp_path: Path, pg_db: PgDatabase) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a").write_bytes(b"1")
    async with (
        run_server(tmp_path / "r1", **state(pg_db, root)) as one,
        run_server(tmp_path / "r2", **state(pg_db, root)) as two,
    ):
        async with stream_to(one.port, cfg(root)) as old:
            await old.until(ready("a"))
            await all_delivered(one)
            async with stream_to(two.port, cfg(root)) as new:
                t0 = time.monotonic()
                assert await old.wait_end(timeout=10) == grpc.StatusCode.ABORTED
                assert time.monotonic() - t0 < 5  # the notification, not the 60 s poll
                assert "superseded" in (old.details or "")
                (root / "b").write_bytes(b"2")
                await new.until(ready("b"))
                assert all(e["data"]["path"] != "a" for e in new.received)  # shared state: already delivered
                await all_delivered(two)
                # And back again: the first replica takes over from the second.
                async with stream_to(one.port, cfg(root)) as third:
                    assert await new.wait_end(timeout=10) == grpc.StatusCode.ABORTED
                    (root / "c").write_bytes(b"3")
                    await third.until(ready("c"))
                    assert {e["data"]["path"] for e in third.received} == {"c"}
        with pg_db.connect() as conn:
            row = conn.execute("SELECT epoch, owner FROM sources WHERE id='shared'").fetchone()
        assert row is not None and row[0] == 3 and row[1]


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_postgres_restart_not_ready_meanwhile_nothing_lost_resumes_by_itself(
    tmp_path: Path, pg_db: PgDatabase, pg_cluster: PostgresCluster
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "before").write_bytes(b"1")
    config = cfg(root, poll_interval="300ms")
    async with run_server(tmp_path, **state(pg_db, root)) as srv:
        port = srv.metrics_port
        assert port is not None
        stream = await open_stream(srv.port, config)
        await stream.until(ready("before"))
        statuses = []
        await asyncio.to_thread(pg_cluster.stop)
        try:
            (root / "during").write_bytes(b"2")
            await eventually(lambda: readyz(port) == 503, timeout=15, what="/readyz to say not ready")
        finally:
            await asyncio.to_thread(pg_cluster.start)
        await eventually(lambda: readyz(port) == 200, timeout=15, what="/readyz to recover")
        (root / "after").write_bytes(b"3")
        got: set[str] = {e["data"]["path"] for e in stream.received}
        deadline = time.monotonic() + 30
        while not {"during", "after"} <= got:  # reconnecting as Argo does when a stream ends
            assert time.monotonic() < deadline, f"got only {sorted(got)}"
            try:
                got.add((await stream.next(timeout=5))["data"]["path"])
            except AssertionError:
                if not stream.ended.is_set():
                    raise
                statuses.append(stream.status)
                await stream.close()
                await asyncio.sleep(0.2)
                stream = await open_stream(srv.port, config)
        await stream.close()
    # A stream that could not go on said so with UNAVAILABLE (Argo retries), never anything else.
    assert set(statuses) <= {grpc.StatusCode.UNAVAILABLE}, statuses
