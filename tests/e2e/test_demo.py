"""``ftpsource demo`` as a user runs it: a subprocess, judged by its output, exit status and duration.

The good run and a deliberately broken run (``FTPSOURCE_DEMO_BREAK=identical`` re-uploads different
bytes in the "identical" step) start together, so the two take the time of one. The run left up with
``--keep-running`` is also where the S3 step is checked beyond its output: what landed in the bucket
and where the settled files went on the FTP server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from ftpsource.commands.demo import BEHAVIOURS, STAGED, Checklist, Demo, moto_missing, process_csv

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


@dataclass
class Run:
    proc: subprocess.Popen[str]
    started: float
    result: tuple[int, str, str, float] | None = None

    def wait(self) -> tuple[int, str, str, float]:
        """(exit status, stdout, stderr, wall seconds)."""
        if self.result is None:
            try:
                out, err = self.proc.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"the demo did not finish within {TIMEOUT_S}s:\n{out}\n{err}")
            self.result = (self.proc.returncode, out, err, time.monotonic() - self.started)
        return self.result


def _start(*args: str, **extra_env: str) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in ("FTPSOURCE_LOG_LEVEL", "FTPSOURCE_DEMO_BREAK")}
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1", **extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftpsource.cli", "demo", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    return Run(proc, time.monotonic())


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    # The demo mostly waits (for uploads to settle): three at once cost little more than one.
    started = {
        "good": _start(),
        "broken": _start(FTPSOURCE_DEMO_BREAK="identical"),
        "keep": _start("--keep-running"),
    }
    yield started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()
        if run.result is None and run.proc.stdout is not None and not run.proc.stdout.closed:
            run.proc.communicate()  # also for a run that ended unread (its test deselected): close its pipes


def test_demo_shows_every_behaviour_in_under_a_minute(runs: dict[str, Run]) -> None:
    rc, out, err, wall = runs["good"].wait()
    assert rc == 0, f"exit {rc}\n{out}\n{err}"
    for _, title in BEHAVIOURS:
        assert f"✓ {title}" in out, f"missing ✓ line for {title!r}:\n{out}"
    assert "✗" not in out, out
    assert "identical bytes: nothing emitted" in out
    assert "fast-forwarding the demo clock" in out
    # the sets: one complete on time, one at risk, incomplete, then complete late
    assert re.search(r"set\.complete +daily-master .*on time", out), out
    assert re.search(r"set\.at_risk +daily-stock", out) and re.search(r"set\.incomplete +daily-stock", out), out
    assert re.search(r"set\.complete +daily-stock .*late: true", out), out
    # step 9 runs wherever the tests run (moto is a dev dependency): staged, read back, settled, moved
    assert moto_missing() is None
    assert f"✓ {STAGED[1]}" in out, out
    assert re.search(r"ready +payments\.csv .*\(staged, then reported\)", out), out
    assert "processing fails: line 38: amount" in out
    assert re.search(r"settled event [0-9a-f]+ as succeeded \(action: move\)", out), out
    assert re.search(r"settled event [0-9a-f]+ as failed \(action: move\)", out), out
    assert re.search(r"moved +\S+ +to archive/\d{4}/\d\d/\d\d/payments\.csv", out), out
    assert re.search(r"moved +\S+ +to failed/refunds\.csv", out), out
    match = re.search(r"total time (\d+(?:\.\d+)?) s", out)
    assert match is not None, out
    assert float(match.group(1)) < 60
    assert wall < 60, f"the demo took {wall:.1f}s"
    assert "16 events received: all expected, nothing else" in out
    assert "Traceback" not in out + err, err
    assert err.strip() == "", err


def test_keep_running_prints_the_status_page_url(runs: dict[str, Run]) -> None:
    proc = runs["keep"].proc
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = proc.stdout.readline()
        assert line, "the demo ended without printing a status page URL:\n" + "".join(seen)
        seen.append(line)
        found = re.search(r"status page +(http://127\.0\.0\.1:\d+/)", line)
        if found:
            break
    _check_what_step_9_left(seen)
    with urllib.request.urlopen(found.group(1), timeout=10) as response:
        page = response.read().decode()
    assert "daily-master" in page and "daily-stock" in page and "ftpsource status" in page
    with urllib.request.urlopen(found.group(1) + "status.json", timeout=10) as response:
        doc = json.load(response)
    statuses = {(x["name"], x["status"]) for s in doc["sources"] for x in s["expected"]}
    assert ("daily-master", "complete") in statuses and ("daily-stock", "late") in statuses
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopping" in out


def _check_what_step_9_left(lines: list[str]) -> None:
    """The partner's drop zone and the bucket, as the demo left them: each staged object holds the
    bytes of a settled file, found under archive/ or failed/ and no longer where it was uploaded."""
    text = "".join(lines)
    drop = re.search(r"FTP user +partner, .*\(files in (\S+)\)", text)
    s3 = re.search(r"S3 server +(http://127\.0\.0\.1:\d+) +bucket (\S+), access key (\S+)", text)
    secret = re.search(r"\(secret key in (\S+)\)", text)
    assert drop and s3 and secret, text
    root = Path(drop.group(1))
    archived = list(root.glob("archive/*/*/*/payments.csv"))
    quarantined = root / "failed" / "refunds.csv"
    assert len(archived) == 1 and quarantined.is_file(), sorted(str(p) for p in root.rglob("*"))
    assert not (root / "payments.csv").exists() and not (root / "refunds.csv").exists()
    client = boto3.client(
        "s3",
        endpoint_url=s3.group(1),
        aws_access_key_id=s3.group(3),
        aws_secret_access_key=Path(secret.group(1)).read_text().strip(),
        region_name="us-east-1",
    )
    try:
        bucket = s3.group(2)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        staged = {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        client.close()
    settled = [archived[0].read_bytes(), quarantined.read_bytes()]
    # content-addressed: one object per file, named by the sha256 of exactly its bytes
    assert sorted(staged) == sorted(f"landing/sha256/{hashlib.sha256(data).hexdigest()}" for data in settled)
    assert sorted(staged.values()) == sorted(settled)
    rows, _ = process_csv(archived[0].read_bytes())
    assert rows == 400
    with pytest.raises(ValueError, match="not a number"):
        process_csv(quarantined.read_bytes())


def test_without_moto_the_s3_step_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # what an image without the dev tools has
    assert moto_missing() == "moto is not installed"
    demo = Demo(tmp_path, keep_running=False)
    assert STAGED[1] not in demo.check.titles.values()
    asyncio.run(demo.step_staged())
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [
        "9. Staged, processed, settled: skipped, moto's S3 server cannot run here (moto is not installed)"
    ]
    assert demo.check.ok


def test_demo_fails_when_a_step_goes_wrong(runs: dict[str, Run]) -> None:
    rc, out, err, _ = runs["broken"].wait()
    assert rc != 0, out
    assert "✗ 3. identical re-upload: nothing emitted" in out, out
    assert "unexpected ready event for report.csv" in out
    assert "Traceback" not in out + err, err


# -- the checklist logic itself -------------------------------------------------------------------
def _event(kind: str, path: str, eid: str, **data: Any) -> dict[str, Any]:
    return {"id": eid, "type": f"ftpsource.file.{kind}", "subject": path, "data": data}


def _checklist() -> Checklist:
    return Checklist([("a", "A"), ("b", "B")])


def test_checklist_all_expected_events_arrived() -> None:
    check = _checklist()
    check.expect("a", "ready", "x.csv", "", {"generation": 1, "checksum.value": "ab"})
    check.expect("b", "missing", "y.csv", "")
    check.active = "a"
    check.receive(_event("ready", "x.csv", "1", generation=1, checksum={"value": "ab"}))
    check.active = "b"
    check.receive(_event("missing", "y.csv", "2"))
    assert check.ok
    assert [ok for _, ok, _ in check.results()] == [True, True]


def test_checklist_an_expected_event_that_never_came_fails() -> None:
    check = _checklist()
    check.expect("a", "ready", "x.csv", "")
    check.expect("b", "ready", "y.csv", "")
    check.receive(_event("ready", "x.csv", "1"))
    assert not check.ok
    results = check.results()
    assert results[0][1] and not results[1][1]
    assert results[1][2] == ["no ready event for y.csv"]


def test_checklist_an_unexpected_event_fails_the_active_behaviour() -> None:
    check = _checklist()
    check.expect("a", "ready", "x.csv", "")
    check.active = "b"
    check.receive(_event("ready", "x.csv", "1"))
    check.receive(_event("ready", "x.csv", "2"))  # a second version nobody expected
    assert not check.ok
    assert check.results()[1][2] == ["unexpected ready event for x.csv"]


def test_checklist_outside_any_step_unexpected_events_are_reported_too() -> None:
    check = _checklist()
    check.receive(_event("deleted", "z.csv", "1"))
    assert not check.ok
    assert check.results()[-1] == ("no other events", False, ["unexpected deleted event for z.csv"])


def test_checklist_wrong_fields_and_resent_ids_fail() -> None:
    check = _checklist()
    check.expect("a", "ready", "x.csv", "", {"reason": "reupload", "generation": 2, "previous.size": 3})
    check.expect("a", "ready", "x.csv", "")
    check.active = "a"
    _, problems = check.receive(_event("ready", "x.csv", "1", reason="new", generation=2))
    assert problems == [
        "ready x.csv: reason is 'new', expected 'reupload'",
        "ready x.csv: previous.size is absent, expected 3",
    ]
    exp, problems = check.receive(_event("ready", "x.csv", "1"))  # the same event sent again
    assert exp is None and problems and "sent again" in problems[0]
    assert not check.ok
