"""`ftpsource watch CONFIG`: the same events as JSON lines, without Argo; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_watch_prints_events_as_json_lines(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.csv").write_bytes(b"1,2\n")
    config = tmp_path / "src.yaml"
    config.write_text(f"url: file://{root}\nstable_for: 200ms\npoll_interval: 1s\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftpsource.cli", "watch", str(config), "--state", str(tmp_path / "w.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first event (the test timeout bounds it)
        event = json.loads(line)
        assert event["type"] == "ftpsource.file.ready" and event["data"]["path"] == "a.csv"
        assert event["specversion"] == "1.0"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        (None, "cannot read config file"),
        ("url: file:///x\nstable_for: abc\n", "stable_for: invalid duration 'abc'"),
        ("url: file:///definitely/not/here\n", "does not exist"),
        ("url: ftp://127.0.0.1:1/\ncredentials: nope\n", "credentials"),
    ],
)
def test_watch_bad_input_is_one_line(tmp_path: Path, config_text: str | None, expected: str) -> None:
    config = tmp_path / "src.yaml"
    if config_text is not None:
        config.write_text(config_text)
    r = subprocess.run(
        [sys.executable, "-m", "ftpsource.cli", "watch", str(config), "--state", str(tmp_path / "w.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert expected in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("ftpsource watch:")]) == 1
