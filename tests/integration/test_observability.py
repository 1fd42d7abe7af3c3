"""Metrics, health endpoints and logs of a real server."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ftpsource.logging import JsonFormatter, TextFormatter, setup_logging
from tests.support import REQUIRE_REAL_SERVERS
from tests.support.harness import run_server, stream_to

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
