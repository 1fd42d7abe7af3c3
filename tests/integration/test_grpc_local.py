"""The foundation scenarios, end to end: real gRPC client over a real socket, real directories."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ftpsource.adapters import base as adapters_base
from ftpsource.config import ServerSettings
from ftpsource.store import Store
from tests.support.harness import ServerProcess, all_delivered, eventually, open_stream, ready, run_server, stream_to

FAST = {"stable_for": "500ms", "poll_interval": "5s"}


def cfg(root: Path, **kw: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", **FAST, **kw}


async def test_slow_write_yields_one_event_after_last_write_plus_stable_for(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root, stable_for="1s")) as stream:
        with open(root / "slow.csv", "wb") as f:
            for i in range(8):
                f.write(b"row %d\n" % i)
                f.flush()
                await asyncio.sleep(0.25)  # the writer is slow on purpose: this is the scenario
            last_write = time.time()
        (root / "sentinel").write_bytes(b"s")
        await stream.until(ready("sentinel"))
        slow = [e for e in stream.received if e["data"]["path"] == "slow.csv"]
        assert len(slow) == 1, stream.received
        assert slow[0]["data"]["size"] == sum(len(b"row %d\n" % i) for i in range(8))
        emitted_at = time.mktime(time.strptime(slow[0]["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert emitted_at >= int(last_write + 1.0) - 1


async def test_identical_rewrite_and_touch_emit_nothing_new_bytes_reupload(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "a.csv").write_bytes(b"v1\n")
        first = await stream.until(ready("a.csv"))
        assert (first["data"]["reason"], first["data"]["generation"]) == ("new", 1)
        assert first["data"]["checksum"]["method"] == "local"
        mtime_before = (root / "a.csv").stat().st_mtime
        (root / "a.csv").write_bytes(b"v1\n")  # identical bytes
        os.utime(root / "a.csv", (time.time() + 5, time.time() + 5))  # and a touch
        (root / "sentinel1").write_bytes(b"1")
        await stream.until(ready("sentinel1"))

        def reverified() -> bool:
            store = Store.open_read_only(srv.app.settings.state)
            try:
                rec = store.get_record(first["data"]["source_id"], "a.csv")
            finally:
                store.close()
            return rec is not None and rec.state == "ready" and rec.checked is None and rec.mtime > mtime_before

        await eventually(reverified, what="a.csv re-verified")
        (root / "a.csv").write_bytes(b"v2 corrected\n")
        second = await stream.until(lambda e: e["data"].get("path") == "a.csv")
        assert (second["data"]["reason"], second["data"]["generation"]) == ("reupload", 2)
        assert second["data"]["previous"]["checksum"]["value"] == first["data"]["checksum"]["value"]
        assert second["id"] != first["id"]
        assert [e["data"]["path"] for e in stream.received].count("a.csv") == 2


async def test_restart_reports_exactly_the_files_added_while_down(tmp_path: Path, root: Path) -> None:
    (root / "before.csv").write_bytes(b"b")
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        await stream.until(ready("before.csv"))
        await all_delivered(srv)
    for i in range(5):
        (root / f"while_down_{i}.csv").write_bytes(b"d%d" % i)
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        for _ in range(5):
            await stream.next()
        (root / "sentinel").write_bytes(b"s")
        await stream.until(ready("sentinel"))
        paths = sorted(e["data"]["path"] for e in stream.received)
        assert paths == sorted([f"while_down_{i}.csv" for i in range(5)] + ["sentinel"])


async def test_bad_config_is_invalid_argument_naming_each_field(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv:
        bad = await open_stream(srv.port, f"url: file://{root}\nstable_for: abc\nbogus: 1\n")
        assert await bad.wait_end() == grpc.StatusCode.INVALID_ARGUMENT
        assert "stable_for: invalid duration 'abc'" in (bad.details or "")
        assert "bogus: unknown key" in (bad.details or "")
        await bad.close()
        async with stream_to(srv.port, cfg(root)) as good:  # the server keeps serving others
            (root / "ok.csv").write_bytes(b"1")
            await good.until(ready("ok.csv"))


async def test_missing_root_ends_that_stream_clearly_and_others_continue(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as good:
        bad = await open_stream(srv.port, cfg(tmp_path / "does-not-exist"), name="other")
        assert await bad.wait_end() == grpc.StatusCode.FAILED_PRECONDITION
        assert "does not exist" in (bad.details or "") and "does-not-exist" in (bad.details or "")
        await bad.close()
        (root / "still.csv").write_bytes(b"1")
        await good.until(ready("still.csv"))


async def test_auth_token(tmp_path: Path, root: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    async with run_server(tmp_path, auth_token_file=token_file) as srv:
        for token in (None, "wrong"):
            s = await open_stream(srv.port, cfg(root), token=token)
            assert await s.wait_end() == grpc.StatusCode.UNAUTHENTICATED
            assert "s3cret" not in (s.details or "")
            await s.close()
        async with stream_to(srv.port, cfg(root), token="s3cret-token") as ok:
            (root / "a").write_bytes(b"1")
            await ok.until(ready("a"))


async def test_newer_stream_supersedes_older(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv:
        old = await open_stream(srv.port, cfg(root))
        (root / "a").write_bytes(b"1")
        await old.until(ready("a"))
        await all_delivered(srv)
        async with stream_to(srv.port, cfg(root)) as new:
            assert await old.wait_end() == grpc.StatusCode.ABORTED
            assert "superseded" in (old.details or "")
            (root / "b").write_bytes(b"2")
            await new.until(ready("b"))
            assert all(e["data"]["path"] != "a" for e in new.received)  # already delivered
        await old.close()


async def test_disconnect_mid_stream_loses_nothing(tmp_path: Path, root: Path) -> None:
    names = {f"f{i:02d}" for i in range(60)}
    async with run_server(tmp_path) as srv:
        first = await open_stream(srv.port, cfg(root))
        for n in names:
            (root / n).write_bytes(n.encode())
        for _ in range(3):
            await first.next()
        await first.close()  # the client goes away mid-stream
        got = {e["data"]["path"] for e in first.received}
        async with stream_to(srv.port, cfg(root)) as second:
            while got != names:
                got.add((await second.next())["data"]["path"])


async def test_health_service(tmp_path: Path) -> None:
    async with run_server(tmp_path) as srv, grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "generic.Eventing"):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_shuts_down_within_grace(tmp_path: Path, root: Path) -> None:
    server = ServerProcess(tmp_path / "state.db", tmp_path / "log", extra=["--grace", "3"])
    port = server.start()
    stream = await open_stream(port, cfg(root))
    (root / "a").write_bytes(b"1")
    await stream.until(ready("a"))
    t0 = time.monotonic()
    rc = server.terminate(timeout=15)
    assert rc == 0 and time.monotonic() - t0 < 8
    assert await stream.wait_end() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await stream.close()


def test_unwritable_state_is_a_clear_startup_error(tmp_path: Path) -> None:
    from ftpsource.cli import main

    rc = main(["serve", "--state", str(tmp_path / "missing-dir" / "s.db"), "--listen", "127.0.0.1:0"])
    assert rc == 2


def test_settings_defaults_match_the_contract() -> None:
    s = ServerSettings()
    assert (s.listen, s.metrics_listen, str(s.state)) == ("0.0.0.0:8080", "0.0.0.0:9090", "ftpsource.db")


async def test_a_crashing_verification_spares_the_other_files(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = adapters_base.verifier_for  # type: ignore[attr-defined]

    def explode_on_bad(path: str):
        if path == "bad.gz":
            raise RuntimeError("simulated bug in a verifier")
        return real(path)

    monkeypatch.setattr(adapters_base, "verifier_for", explode_on_bad)
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "bad.gz").write_bytes(gzip.compress(b"fine content"))
        (root / "good.csv").write_bytes(b"g")
        await stream.until(ready("good.csv"))
        errors = srv.app.metrics.source_errors
        await eventually(
            lambda: any(
                s.labels.get("kind") == "internal" and s.value >= 1
                for m in errors.collect()
                for s in m.samples
                if s.name.endswith("_total")
            ),
            what="the crash to be counted",
        )
        monkeypatch.setattr(adapters_base, "verifier_for", real)  # the "bug" is fixed: the file goes through
        (root / "nudge").write_bytes(b"n")
        await stream.until(ready("bad.gz"))
        assert not stream.ended.is_set()


async def test_keepalive_ends_a_stream_whose_client_went_silent(tmp_path: Path, root: Path) -> None:
    """A client behind a dead network path (no FIN, no RST) is noticed by keepalive pings."""
    from tests.support.harness import Proxy

    async with run_server(tmp_path, keepalive_s=1.0) as srv:
        proxy = await Proxy.start("127.0.0.1", srv.port)
        try:
            stream = await open_stream(proxy.port, cfg(root))
            (root / "a").write_bytes(b"1")
            await stream.until(ready("a"))
            active = srv.app.metrics.streams_active
            assert active._value.get() == 1
            proxy.freeze()
            await eventually(lambda: active._value.get() == 0, timeout=20, what="the server to drop the stream")
            await stream.close()
        finally:
            await proxy.close()


async def test_grpc_over_tls(tmp_path: Path, root: Path) -> None:
    """--tls-cert/--tls-key: clients other than Argo's can require TLS; a plaintext client gets nothing."""
    import json

    from ftpsource._proto import generic_pb2, generic_pb2_grpc
    from tests.support.servers import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    async with run_server(tmp_path, tls_cert=tls.cert_file, tls_key=tls.key_file) as srv:
        (root / "a").write_bytes(b"1")
        creds = grpc.ssl_channel_credentials(root_certificates=tls.ca_file.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds) as channel:
            call = generic_pb2_grpc.EventingStub(channel).StartEventSource(
                generic_pb2.EventSource(name="tls", config=f"url: file://{root}\nstable_for: 200ms\n".encode())
            )
            msg = await asyncio.wait_for(call.read(), 20)
            assert json.loads(msg.payload)["data"]["path"] == "a"
            call.cancel()
        plain = await open_stream(srv.port, cfg(root))
        assert await plain.wait_end() == grpc.StatusCode.UNAVAILABLE
        await plain.close()
