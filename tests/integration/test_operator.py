"""``ftpsource check`` and ``ftpsource state``, run through the real CLI against real sources and a real server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftpsource.cli import main
from ftpsource.commands.output import PROGRESS_EVERY, Progress
from tests.support.harness import REPO, eventually, run_server, stream_to

OLD = time.time() - 3600


def write(path: Path, data: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def config_file(tmp: Path, cfg: dict[str, Any], name: str = "source.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    # cli.main points the "ftpsource" logger at the captured stderr of the test that called it.
    logger = logging.getLogger("ftpsource")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:], logger.propagate = saved[0], saved[2]
    logger.setLevel(saved[1])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def arun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``run`` from async tests: the CLI runs its own event loop, so it gets a thread. The in-process
    server logs through the same ``ftpsource`` logger, so only errors are logged."""
    code = await asyncio.to_thread(main, [*argv, "--log-level", "ERROR"])
    out, err = capsys.readouterr()
    return code, out, err


def status_of(out: str, path: str) -> str:
    """The STATUS column of ``path``'s row in check's table."""
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[0] == path:
            return fields[3]
    raise AssertionError(f"{path} not in the table:\n{out}")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir()) if p.is_file()}


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- check against a local directory ----------------------------------------------------------------


def test_check_shows_each_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "old.csv", "a,b\n1,2\n", OLD)
    write(root / "fresh.csv", "a,b\n")
    write(root / "upload.csv.part", "a,", OLD)
    write(root / "empty.csv", "", OLD)
    write(root / "sub" / "deep.csv", "x\n", OLD)
    cfg = config_file(tmp_path, {"url": f"file://{root}", "stable_for": "30s"})

    code, out, err = run(capsys, "check", cfg)

    assert code == 0, err
    assert status_of(out, "old.csv") == "complete, would emit (new)"
    assert status_of(out, "sub/deep.csv") == "complete, would emit (new)"
    assert status_of(out, "fresh.csv").startswith("pending (stable for ")
    assert status_of(out, "fresh.csv").endswith(" of 30s)")
    assert status_of(out, "upload.csv.part") == "ignored (excluded by pattern **/*.part)"
    assert status_of(out, "empty.csv") == "too small (min_size 1)"
    assert "a file counts as stable once unchanged for stable_for since its mtime" in out
    assert "summary: 1 file listed" not in out
    last = out.strip().splitlines()[-1]
    assert last == "summary: 5 files listed: 2 would emit, 1 pending, 1 too small, 1 ignored"


def test_check_marker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "done.csv", "1\n", OLD)
    write(root / "done.csv.done", "", OLD)
    write(root / "waiting.csv", "2\n", OLD)
    write(root / "orphan.csv.done", "")
    cfg = config_file(tmp_path, {"url": f"file://{root}", "marker": "{path}.done"})

    code, out, err = run(capsys, "check", cfg)

    assert code == 0, err
    assert status_of(out, "done.csv") == "complete, would emit (new)"
    assert status_of(out, "done.csv.done") == "marker for done.csv"
    assert status_of(out, "waiting.csv") == "waiting for marker waiting.csv.done"
    assert status_of(out, "orphan.csv.done") == "marker (no matching file)"


def test_check_sidecar_and_hash_find_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    root = tmp_path / "in"
    good, bad = b"good bytes\n", b"bad bytes\n"
    write(root / "good.csv", good, OLD)
    write(root / "good.csv.sha256", f"{hashlib.sha256(good).hexdigest()}  good.csv\n", OLD)
    write(root / "bad.csv", bad, OLD)
    write(root / "bad.csv.sha256", f"{hashlib.sha256(b'other').hexdigest()}  bad.csv\n", OLD)
    write(root / "lonely.csv", "x\n", OLD)
    cfg = config_file(tmp_path, {"url": f"file://{root}", "sidecar": "{path}.sha256"})

    code, out, _ = run(capsys, "check", cfg)
    assert code == 0
    assert status_of(out, "lonely.csv") == "waiting for sidecar lonely.csv.sha256"
    assert status_of(out, "good.csv.sha256") == "sidecar for good.csv"
    assert status_of(out, "bad.csv") == "complete, would emit (new)"  # not read without --hash

    code, out, _ = run(capsys, "check", cfg, "--hash")
    assert code == 1, "a file failing verification is a problem"
    assert status_of(out, "good.csv") == "complete, would emit (new)"
    assert status_of(out, "bad.csv").startswith("pending, failed verification: sha256 mismatch with sidecar")


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "1\n", OLD)
    write(root / ".hidden", "1\n", OLD)
    cfg = config_file(tmp_path, {"url": f"file://{root}", "id": "src"})

    code, out, _ = run(capsys, "check", cfg, "--json")

    assert code == 0
    doc = json.loads(out)
    assert doc["source"] == {
        "url": f"file://{root}",
        "id": "src",
        "first_start": True,
        "state": "none given: decided as on a first start",
    }
    assert {f["path"]: f["kind"] for f in doc["files"]} == {"a.csv": "emit", ".hidden": "ignored"}
    assert doc["summary"] == {"emit": 1, "ignored": 1}
    assert doc["problems"] == 0


def test_check_existing_skip_on_first_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "1\n", OLD)
    cfg = config_file(tmp_path, {"url": f"file://{root}", "existing": "skip"})

    code, out, _ = run(capsys, "check", cfg)

    assert code == 0
    assert status_of(out, "a.csv").startswith("skipped (already there at the source's first start")


def test_check_with_missing_state_file_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "1\n", OLD)
    cfg = config_file(tmp_path, {"url": f"file://{root}"})
    state_dir = tmp_path / "state"
    state_dir.mkdir()

    code, out, _ = run(capsys, "check", cfg, "--state", str(state_dir / "ftpsource.db"))

    assert code == 0
    assert f"no state file at {state_dir / 'ftpsource.db'}: decided as on a first start" in out
    assert status_of(out, "a.csv") == "complete, would emit (new)"
    assert list(state_dir.iterdir()) == []


def test_progress_off_a_terminal_writes_a_line_per_ten_thousand_files() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    for n in range(64, 3 * PROGRESS_EVERY, 64):  # counted in batches, as hashing does
        progress.count("hashed", n, 3 * PROGRESS_EVERY)
    progress.line("listed 5 files in 0.1s", only_tty=True)
    assert stream.getvalue() == "hashed 10048 of 30000 files…\nhashed 20032 of 30000 files…\n"


# --- check: problems exit non-zero with one line --------------------------------------------------


def test_check_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_file(tmp_path, {"url": f"file://{tmp_path / 'nope'}"})
    code, out, err = run(capsys, "check", cfg)
    assert out == ""
    assert_one_line_error(code, err, "ftpsource check:", "does not exist", str(tmp_path / "nope"))


def test_check_invalid_config_names_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_file(tmp_path, {"url": f"file://{tmp_path}", "stable_for": "abc", "colour": "blue"})
    code, _, err = run(capsys, "check", cfg)
    assert_one_line_error(code, err, "stable_for: invalid duration 'abc'", "colour: unknown key", "source.yaml")


def test_check_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "absent.yaml"))
    assert_one_line_error(code, err, "absent.yaml", "cannot read config file")


def test_check_missing_credential_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_file(tmp_path, {"url": f"file://{tmp_path}", "credentials": "ops"})
    code, _, err = run(capsys, "check", cfg, "--credentials-dir", str(tmp_path))
    assert_one_line_error(code, err, "no credential set 'ops'")


def test_check_not_a_state_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in").mkdir()
    cfg = config_file(tmp_path, {"url": f"file://{tmp_path / 'in'}"})
    junk = write(tmp_path / "junk.db", "this is not sqlite" * 100)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "check", cfg, "--state", str(junk))
    assert_one_line_error(code, err, "is not an ftpsource state file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"url": "file:///nonexistent/ftpsource-root"}, "root directory /nonexistent/ftpsource-root does not exist"),
        ({"url": "file:///tmp", "poll_interval": "soon"}, "poll_interval: invalid duration 'soon'"),
    ],
)
def test_check_subprocess_prints_one_line_and_no_traceback(tmp_path: Path, cfg: dict[str, Any], needle: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ftpsource.cli", "check", config_file(tmp_path, cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert needle in proc.stderr
    assert proc.stdout == ""


# --- check and state after a real run ------------------------------------------------------------


async def produce_ready(tmp_path: Path, cfg: dict[str, Any], *paths: str) -> None:
    """Run the real server until it has streamed a ready event for each of ``paths``."""
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg) as stream:
        for _ in paths:
            ev = await stream.until(lambda e: e["type"] == "ftpsource.file.ready")
            assert ev["data"]["path"] in paths


def live_config(root: Path, **extra: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", "stable_for": "300ms", "poll_interval": "1s", **extra}


async def test_check_after_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "a,b\n1,2\n", OLD)
    write(root / "b.csv", "b\n", OLD)
    cfg = live_config(root)
    await produce_ready(tmp_path, cfg, "a.csv", "b.csv")
    write(root / "c.csv", "c\n", OLD)  # arrived after the run
    path = config_file(tmp_path, cfg)
    state = tmp_path / "state.db"
    before = snapshot(tmp_path)

    # The harness streams under the event name "files"; with no --name the source is found by its URL.
    for extra in ([], ["--name", "files"]):
        code, out, err = await arun(capsys, "check", path, "--state", str(state), *extra)
        assert code == 0, err
        assert status_of(out, "a.csv") == "complete, already reported (generation 1)"
        assert status_of(out, "c.csv") == "complete, would emit (new)"
        assert "2 records" in out

    # A new upload of a.csv (new bytes) and a touch of b.csv (same bytes, new mtime).
    write(root / "a.csv", "a,b\n1,2\n3,4\n", OLD + 60)
    os.utime(root / "b.csv", (OLD + 60, OLD + 60))
    code, out, _ = await arun(capsys, "check", path, "--state", str(state))
    assert status_of(out, "a.csv") == "complete, changed since generation 1 (would re-verify)"
    assert status_of(out, "b.csv") == "complete, changed since generation 1 (would re-verify)"
    code, out, _ = await arun(capsys, "check", path, "--state", str(state), "--hash")
    assert code == 0
    assert status_of(out, "a.csv") == "complete, would emit (reupload, generation 2)"
    assert status_of(out, "b.csv") == "complete, already reported (generation 1; same bytes)"
    assert status_of(out, "c.csv") == "complete, would emit (new)"

    (root / "b.csv").unlink()
    code, out, _ = await arun(capsys, "check", path, "--state", str(state), "--json")
    files = {f["path"]: f for f in json.loads(out)["files"]}
    assert files["b.csv"]["status"] == "gone (reported as generation 1; no longer listed)"

    # An unknown event name: decided as on a first start.
    code, out, _ = await arun(capsys, "check", path, "--state", str(state), "--name", "other")
    assert status_of(out, "a.csv") == "complete, would emit (new)"

    assert snapshot(tmp_path) == before, "check must not touch the state file"


async def test_check_reads_state_while_the_server_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "1\n", OLD)
    cfg = live_config(root, id="live")
    path = config_file(tmp_path, cfg)
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg) as stream:
        await stream.until(lambda e: e["data"]["path"] == "a.csv")
        state_file = tmp_path / "state.db"
        db_before = state_file.read_bytes()
        code, out, _ = await arun(capsys, "check", path, "--state", str(state_file))
        assert code == 0
        assert status_of(out, "a.csv") == "complete, already reported (generation 1)"
        assert state_file.read_bytes() == db_before


async def all_delivered(srv: Any, source_id: str) -> None:
    """Events are marked delivered just after they are written; wait for that before closing a stream."""
    store = srv.app.store.sync
    await eventually(lambda: store.undelivered_count(source_id) == 0, what="events marked delivered")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_state_list_show_forget_and_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, request: pytest.FixtureRequest
) -> None:
    root = tmp_path / "in"
    write(root / "a.csv", "a\n1\n", OLD)
    write(root / "b.csv", "b\n2\n", OLD)
    cfg = live_config(root, id="sales")
    if backend == "postgres":
        db = request.getfixturevalue("pg_db")
        server_state: dict[str, Any] = {"state": db.url, "state_password_file": db.password_file}
        st = ["--state", db.url, "--state-password-file", str(db.password_file)]
    else:
        server_state = {}
        st = ["--state", str(tmp_path / "state.db")]
    async with run_server(tmp_path, **server_state) as srv:
        async with stream_to(srv.port, cfg) as stream:
            first = {(await stream.next())["data"]["path"] for _ in range(2)}
            assert first == {"a.csv", "b.csv"}
            await all_delivered(srv, "sales")

        code, out, _ = await arun(capsys, "state", *st, "list")
        assert code == 0
        header, row = out.splitlines()
        assert header.split()[:5] == ["SOURCE", "URL", "FILES", "PENDING", "UNDELIVERED"]
        assert row.split()[:5] == ["sales", f"file://{root}", "2", "0", "0"]

        code, out, _ = await arun(capsys, "state", "list", *st, "--json")
        (listed,) = json.loads(out)
        assert listed["id"] == "sales" and listed["files"] == 2 and listed["last_error"] is None
        assert listed["last_ok_poll"] is not None

        code, out, _ = await arun(capsys, "state", *st, "show", "sales", "a.csv")
        assert code == 0
        assert "state         ready" in out
        assert "generation    1" in out
        assert "history: 1 event" in out
        assert "ready" in out.splitlines()[-1] and "new" in out.splitlines()[-1]

        code, out, _ = await arun(capsys, "state", *st, "show", "sales", "a.csv", "--json")
        shown = json.loads(out)
        assert shown["record"]["state"] == "ready" and shown["record"]["generation"] == 1
        (event,) = shown["history"]
        assert event["type"] == "ready" and event["reason"] == "new" and event["delivered"] is not None
        assert event["checksum"] == shown["record"]["checksum"]

        code, _, err = await arun(capsys, "state", *st, "show", "nosuch", "a.csv")
        assert_one_line_error(code, err, "source 'nosuch'", "sales")
        code, _, err = await arun(capsys, "state", *st, "show", "sales", "a.cvs")
        assert_one_line_error(code, err, "path 'a.cvs'", "did you mean 'a.csv'")
        code, _, err = await arun(capsys, "state", *st, "forget", "sales", "zzz.csv")
        assert_one_line_error(code, err, "path 'zzz.csv'")
        code, _, err = await arun(capsys, "state", *st, "forget", "sales", "--all-files")
        assert_one_line_error(code, err, "--yes")

        code, out, _ = await arun(capsys, "state", *st, "forget", "sales", "a.csv")
        assert code == 0
        assert "forgot a.csv of source sales (was ready, generation 1)" in out

        code, out, _ = await arun(capsys, "state", *st, "show", "sales", "a.csv")
        assert "record        none" in out
        assert "history: 1 event" in out

        # The documented replay: the next stream reports the forgotten file again, and only it.
        async with stream_to(srv.port, cfg) as stream:
            ev = await stream.next()
            assert ev["data"]["path"] == "a.csv"
            assert ev["data"]["reason"] == "new" and ev["data"]["generation"] == 1
            await all_delivered(srv, "sales")
            with pytest.raises(AssertionError, match="no event within"):
                await stream.next(timeout=1.5)  # b.csv, not forgotten, stays reported

        code, out, _ = await arun(capsys, "state", *st, "forget", "sales", "--all-files", "--yes")
        assert "forgot 2 file records of source sales" in out
        async with stream_to(srv.port, cfg) as stream:
            again = {(await stream.next())["data"]["path"] for _ in range(2)}
            assert again == {"a.csv", "b.csv"}

    code, _, err = await arun(capsys, "state", *st, "forget", "sales")
    assert_one_line_error(code, err, "--yes", "source 'sales' entirely")
    code, out, _ = await arun(capsys, "state", *st, "forget", "sales", "--yes")
    assert "forgot source sales: 2 file records" in out
    code, out, _ = await arun(capsys, "state", *st, "list", "--json")
    (reset,) = json.loads(out)
    assert reset["id"] == "sales" and reset["files"] == 0  # kept, with a fresh start and a new revision


def test_state_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "none.db"
    for argv in (["list"], ["show", "s", "a.csv"], ["forget", "s", "a.csv"]):
        code, _, err = run(capsys, "state", "--state", str(state), *argv)
        assert_one_line_error(code, err, f"no state file at {state}")
    assert list(tmp_path.iterdir()) == []


def test_state_missing_file_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ftpsource.cli", "state", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "FTPSOURCE_STATE": ""},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "ftpsource state: no state file at ftpsource.db"
    assert list(tmp_path.iterdir()) == []


# --- check against a real FTP server ----------------------------------------------------------------


async def test_check_real_ftp_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ftpsource.adapters.ftp", reason="the FTP adapter is not built yet")
    from tests.support.servers import pyftpdlib_server

    async with pyftpdlib_server() as ftp:
        write(ftp.root / "old.csv", "1\n", OLD)
        write(ftp.root / "skip.tmp", "1\n", OLD)
        creds = tmp_path / "creds" / "ftp"
        creds.mkdir(parents=True)
        (creds / "password").write_text(ftp.password)
        (creds / "hosts").write_text(ftp.host)
        cfg = config_file(tmp_path, {"url": ftp.url(), "credentials": "ftp"})

        code, out, err = await arun(capsys, "check", cfg, "--credentials-dir", str(tmp_path / "creds"))
        assert code == 0, err
        assert status_of(out, "old.csv") == "complete, would emit (new)"
        assert status_of(out, "skip.tmp") == "ignored (excluded by pattern **/*.tmp)"

        (creds / "password").write_text("wrong")
        code, _, err = await arun(capsys, "check", cfg, "--credentials-dir", str(tmp_path / "creds"))
        assert_one_line_error(code, err, f"{ftp.host}:{ftp.port}")

    code, _, err = await arun(capsys, "check", cfg, "--credentials-dir", str(tmp_path / "creds"))
    assert_one_line_error(code, err, f"{ftp.host}:{ftp.port}")  # the server is gone


async def test_check_real_sftp_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ftpsource.adapters.sftp", reason="the SFTP adapter is not built yet")
    from tests.support.servers import asyncssh_server

    async with asyncssh_server() as sftp:
        write(sftp.root / "old.csv", "1\n", OLD)
        write(sftp.root / "new.csv", "1\n")
        creds = tmp_path / "creds" / "ssh"
        creds.mkdir(parents=True)
        (creds / "password").write_text(sftp.password)
        (creds / "hosts").write_text(f"{sftp.host}:{sftp.port}")
        pinned = config_file(tmp_path, {"url": sftp.url(), "credentials": "ssh", "host_key": sftp.fingerprint})
        unpinned = config_file(tmp_path, {"url": sftp.url(), "credentials": "ssh"}, "unpinned.yaml")

        code, out, err = await arun(capsys, "check", pinned, "--credentials-dir", str(tmp_path / "creds"), "--hash")
        assert code == 0, err
        assert status_of(out, "old.csv") == "complete, would emit (new)"
        assert status_of(out, "new.csv").startswith("pending (stable for ")

        code, _, err = await arun(capsys, "check", unpinned, "--credentials-dir", str(tmp_path / "creds"))
        assert_one_line_error(code, err, "host key")


async def test_forget_reaches_a_running_stream_and_replays_with_a_new_id(tmp_path: Path) -> None:
    from ftpsource.store import Store
    from tests.support.harness import all_delivered, run_server, stream_to

    root = tmp_path / "live"
    root.mkdir()
    (root / "a.csv").write_bytes(b"1")
    async with (
        run_server(tmp_path) as srv,
        stream_to(srv.port, {"url": f"file://{root}", "stable_for": "200ms", "poll_interval": "300ms"}) as stream,
    ):
        first = await stream.next()
        await all_delivered(srv)
        store = Store(srv.app.settings.state)
        (source,) = store.list_sources()
        store.forget(source.id, "a.csv")
        store.close()
        replay = await stream.next()
        assert replay["data"]["path"] == "a.csv" and replay["data"]["generation"] == 1
        assert replay["id"] != first["id"]
