"""Delivery to a grpc-go client (Argo's client library) behind a network path that goes dead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.goclient import GoStream, build_go_client
from tests.support.harness import Proxy, all_delivered, eventually, run_server


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_client(tmp_path_factory.mktemp("goclient"))


def subjects(lines: list[str]) -> list[str]:
    return [json.loads(line)["subject"] for line in lines]


async def test_events_written_into_a_dead_path_reach_the_next_grpc_go_stream(
    go_client: Path, tmp_path: Path, root: Path
) -> None:
    config = f"url: file://{root}\nstable_for: 200ms\npoll_interval: 1s\n"
    async with run_server(tmp_path) as srv:
        proxy = await Proxy.start("127.0.0.1", srv.port)
        try:
            first = await GoStream.open(go_client, proxy.port, "files", config)
            (root / "before").write_bytes(b"0")
            assert json.loads(await first.next())["subject"] == "before"
            await all_delivered(srv)
            (session,) = srv.app.sessions.all()
            watcher = session.watcher
            assert watcher is not None
            proxy.blackhole()
            names = [f"during_{i}" for i in range(5)]
            for name in names:
                (root / name).write_bytes(name.encode())
            await eventually(lambda: len(watcher.unconfirmed) == len(names), what="writes into the dead path")
            active = srv.app.metrics.streams_active
            await eventually(lambda: active._value.get() == 0, what="the server to drop the dead stream")
            await first.close()
            assert not set(subjects(first.received)) & set(names)
            second = await GoStream.open(go_client, proxy.port, "files", config)  # Argo reconnects
            try:
                got = {json.loads(await second.next())["subject"] for _ in names}
                assert got == set(names)
                await all_delivered(srv)
            finally:
                await second.close()
        finally:
            await proxy.close()
