"""Late and missing files, markers, sidecars, format checks, partial uploads — through a real gRPC stream."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ftpsource.clock import ShiftedClock
from ftpsource.store import Store
from tests.support.harness import all_delivered, eventually, run_server, stream_to

FAST = {"stable_for": "300ms", "poll_interval": "5s"}


def cfg(root: Path, **kw: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", **FAST, **kw}


def of_type(kind: str, path: str | None = None):
    def pred(e: dict[str, Any]) -> bool:
        key = "expected_path" if kind == "missing" else "path"
        return e["type"] == f"ftpsource.file.{kind}" and (path is None or e["data"].get(key) == path)

    return pred


def next_deadline(clock: ShiftedClock) -> datetime:
    """The next */10-minute boundary after the clock's now (UTC)."""
    now = clock()
    return datetime.fromtimestamp(now - now % 600 + 600, UTC)


async def test_missing_once_across_restart_then_late_arrival(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    expect = [{"path": "sales_%Y%m%d_%H%M.csv", "schedule": "*/10 * * * *", "grace": "1m"}]
    config = cfg(root, expect=expect)
    deadline = next_deadline(clock)
    name = deadline.strftime("sales_%Y%m%d_%H%M.csv")
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        (root / "unrelated").write_bytes(b"u")
        await stream.until(of_type("ready", "unrelated"))
        clock.advance(deadline.timestamp() - clock() + 61)  # past the deadline plus grace
        srv.app.wake_all()
        missing = await stream.until(of_type("missing"))
        assert missing["data"]["expected_path"] == name
        assert missing["data"]["deadline"] == deadline.isoformat().replace("+00:00", "Z")
        assert missing["data"]["period"].startswith(deadline.strftime("%Y-%m-%dT%H:%M"))
        await all_delivered(srv)
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        (root / name).write_bytes(b"finally\n")
        late = await stream.until(of_type("ready", name))
        assert late["data"]["late"] is True and late["data"]["late_seconds"] >= 61
        assert late["data"]["deadline"] == missing["data"]["deadline"]
        assert not [e for e in stream.received if e["type"] == "ftpsource.file.missing"]
        store = Store.open_read_only(srv.app.settings.state)
        (source,) = store.list_sources()
        assert [h.type for h in store.history(source.id, name)] == ["missing", "ready"]
        store.close()


async def test_deadline_passing_while_down_is_emitted_on_start(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    config = cfg(root, expect=[{"path": "x_%H%M.csv", "schedule": "*/10 * * * *"}])
    deadline = next_deadline(clock)
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        (root / "warmup").write_bytes(b"w")
        await stream.until(of_type("ready", "warmup"))
    clock.advance(deadline.timestamp() - clock() + 5)  # the deadline passes while the server is down
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        missing = await stream.until(of_type("missing"))
        assert missing["data"]["expected_path"] == deadline.strftime("x_%H%M.csv")


async def test_on_time_file_carries_deadline_and_late_false(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    deadline = next_deadline(clock)
    name = deadline.strftime("d_%H%M.csv")
    config = cfg(root, expect=[{"path": "d_%H%M.csv", "schedule": "*/10 * * * *"}])
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        (root / name).write_bytes(b"early")
        ev = await stream.until(of_type("ready", name))
        assert ev["data"]["late"] is False and ev["data"]["late_seconds"] is None
        assert ev["data"]["deadline"] == deadline.isoformat().replace("+00:00", "Z")


async def test_marker_arriving_after_its_file(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root, marker="{path}.done")) as stream:
        (root / "data.csv").write_bytes(b"a,b\n")
        (root / "other.csv").write_bytes(b"o")
        (root / "other.csv.done").write_bytes(b"")
        await stream.until(of_type("ready", "other.csv"))
        assert not [e for e in stream.received if e["data"]["path"] == "data.csv"]
        (root / "data.csv.done").write_bytes(b"")
        ev = await stream.until(of_type("ready", "data.csv"))
        assert ev["data"]["generation"] == 1
        assert all(not e["data"]["path"].endswith(".done") for e in stream.received)


async def test_directory_marker_releases_the_directory(tmp_path: Path, root: Path) -> None:
    (root / "batch").mkdir()
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root, marker="{dir}/_SUCCESS")) as stream:
        for i in range(3):
            (root / "batch" / f"part-{i}.csv").write_bytes(b"part %d" % i)
        (root / "batch" / "_SUCCESS").write_bytes(b"")
        got = {(await stream.next())["data"]["path"] for _ in range(3)}
        assert got == {f"batch/part-{i}.csv" for i in range(3)}


async def test_sidecar_mismatch_then_corrected_upload(tmp_path: Path, root: Path) -> None:
    good = b"id,amount\n1,10\n2,20\n"
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root, sidecar="{path}.sha256")) as stream:
        (root / "t.csv").write_bytes(b"id,amount\n1,10\n")  # partial
        (root / "t.csv.sha256").write_text(f"{hashlib.sha256(good).hexdigest()}  t.csv\n")
        (root / "sentinel").write_bytes(b"s")
        (root / "sentinel.sha256").write_text(f"{hashlib.sha256(b's').hexdigest()}  sentinel\n")
        await stream.until(of_type("ready", "sentinel"))
        assert not [e for e in stream.received if e["data"]["path"] == "t.csv"]
        (root / "t.csv").write_bytes(good)
        ev = await stream.until(of_type("ready", "t.csv"))
        assert ev["data"]["checksum"]["value"] == hashlib.sha256(good).hexdigest()
        assert (ev["data"]["reason"], ev["data"]["generation"]) == ("new", 1)


async def test_sidecar_mismatch_is_rejected_once_after_reject_after(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    config = cfg(root, sidecar="{path}.md5", reject_after="10m")
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        (root / "bad.csv").write_bytes(b"bytes")
        (root / "bad.csv.md5").write_text("0" * 32 + "  bad.csv\n")
        (root / "sentinel").write_bytes(b"s")
        (root / "sentinel.md5").write_text(hashlib.md5(b"s").hexdigest() + "  sentinel\n")
        await stream.until(of_type("ready", "sentinel"))
        await _wait_problem(srv, "bad.csv")
        clock.advance(601)
        srv.app.wake_all()
        ev = await stream.until(of_type("rejected", "bad.csv"))
        assert "mismatch" in ev["data"]["problem"] and "bad.csv.md5" in ev["data"]["problem"]
        clock.advance(3600)
        srv.app.wake_all()
        (root / "sentinel2").write_bytes(b"s2")
        (root / "sentinel2.md5").write_text(hashlib.md5(b"s2").hexdigest() + "\n")
        await stream.until(of_type("ready", "sentinel2"))
        assert len([e for e in stream.received if e["type"] == "ftpsource.file.rejected"]) == 1


async def test_unparseable_sidecar_is_a_warning_naming_the_file(
    tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root, sidecar="{path}.sha256")) as stream:
        (root / "x.csv").write_bytes(b"x")
        (root / "x.csv.sha256").write_text("this is not a checksum\n")
        (root / "ok").write_bytes(b"o")
        (root / "ok.sha256").write_text(hashlib.sha256(b"o").hexdigest() + "\n")
        await stream.until(of_type("ready", "ok"))
        await _wait_problem(srv, "x.csv")
    assert any("x.csv.sha256" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


async def test_truncated_gzip_then_the_full_one(tmp_path: Path, root: Path) -> None:
    full = gzip.compress(os.urandom(50_000))
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "data.gz").write_bytes(full[: len(full) // 2])  # an upload cut off part-way
        (root / "sentinel").write_bytes(b"s")
        await stream.until(of_type("ready", "sentinel"))
        await _wait_problem(srv, "data.gz")
        assert not [e for e in stream.received if e["data"]["path"] == "data.gz"]
        (root / "data.gz").write_bytes(full)
        ev = await stream.until(of_type("ready", "data.gz"))
        assert (ev["data"]["reason"], ev["data"]["generation"], ev["data"]["size"]) == ("new", 1, len(full))


async def test_partial_without_signals_then_complete_is_a_reupload(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "data.csv").write_bytes(b"id\n1\n")  # stable but truncated: nothing can tell
        first = await stream.until(of_type("ready", "data.csv"))
        (root / "data.csv").write_bytes(b"id\n1\n2\n3\n")
        second = await stream.until(of_type("ready", "data.csv"))
        assert (first["data"]["generation"], second["data"]["generation"]) == (1, 2)
        assert second["data"]["reason"] == "reupload"
        assert second["data"]["previous"]["size"] == first["data"]["size"]


async def test_old_mtime_file_added_after_newer_ones(tmp_path: Path, root: Path) -> None:
    async with run_server(tmp_path) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "new.csv").write_bytes(b"n")
        await stream.until(of_type("ready", "new.csv"))
        old = root / "old.csv"
        old.write_bytes(b"o")
        os.utime(old, (time.time() - 86400 * 365, time.time() - 86400 * 365))  # like rsync -t
        ev = await stream.until(of_type("ready", "old.csv"))
        assert ev["data"]["mtime"].startswith(str(datetime.now(UTC).year - 1))


async def _wait_problem(srv: Any, path: str) -> None:
    from ftpsource.store import Store
    from tests.support.harness import eventually

    def has_problem() -> bool:
        store = Store.open_read_only(srv.app.settings.state)
        try:
            return any(
                (r := store.get_record(s.id, path)) is not None and r.problem is not None for s in store.list_sources()
            )
        finally:
            store.close()

    await eventually(has_problem, what=f"{path} to fail verification")


async def test_a_rule_added_to_a_year_old_source_checks_no_past_deadlines(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, cfg(root)) as stream:
        (root / "warmup").write_bytes(b"w")
        await stream.until(of_type("ready", "warmup"))
        await all_delivered(srv)
    clock.advance(365 * 86400)  # a year later, a daily rule is added
    deadline = next_deadline(clock)
    config = cfg(root, expect=[{"path": "d_%Y%m%d_%H%M.csv", "schedule": "*/10 * * * *"}])
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config) as stream:
        await eventually(
            lambda: any(s.watcher is not None and s.watcher.polled.is_set() for s in srv.app.sessions.all()),
            what="the first poll with the rule",
        )
        clock.advance(deadline.timestamp() - clock() + 5)  # its first deadline passes
        srv.app.wake_all()
        missing = await stream.until(of_type("missing"))
        assert missing["data"]["expected_path"] == deadline.strftime("d_%Y%m%d_%H%M.csv")
        await all_delivered(srv)
        assert [e for e in stream.received if e["type"] == "ftpsource.file.missing"] == [missing]
