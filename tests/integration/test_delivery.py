"""Delivery under real faults, through a real gRPC client over a real socket: a dead network path, a
graceful restart, a source that fails right after an event, and kill -9 during a burst."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import grpc

from ftpsource.server import confirm_after_s
from tests.support.harness import (
    Proxy,
    ServerProcess,
    all_delivered,
    eventually,
    open_stream,
    ready,
    run_server,
    stream_to,
)

FAST = {"stable_for": "200ms", "poll_interval": "1s"}


def cfg(root: Path, **kw: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", **FAST, **kw}


def outbox(state: Path) -> list[tuple[str, str, float | None]]:
    """(path, event id, delivered) of every event, read straight from the state file."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return db.execute("SELECT path, event_id, delivered FROM outbox ORDER BY seq").fetchall()
    finally:
        db.close()


async def test_events_written_into_a_dead_connection_are_delivered_on_the_next_stream(
    tmp_path: Path, root: Path
) -> None:
    async with run_server(tmp_path) as srv:
        proxy = await Proxy.start("127.0.0.1", srv.port)
        try:
            first = await open_stream(proxy.port, cfg(root))
            (root / "before").write_bytes(b"0")
            await first.until(ready("before"))
            await all_delivered(srv)
            (session,) = srv.app.sessions.all()
            assert session.watcher is not None
            watcher = session.watcher
            proxy.blackhole()  # the client's node is gone: no FIN, no RST, nothing arrives any more
            names = [f"during_{i}" for i in range(5)]
            for name in names:
                (root / name).write_bytes(name.encode())
            # The server writes them into the dead connection (the writes complete: socket buffers) ...
            await eventually(lambda: len(watcher.unconfirmed) == len(names), what="writes into the dead path")
            # ... and the keepalive ping that is never answered ends the stream without confirming them.
            active = srv.app.metrics.streams_active
            await eventually(lambda: active._value.get() == 0, what="the server to drop the dead stream")
            assert {p for p, _, d in outbox(Path(srv.app.settings.state)) if d is None} == set(names)
            assert not [e for e in first.received if e["subject"] in names]
            async with stream_to(proxy.port, cfg(root), own_connection=True) as second:  # Argo reconnects
                got = {(await second.next())["subject"] for _ in names}
                assert got == set(names)
                await all_delivered(srv)
            await first.close()
        finally:
            await proxy.close()


async def test_sigterm_right_after_delivery_then_restart_repeats_nothing(tmp_path: Path, root: Path) -> None:
    keepalive, grace = 1.0, 8.0
    assert confirm_after_s(keepalive) < grace
    server = ServerProcess(
        tmp_path / "state.db", tmp_path / "log", extra=["--keepalive", str(keepalive), "--grace", str(grace)]
    )
    port = server.start()
    stream = await open_stream(port, cfg(root))
    names = [f"f{i}" for i in range(20)]
    for name in names:
        (root / name).write_bytes(name.encode())
    got = {(await stream.next())["subject"] for _ in names}
    assert got == set(names)
    t0 = time.monotonic()
    assert server.terminate(timeout=30) == 0  # right away: nothing is confirmed yet
    elapsed = time.monotonic() - t0
    assert await stream.wait_end() == grpc.StatusCode.UNAVAILABLE
    await stream.close()
    assert elapsed < grace + 2, f"shutdown took {elapsed:.1f}s"
    assert all(d is not None for _, _, d in outbox(tmp_path / "state.db")), "SIGTERM left events unconfirmed"
    port = server.start()
    try:
        async with stream_to(port, cfg(root)) as again:
            (root / "sentinel").write_bytes(b"s")
            await again.until(ready("sentinel"))
            assert [e["subject"] for e in again.received] == ["sentinel"]  # zero repeats
    finally:
        server.terminate()


async def test_a_source_that_fails_right_after_an_event_does_not_replay_it(tmp_path: Path, root: Path) -> None:
    """Argo reconnects after every FAILED_PRECONDITION; the last event must not come back each time."""
    async with run_server(tmp_path) as srv:
        stream = await open_stream(srv.port, cfg(root))
        (root / "last").write_bytes(b"1")
        await stream.until(ready("last"))
        shutil.rmtree(root)  # the source breaks for good right after the event
        assert await stream.wait_end(timeout=30) == grpc.StatusCode.FAILED_PRECONDITION
        await stream.close()
        seen = [e["subject"] for e in stream.received]
        statuses = []
        deadline = time.monotonic() + 10  # Argo retries every 5 s forever; here, quicker
        while time.monotonic() < deadline:
            retry = await open_stream(srv.port, cfg(root))
            statuses.append(await retry.wait_end(timeout=30))
            seen += [e["subject"] for e in retry.received]
            await retry.close()
        assert seen.count("last") == 1, seen
        assert set(statuses) == {grpc.StatusCode.FAILED_PRECONDITION} and len(statuses) >= 3


async def test_kill_9_during_a_burst_repeats_only_unconfirmed_events_exactly(tmp_path: Path, root: Path) -> None:
    state, log = tmp_path / "state.db", tmp_path / "server.log"
    server = ServerProcess(state, log, extra=["--keepalive", "1"])
    port = server.start()
    config = cfg(root)
    stream = await open_stream(port, config)
    names = [f"f{i:03d}.dat" for i in range(300)]
    for i, name in enumerate(names):
        (root / name).write_bytes(b"content %d" % i)
    for _ in range(50):
        await stream.next(timeout=30)  # events are flowing: the burst is being processed
    server.kill()
    await stream.wait_end()
    await stream.close()
    first = {e["subject"]: e["id"] for e in stream.received}
    unconfirmed = {p for p, _, d in outbox(state) if d is None}
    port = server.start()
    stream = await open_stream(port, config)
    try:
        got = dict(first)
        while set(got) != set(names):
            event = await stream.next(timeout=30)
            got.setdefault(event["subject"], event["id"])
    finally:
        await stream.close()
        server.terminate()
    repeats = [e for e in stream.received if e["subject"] in first]
    print(f"kill -9: {len(first)} received before the kill, {len(repeats)} repeated, {len(unconfirmed)} unconfirmed")
    assert set(got) == set(names)  # no loss
    assert all(e["id"] == first[e["subject"]] for e in repeats)  # a repeat is the same event
    assert {e["subject"] for e in repeats} <= unconfirmed  # and only one the server had not confirmed
    assert len(repeats) == len({e["subject"] for e in repeats})  # each at most once more
