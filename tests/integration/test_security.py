"""Attacks on the server, as a stream author, the network, a hostile server or an uploader would try
them, through a real gRPC client: each fails with the stated error and leaks nothing."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from tests.support.harness import open_stream, ready, run_server, stream_to
from tests.support.hostile import alias_bomb

FAST = {"stable_for": "300ms", "poll_interval": "5s"}


async def test_yaml_alias_bomb_is_invalid_argument_quickly_then_a_valid_stream_works(
    tmp_path: Path, root: Path
) -> None:
    async with run_server(tmp_path) as srv:
        t0 = time.monotonic()
        bomb = await open_stream(srv.port, alias_bomb(9))
        try:
            assert await bomb.wait_end(10) == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await bomb.close()
        assert time.monotonic() - t0 < 10
        assert bomb.details is not None and "anchors" in bomb.details and len(bomb.details) < 200
        (root / "a.csv").write_bytes(b"a\n")
        async with stream_to(srv.port, {"url": f"file://{root}", **FAST}) as stream:
            event = await stream.until(ready("a.csv"))
            assert event["data"]["size"] == 2
