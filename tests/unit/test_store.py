from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpsource.core.model import FileRecord, SetPeriod, State
from ftpsource.errors import StateError
from ftpsource.store import NewEvent, Store


def rec(path: str, state: State = State.PENDING, **kw: object) -> FileRecord:
    return FileRecord(path, 1, 2.0, state, 3.0, 4.0, **kw)  # type: ignore[arg-type]


def test_records_and_outbox_commit_together(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    first, _ = s.begin_source("src", "file:///x", 1.0)
    assert first
    s.commit(
        "src",
        [rec("a", State.READY, generation=1, ready_checksum="c")],
        (),
        [NewEvent("id1", "ready", "a", b"{}")],
        now=5.0,
        initialized=True,
    )
    assert s.load_records("src")["a"].ready_checksum == "c"
    rows = s.undelivered("src")
    assert [r.event_id for r in rows] == ["id1"]
    s.mark_delivered([rows[0].seq], 6.0)
    assert s.undelivered("src") == [] and s.undelivered_count("src") == 0
    assert [h.event_id for h in s.history("src", "a")] == ["id1"]
    s.close()
    s2 = Store(tmp_path / "s.db")
    assert s2.begin_source("src", "file:///x", 9.0) == (False, 1.0)
    assert s2.load_records("src")["a"].state is State.READY


def test_first_start_lasts_until_first_poll_commits(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    assert s.begin_source("src", "u", 1.0)[0]
    assert s.begin_source("src", "u", 2.0)[0]  # crashed before the first poll committed
    s.commit("src", now=3.0, initialized=True)
    assert not s.begin_source("src", "u", 4.0)[0]


def test_full_disk_rolls_back_and_names_the_problem(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    s.begin_source("src", "u", 1.0)
    # SQLite reports SQLITE_FULL exactly as for a full disk once the page limit is reached.
    s._db.execute("PRAGMA max_page_count = 8")
    big = [rec(f"p{i:05d}", problem="x" * 500) for i in range(200)]
    with pytest.raises(StateError, match="disk full"):
        s.commit("src", big, (), [NewEvent("e", "ready", "p00000", b"x" * 1000)], now=2.0)
    s._db.execute("PRAGMA max_page_count = 1073741823")
    assert s.load_records("src") == {} and s.undelivered("src") == []  # nothing half-written


def test_unwritable_directory_is_a_clear_startup_error(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        if os.access(d, os.W_OK):
            pytest.skip("running with CAP_DAC_OVERRIDE; permission bits are not enforced")
        with pytest.raises(StateError, match="not writable"):
            Store(d / "s.db")
    finally:
        d.chmod(0o700)


def test_missing_directory_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        Store(tmp_path / "nope" / "s.db")


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not an ftpsource SQLite database"):
        Store(p)


def test_forget_path_and_source(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    s.begin_source("src", "u", 1.0)
    s.commit("src", [rec("a", State.READY), rec("b", State.READY)], (), [NewEvent("e", "ready", "a", b"{}")])
    assert s.forget("src", "a") == 1
    assert set(s.load_records("src")) == {"b"}
    assert s.revision("src") == 1
    assert s.forget("src") == 1
    assert s.load_records("src") == {} and s.undelivered("src") == []
    assert s.revision("src") == 2
    assert s.begin_source("src", "u", 9.0)[0]  # the next start is a first start again


def test_set_periods_persist_and_go_with_the_source(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    s.begin_source("src", "u", 1.0)
    done = SetPeriod("k", "2026-11-26T06:00:00+00:00", "daily", 5.0, "complete", 2, (("a.csv", 1), ("b.csv", 2)))
    waiting = SetPeriod("k", "2026-11-27T06:00:00+00:00", "daily", 6.0, "open")
    s.commit("src", sets=[done, waiting])
    s.close()
    s = Store(tmp_path / "s.db")
    assert s.load_sets("src") == [done, waiting]
    s.commit("src", sets_dropped=[done])
    assert s.load_sets("src") == [waiting]
    s.forget("src")
    assert s.load_sets("src") == []


def test_wal_mode(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real small or read-only filesystem (needs root); skips where mounting is not allowed."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_filesystem_is_a_clear_startup_error(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as d, pytest.raises(StateError, match="not writable"):
        Store(d / "s.db")


def test_real_full_disk(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=256k") as d:
        s = Store(d / "s.db")
        s.begin_source("src", "u", 1.0)
        s.commit("src", [rec("keep", State.READY)], (), [NewEvent("k", "ready", "keep", b"{}")], now=1.0)
        big = [rec(f"p{i:05d}", problem="x" * 2000) for i in range(400)]
        with pytest.raises(StateError, match="disk full"):
            s.commit("src", big, (), [NewEvent("e", "ready", "p00000", b"y" * 10000)], now=2.0)
        assert set(s.load_records("src")) == {"keep"}
        assert [r.event_id for r in s.undelivered("src")] == ["k"]
        s.close()


def test_a_newer_schema_is_refused_not_misread(tmp_path: Path) -> None:
    Store(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(StateError, match="newer ftpsource"):
        Store(tmp_path / "s.db")
    with pytest.raises(StateError, match="newer ftpsource"):
        Store.open_read_only(tmp_path / "s.db")
