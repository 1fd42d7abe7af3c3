"""Metrics, health endpoints and logs of a real server."""

from __future__ import annotations

import asyncio
import errno
import http.server
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ftpsource import metrics as metrics_module
from ftpsource.config import ServerSettings
from ftpsource.logging import JsonFormatter, TextFormatter, setup_logging
from ftpsource.metrics import Metrics
from ftpsource.server import start_server
from tests.support import REQUIRE_REAL_SERVERS
from tests.support.harness import eventually, run_server, stream_to

CONTRACT_METRICS = [
    "ftpsource_events_total",
    "ftpsource_polls_total",
    "ftpsource_poll_duration_seconds",
    "ftpsource_files_tracked",
    "ftpsource_files_pending",
    "ftpsource_bytes_hashed_total",
    "ftpsource_detection_latency_seconds",
    "ftpsource_outbox_pending",
    "ftpsource_source_errors_total",
    "ftpsource_streams_active",
    "ftpsource_last_successful_poll_timestamp_seconds",
    "ftpsource_event_loop_lag_seconds",
    "ftpsource_event_loop_lag_max_seconds",
]


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_page_has_the_contract_and_passes_promtool(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    async with run_server(tmp_path) as srv:
        port = srv.metrics_port
        assert port is not None
        async with stream_to(srv.port, {"url": f"file://{root}", "stable_for": "200ms"}) as stream:
            (root / "a.csv").write_bytes(b"12345")
            await stream.next()
            status, text = fetch(port, "/metrics")
        assert status == 200
        for name in CONTRACT_METRICS:
            assert f"# TYPE {name.removesuffix('_total')}" in text, name
        assert 'ftpsource_events_total{reason="new",source=' in text
        assert "ftpsource_bytes_hashed_total{" in text and "} 5.0" in text
        promtool = shutil.which("promtool")
        if promtool is None:
            if REQUIRE_REAL_SERVERS:
                pytest.fail("promtool (Debian package prometheus) is required in CI")
            pytest.skip("promtool not installed")
        r = subprocess.run([promtool, "check", "metrics"], input=text, text=True, capture_output=True)
        assert r.returncode == 0, r.stdout + r.stderr


async def test_healthz_and_readyz(tmp_path: Path) -> None:
    async with run_server(tmp_path) as srv:
        port = srv.metrics_port
        assert port is not None
        assert fetch(port, "/healthz") == (200, "ok\n")
        assert fetch(port, "/readyz") == (200, "ready\n")
        assert fetch(port, "/nope")[0] == 404
        srv.app.serving = False  # what shutdown does first
        assert fetch(port, "/readyz")[0] == 503
        assert fetch(port, "/healthz")[0] == 200


def _gauge(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_healthz_fails_while_the_event_loop_is_stuck_and_recovers(tmp_path: Path) -> None:
    async with run_server(tmp_path, loop_stall_s=1.0) as srv:
        port = srv.metrics_port
        assert port is not None
        assert fetch(port, "/healthz") == (200, "ok\n")
        seen: dict[str, object] = {}
        stuck_seen = threading.Event()

        def probe() -> None:  # the kubelet's view, from outside the loop
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status, body = fetch(port, "/healthz")
                if status == 503:
                    seen["healthz"] = (status, body)
                    seen["lag"] = _gauge(fetch(port, "/metrics")[1], "ftpsource_event_loop_lag_seconds")
                    break
                time.sleep(0.05)
            stuck_seen.set()

        prober = threading.Thread(target=probe)
        prober.start()
        # Block the loop the way a blocking call would, until the probe has seen it (bounded).
        stuck_seen.wait(60)
        prober.join()
        assert seen.get("healthz") == (503, "event loop stalled\n")
        assert isinstance(seen["lag"], float) and seen["lag"] > 1.0

        def healthy() -> bool:
            return fetch(port, "/healthz")[0] == 200

        await eventually(healthy, timeout=20, what="/healthz to recover")
        assert _gauge(fetch(port, "/metrics")[1], "ftpsource_event_loop_lag_max_seconds") > 1.0

        def lag_back_to_normal() -> bool:
            return _gauge(fetch(port, "/metrics")[1], "ftpsource_event_loop_lag_seconds") < 1.0

        await eventually(lag_back_to_normal, timeout=20, what="the lag to fall")
        assert _gauge(fetch(port, "/metrics")[1], "ftpsource_event_loop_lag_max_seconds") > 1.0


async def test_a_sources_gauges_go_when_its_stream_ends(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    per_source = [
        "ftpsource_files_tracked",
        "ftpsource_files_pending",
        "ftpsource_outbox_pending",
        "ftpsource_last_successful_poll_timestamp_seconds",
    ]
    async with run_server(tmp_path) as srv:
        port = srv.metrics_port
        assert port is not None
        other_root = tmp_path / "other"
        other_root.mkdir()
        config = {"id": "gone", "url": f"file://{root}", "stable_for": "200ms"}
        async with (
            stream_to(srv.port, config) as stream,
            stream_to(srv.port, {"id": "stays", "url": f"file://{other_root}"}) as other,
        ):
            (root / "a.csv").write_bytes(b"1")
            await stream.next()

            def both_polled() -> bool:
                text = fetch(port, "/metrics")[1]
                return all(f'{name}{{source="{src}"' in text for name in per_source for src in ("gone", "stays"))

            await eventually(both_polled, what="both sources' gauges")
            await stream.close()

            def gone_forgotten() -> bool:
                return 'source="gone"' not in "\n".join(
                    line for line in fetch(port, "/metrics")[1].splitlines() if line.split("{")[0] in per_source
                )

            await eventually(gone_forgotten, what="the ended source's gauges to go")
            text = fetch(port, "/metrics")[1]
            for name in per_source:
                assert f'{name}{{source="stays"' in text, name
            # Counters keep their totals: rates over them stay right.
            assert 'ftpsource_polls_total{outcome="ok",source="gone"}' in text
            assert other.status is None


def _record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ftpsource.watcher", logging.INFO, __file__, 1, msg, None, None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_log_lines_carry_source_and_path() -> None:
    line = json.loads(JsonFormatter().format(_record("ready: new", source="s1", path="a b.csv")))
    assert (line["msg"], line["source"], line["path"], line["level"]) == ("ready: new", "s1", "a b.csv", "info")
    assert line["time"].endswith("Z")


def test_text_log_lines_carry_source_and_path() -> None:
    line = TextFormatter().format(_record("ready: new", source="s1", path="a.csv"))
    assert "ready: new" in line and "source=s1" in line and "path=a.csv" in line


async def test_every_file_log_line_names_source_and_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="ftpsource")
    root = tmp_path / "in"
    root.mkdir()
    async with run_server(tmp_path) as srv, stream_to(srv.port, {"url": f"file://{root}", "stable_for": "200ms"}) as s:
        (root / "a.csv").write_bytes(b"1")
        await s.next()
    about_files = [r for r in caplog.records if r.name == "ftpsource.watcher" and "ready" in r.getMessage()]
    assert about_files
    for r in about_files:
        assert getattr(r, "source", None) and getattr(r, "path", None) == "a.csv"


def test_setup_logging_picks_json_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("ftpsource")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    try:
        setup_logging(None, "INFO")
        logging.getLogger("ftpsource.test").info("hello", extra={"source": "x"})
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(err) | {"time": None} == {
            "msg": "hello",
            "source": "x",
            "level": "info",
            "logger": "ftpsource.test",
            "time": None,
        }
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def _fetch_at(host: str, port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as r:
        return int(r.status)


async def test_the_any_address_listen_takes_ipv4_and_ipv6(tmp_path: Path) -> None:
    """`[::]` (what the Deployment listens on) answers on IPv4 and IPv6 alike, gRPC and HTTP."""
    if not socket.has_ipv6:
        pytest.skip("this host has no IPv6")
    # Beyond loopback without a token only on purpose (--no-auth): this test is about the listener.
    settings = ServerSettings(listen="[::]:0", metrics_listen="[::]:0", state=tmp_path / "state.db", no_auth=True)
    running = await start_server(settings, Metrics())
    try:
        assert running.metrics_port is not None
        for host in ("127.0.0.1", "[::1]"):
            assert await asyncio.to_thread(_fetch_at, host, running.metrics_port, "/healthz") == 200
            async with grpc.aio.insecure_channel(f"{host}:{running.port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(1.0)


def test_http_listener_falls_back_to_ipv4_without_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ipv6(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(metrics_module._DualStackHTTPServer, "__init__", no_ipv6)
    server = metrics_module.bind_http("::", 0, http.server.BaseHTTPRequestHandler)
    try:
        assert server.socket.family == socket.AF_INET and server.server_address[0] == "0.0.0.0"
    finally:
        server.server_close()
    # A specific IPv6 address that is not there is an error, not a silent IPv4 listener.
    with pytest.raises(OSError):
        metrics_module.bind_http("::2", 0, http.server.BaseHTTPRequestHandler)
