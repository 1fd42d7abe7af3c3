"""Replicas as real ``ftpsource serve`` processes on one PostgreSQL, behind a TCP proxy standing in for
the Kubernetes Service, with a real gRPC client that reconnects as Argo's does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from ftpsource.watcher import DELIVER_BATCH
from tests.support.harness import Proxy, ServerProcess, Stream, open_stream, ready
from tests.support.postgres import PgDatabase


def cfg(root: Path, **extra: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", "id": "shared", "stable_for": "200ms", "poll_interval": "1s", **extra}


@contextlib.asynccontextmanager
async def replicas(tmp_path: Path, db: PgDatabase, n: int) -> AsyncIterator[tuple[list[ServerProcess], Proxy]]:
    """``n`` serve processes on ``db`` and a proxy in front of the first one."""
    servers = [
        ServerProcess(db.url, tmp_path / f"replica{i}.log", extra=["--state-password-file", str(db.password_file)])
        for i in range(n)
    ]
    for server in servers:
        await asyncio.to_thread(server.start)
    proxy = await Proxy.start("127.0.0.1", servers[0].port)
    try:
        yield servers, proxy
    finally:
        await proxy.close()
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    server.proc.send_signal(signal.SIGCONT)
                await asyncio.to_thread(server.terminate)


async def collect(proxy: Proxy, config: dict[str, Any], wanted: set[str], first: Stream | None = None) -> list[str]:
    """Every ready path received through the proxy until ``wanted`` are all in, reconnecting when a
    stream ends (as Argo does, without its 5 s pause)."""
    got: list[str] = []
    stream = first or await open_stream(proxy.port, config)
    try:
        while not wanted <= set(got):
            try:
                event = await stream.next(timeout=30)
            except AssertionError:
                if not stream.ended.is_set():
                    raise
                await stream.close()
                await asyncio.sleep(0.2)
                stream = await open_stream(proxy.port, config)
                continue
            got.append(event["data"]["path"])
    finally:
        await stream.close()
    return got


async def test_kill_9_of_the_owner_during_a_burst_another_replica_resumes(tmp_path: Path, pg_db: PgDatabase) -> None:
    root = tmp_path / "in"
    root.mkdir()
    async with replicas(tmp_path, pg_db, 2) as (servers, proxy):
        config = cfg(root)
        stream = await open_stream(proxy.port, config)
        names = [f"f{i:03d}.dat" for i in range(300)]
        for i, name in enumerate(names):
            (root / name).write_bytes(b"content %d" % i)
        first = await stream.next(timeout=30)  # the burst is being decided and streamed
        servers[0].kill()
        proxy.target_port = servers[1].port  # the Service now only has the survivor
        await stream.wait_end()
        before = [first["data"]["path"], *(e["data"]["path"] for e in stream.received[1:])]
        await stream.close()
        after = await collect(proxy, config, set(names) - set(before))
    assert set(before) | set(after) == set(names)  # nothing lost
    # Repeats only of what was written but not yet confirmed when the owner died.
    assert len(before) + len(after) - len(names) <= DELIVER_BATCH


async def test_a_frozen_owner_never_writes_after_a_takeover(tmp_path: Path, pg_db: PgDatabase) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a").write_bytes(b"1")
    async with replicas(tmp_path, pg_db, 2) as (servers, proxy):
        config = cfg(root)
        old = await open_stream(proxy.port, config)
        await old.until(ready("a"))
        frozen = servers[0]
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            proxy.target_port = servers[1].port
            new = await open_stream(proxy.port, config, own_connection=True)
            # Files the frozen owner would decide too, if it could write, the moment it wakes.
            for i in range(20):
                (root / f"late{i:02d}").write_bytes(b"x%d" % i)
            late = {f"late{i:02d}" for i in range(20)}
            while not late <= {e["data"]["path"] for e in new.received}:
                await new.next(timeout=30)
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        # Woken up, the old owner learns it lost the source and ends its stream.
        assert await old.wait_end(timeout=15) == grpc.StatusCode.ABORTED
        await old.close()
        (root / "after").write_bytes(b"2")
        await new.until(ready("after"))
        await new.close()
        with pg_db.connect() as conn:
            repeated = conn.execute(
                "SELECT path, count(*) FROM outbox WHERE type='ready' GROUP BY path HAVING count(*) > 1"
            ).fetchall()
            owner = conn.execute("SELECT owner FROM sources WHERE id='shared'").fetchone()
        assert repeated == []  # every file decided once: the frozen replica wrote nothing
        assert owner is not None and owner[0].endswith(f":{servers[1].proc.pid}")  # type: ignore[union-attr]
