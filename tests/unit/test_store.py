from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from ftpsource.core.model import FileRecord, SetPeriod, State
from ftpsource.errors import LeaseLost, StateError
from ftpsource.store import (
    SCHEMA_VERSION,
    NewEvent,
    PostgresStore,
    StateStore,
    Store,
    open_store,
    open_store_read_only,
    redact_url,
)
from ftpsource.store.retention import PRUNE_OUTBOX, PRUNE_TOMBSTONES, PRUNE_VERSIONS
from ftpsource.store.versions import UNSETTLED
from tests.support.postgres import PgDatabase, PostgresCluster

Opener = Callable[[], StateStore]


def rec(path: str, state: State = State.PENDING, **kw: object) -> FileRecord:
    return FileRecord(path, 1, 2.0, state, 3.0, 4.0, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path | None]:
    """Where a store lives, for each backend: a file path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "s.db"), None
    db = request.getfixturevalue("pg_db")
    return db.url, db.password_file


@pytest.fixture
def opener(location: tuple[str, Path | None]) -> Iterator[Opener]:
    """Opens (and, the first time, creates) the store at ``location``; each call is a new connection,
    closed after the test."""
    opened: list[StateStore] = []

    def open_one() -> StateStore:
        opened.append(open_store(*location))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def test_records_and_outbox_commit_together(opener: Opener) -> None:
    s = opener()
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
    s2 = opener()
    assert s2.begin_source("src", "file:///x", 9.0) == (False, 1.0)
    assert s2.load_records("src")["a"].state is State.READY
    s2.close()


def test_first_start_lasts_until_first_poll_commits(opener: Opener) -> None:
    s = opener()
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


def test_forget_path_and_source(opener: Opener) -> None:
    s = opener()
    s.begin_source("src", "u", 1.0)
    s.commit("src", [rec("a", State.READY), rec("b", State.READY)], (), [NewEvent("e", "ready", "a", b"{}")])
    assert s.forget("src", "a") == 1
    assert set(s.load_records("src")) == {"b"}
    assert s.revision("src") == 1
    assert s.forget("src") == 1
    assert s.load_records("src") == {} and s.undelivered("src") == []
    assert s.revision("src") == 2
    assert s.begin_source("src", "u", 9.0)[0]  # the next start is a first start again


def test_set_periods_persist_and_go_with_the_source(opener: Opener) -> None:
    s = opener()
    s.begin_source("src", "u", 1.0)
    done = SetPeriod("k", "2026-11-26T06:00:00+00:00", "daily", 5.0, "complete", 2, (("a.csv", 1), ("b.csv", 2)))
    waiting = SetPeriod("k", "2026-11-27T06:00:00+00:00", "daily", 6.0, "open")
    s.commit("src", sets=[done, waiting])
    s.close()
    s = opener()
    assert s.load_sets("src") == [done, waiting]
    s.commit("src", sets_dropped=[done])
    assert s.load_sets("src") == [waiting]
    s.forget("src")
    assert s.load_sets("src") == []


def test_recent_events_of_every_source_newest_first(opener: Opener) -> None:
    s = opener()
    for sid in ("a", "b"):
        s.begin_source(sid, "u", 1.0)
    s.commit("a", events=[NewEvent("e1", "ready", "x.csv", b"{}")], now=1.0)
    s.commit("b", events=[NewEvent("e2", "set_complete", "daily", b"{}")], now=2.0)
    s.commit("a", events=[NewEvent("e3", "missing", "y.csv", b"{}")], now=3.0)
    s.mark_delivered([r.seq for r in s.undelivered("a")][:1], 4.0)
    recent = s.recent_events(2)
    assert [(e.source_id, e.event_id, e.type, e.path, e.created) for e in recent] == [
        ("a", "e3", "missing", "y.csv", 3.0),
        ("b", "e2", "set_complete", "daily", 2.0),
    ]
    assert s.recent_events(5)[-1].delivered == 4.0


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


def _set_schema(location: tuple[str, Path | None], version: str, pg_db: object = None) -> None:
    url, password_file = location
    if password_file is None:
        with sqlite3.connect(url) as db:
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (version,))
        return
    with psycopg.connect(url, password=password_file.read_text().strip(), autocommit=True) as conn:
        conn.execute("UPDATE meta SET value=%s WHERE key='schema'", (version,))


def test_a_newer_schema_is_refused_not_misread(opener: Opener, location: tuple[str, Path | None]) -> None:
    opener().close()
    _set_schema(location, "99")
    with pytest.raises(StateError, match="newer ftpsource"):
        opener()
    with pytest.raises(StateError, match="newer ftpsource"):
        open_store_read_only(*location)


_V1_SQLITE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
CREATE TABLE sources (id TEXT PRIMARY KEY, url TEXT NOT NULL, first_start REAL NOT NULL, last_poll REAL,
    last_ok_poll REAL, last_error TEXT, initialized REAL, revision INTEGER NOT NULL DEFAULT 0);
INSERT INTO sources (id, url, first_start, initialized) VALUES ('old', 'file:///x', 1.0, 2.0);
"""


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.executescript(_V1_SQLITE)
    s = Store(tmp_path / "s.db")
    assert s.begin_source("old", "file:///x", 5.0) == (False, 1.0)  # history kept
    assert s.take_lease("old", "file:///x", "me", 5.0) == 1
    s.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)


def test_a_newer_lease_fences_every_write_of_the_older_owner(opener: Opener) -> None:
    a, b = opener(), opener()  # two replicas: two connections
    first = a.take_lease("src", "u", "replica-a", 1.0)
    a.begin_source("src", "u", 1.0, epoch=first)
    a.commit("src", [rec("a")], (), [NewEvent("e1", "ready", "a", b"{}")], now=2.0, epoch=first)
    second = b.take_lease("src", "u", "replica-b", 3.0)
    assert second == first + 1 and a.epoch("src") == second
    writes: list[Callable[[], object]] = [
        lambda: a.commit("src", [rec("late")], (), [NewEvent("e2", "ready", "late", b"{}")], now=4.0, epoch=first),
        lambda: a.record_poll("src", 4.0, True, epoch=first),
        lambda: a.begin_source("src", "u", 4.0, epoch=first),
        lambda: a.mark_delivered([1], 4.0, source_id="src", epoch=first),
    ]
    for write in writes:
        with pytest.raises(LeaseLost, match="taken over"):
            write()
    assert set(b.load_records("src")) == {"a"}  # nothing of the old owner's got in
    assert [r.event_id for r in b.undelivered("src")] == ["e1"]
    b.commit("src", [rec("b")], now=5.0, epoch=second)  # the new owner writes
    a.close()
    b.close()


def test_postgres_lease_waits_for_a_write_in_flight(pg_db: PgDatabase) -> None:
    """A takeover never interleaves with a write: the write commits first, or fails."""
    a = PostgresStore(pg_db.url, pg_db.password_file)
    b = PostgresStore(pg_db.url, pg_db.password_file)
    epoch = a.take_lease("src", "u", "a", 1.0)
    with pg_db.connect() as holder, holder.transaction():
        # Stand in for the old owner mid-commit: hold the same FOR SHARE lock its fence takes.
        holder.execute("SELECT epoch FROM sources WHERE id='src' FOR SHARE")
        taken: list[int] = []
        t = threading.Thread(target=lambda: taken.append(b.take_lease("src", "u", "b", 2.0)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not taken  # waits for the write in flight
    t.join(10)
    assert taken == [epoch + 1]
    a.close()
    b.close()


async def test_postgres_takeover_is_announced_to_listeners(pg_db: PgDatabase) -> None:
    a = PostgresStore(pg_db.url, pg_db.password_file)
    b = PostgresStore(pg_db.url, pg_db.password_file)
    seen: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    listener = asyncio.create_task(a.listen_leases(lambda sid, epoch: seen.put_nowait((sid, epoch))))
    try:
        await asyncio.sleep(0.5)  # LISTEN is in place
        epoch = await asyncio.to_thread(b.take_lease, "src one", "u", "b", 1.0)
        assert await asyncio.wait_for(seen.get(), 10) == ("src one", epoch)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        a.close()
        b.close()


def test_postgres_password_comes_from_the_file_or_libpq_env_and_never_shows(
    pg_db: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "@" in pg_db.url and ":" + pg_db.password not in pg_db.url
    with pytest.raises(StateError) as refused:
        PostgresStore(pg_db.url)  # no password anywhere
    assert "password" in str(refused.value)
    monkeypatch.setenv("PGPASSWORD", pg_db.password)
    PostgresStore(pg_db.url).close()  # libpq's environment
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{pg_db.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    PostgresStore(pg_db.url).close()
    monkeypatch.delenv("PGPASSFILE")

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-s3cr3t\n")
    with pytest.raises(StateError) as bad:
        PostgresStore(pg_db.url, wrong)
    assert "not-the-password-s3cr3t" not in str(bad.value) and "authentication failed" in str(bad.value)
    inline = pg_db.url.replace("ftpsource@", "ftpsource:inline-s3cr3t@")
    with pytest.raises(StateError) as bad_inline:
        PostgresStore(inline)
    assert "inline-s3cr3t" not in str(bad_inline.value)
    assert redact_url(inline) == pg_db.url
    assert redact_url(pg_db.url + "&password=q-s3cr3t") == pg_db.url + "&password=***"


def test_postgres_unreachable_is_a_clear_error_and_reconnects(pg_cluster: PostgresCluster, pg_db: PgDatabase) -> None:
    s = PostgresStore(pg_db.url, pg_db.password_file)
    s.take_lease("src", "u", "a", 1.0)
    pg_cluster.stop()
    try:
        with pytest.raises(StateError, match=f"state store {re.escape(pg_db.url)}"):
            s.ping()
        with pytest.raises(StateError):
            s.commit("src", [rec("a")], now=2.0, epoch=1)
    finally:
        pg_cluster.start()
    s.commit("src", [rec("a")], now=2.0, epoch=1)  # a fresh connection, the same lease
    assert set(s.load_records("src")) == {"a"}
    s.close()


def test_postgres_read_only_never_creates_or_writes(pg_db: PgDatabase) -> None:
    with pytest.raises(StateError, match="no ftpsource state"):
        open_store_read_only(pg_db.url, pg_db.password_file)
    open_store(pg_db.url, pg_db.password_file).close()
    ro = open_store_read_only(pg_db.url, pg_db.password_file)
    assert ro.list_sources() == []
    with pytest.raises(StateError, match="read-only"):
        ro.take_lease("src", "u", "a", 1.0)
    ro.close()


def test_not_a_postgres_url_is_a_clear_error() -> None:
    with pytest.raises(StateError, match="not a valid postgresql:// URL"):
        open_store("postgresql://u@h:notaport/db?sslmode")


def test_postgres_schema_from_the_url_options_also_when_read_only(pg_db: PgDatabase) -> None:
    with pg_db.connect() as conn:
        conn.execute("CREATE SCHEMA fts")
    url = pg_db.url + "&options=-csearch_path%3Dfts"
    s = open_store(url, pg_db.password_file)
    s.take_lease("src", "u", "a", 1.0)
    s.close()
    ro = open_store_read_only(url, pg_db.password_file)
    assert [r.id for r in ro.list_sources()] == ["src"]
    ro.close()
    with pg_db.connect() as conn:
        assert conn.execute(
            "SELECT to_regclass('fts.sources') IS NOT NULL, to_regclass('public.sources')"
        ).fetchone() == (
            True,
            None,
        )


def test_prune_drops_delivered_events_past_the_cutoff_in_bounded_batches(opener: Opener) -> None:
    s = opener()
    s.begin_source("src", "file:///x", 1.0)
    s.commit("src", (), (), [NewEvent(f"old{i}", "ready", f"o{i}", b"{}") for i in range(7)], now=10.0)
    s.commit("src", (), (), [NewEvent("pending", "ready", "p", b"{}")], now=10.0)
    s.commit("src", (), (), [NewEvent("recent", "ready", "r", b"{}")], now=500.0)
    rows = {r.event_id: r.seq for r in s.undelivered("src")}
    s.mark_delivered([seq for eid, seq in rows.items() if eid.startswith("old")], 20.0)
    s.mark_delivered([rows["recent"]], 510.0)
    assert s.prune_delivered("src", 100.0, 3) == 3  # one small transaction at a time
    assert s.prune_delivered("src", 100.0, 3) == 3
    assert s.prune_delivered("src", 100.0, 3) == 1
    assert s.prune_delivered("src", 100.0, 3) == 0
    # Never pruned: what is not delivered yet (however old), and what is newer than the cut-off.
    assert [r.event_id for r in s.undelivered("src")] == ["pending"]
    assert [h.event_id for h in s.history("src", "r")] == ["recent"]
    assert s.history("src", "o0") == []


def test_prune_keeps_the_event_of_a_version_waiting_to_be_settled(opener: Opener) -> None:
    from ftpsource.core.settle import PostAction, SettleVersion

    s = opener()
    s.begin_source("src", "file:///x", 1.0)
    for n, path in enumerate(["a.csv", "b.csv"], start=1):
        version = SettleVersion(path, 1, n, 100.0, f"sum{n}", PostAction("move", "done/{name}"), PostAction("none"))
        s.commit("src", (), (), [NewEvent(f"id{n}", "ready", path, b"{}", version)], now=10.0)
    s.mark_delivered([r.seq for r in s.undelivered("src")], 20.0)
    assert s.settle("id2", "succeeded", "", 30.0).status == "accepted"
    s.prune_delivered("src", 100.0, 100)
    assert [h.event_id for h in s.history("src", "a.csv")] == ["id1"]  # unsettled: its event is kept
    assert s.unsettled("src")[0] == 1
    assert s.history("src", "b.csv") == []  # settled: its event goes ...
    assert [v.event_id for v in s.versions("src", "b.csv")] == ["id2"]  # ... its version waits for its move
    s.finish_action("id2", "done", None, "done/b.csv", 40.0)
    s.prune_delivered("src", 100.0, 100)
    assert s.versions("src", "b.csv") == [] and [v.event_id for v in s.versions("src", "a.csv")] == ["id1"]


def test_tombstones_are_looked_up_by_path_and_pruned_past_the_cutoff_in_bounded_batches(opener: Opener) -> None:
    s = opener()
    s.begin_source("src", "file:///x", 1.0)
    s.begin_source("other", "file:///y", 1.0)
    gone = [rec(f"t{i}", State.DELETED, generation=1, ready_checksum=f"sum{i}") for i in range(5)]
    recent = replace(gone[0], path="recent", stable_since=500.0)
    s.commit("src", [*gone, rec("live", State.READY, generation=1), recent])
    s.commit("other", [rec("t0", State.DELETED, generation=1)])
    assert set(s.live_records("src")) == {"live"}  # what a watcher holds in memory
    many = [f"p{i}" for i in range(1_200)]  # more than one statement's worth of paths
    found = s.tombstones("src", [*many, "t1", "live", "t3", "nowhere"])
    assert found == {"t1": gone[1], "t3": gone[3]}  # tombstones only, of this source only
    assert s.tombstones("src", []) == {}
    batches = [s.prune_tombstones("src", 100.0, 2) for _ in range(4)]  # one small transaction at a time
    assert [len(b) for b in batches] == [2, 2, 1, 0]
    assert sorted(p for b in batches for p in b) == [f"t{i}" for i in range(5)]
    assert set(s.load_records("src")) == {"live", "recent"}  # newer than the cut-off, or not a tombstone
    assert set(s.load_records("other")) == {"t0"}  # another source's state is its own


@pytest.mark.parametrize(
    ("statement", "args", "index"),
    [
        (PRUNE_TOMBSTONES.removesuffix(" RETURNING path"), ("s", "s", 1.0, 1), "files_tombstones"),
        (PRUNE_OUTBOX, ("s", 1.0, 1.0, 1), "outbox_delivered"),
        (PRUNE_VERSIONS, ("s", 1.0, 1), "versions_ready"),
        (UNSETTLED, ("s",), "versions_unsettled"),
    ],
)
def test_what_runs_daily_on_a_busy_source_reads_an_index_not_the_retention_window(
    tmp_path: Path, statement: str, args: tuple[object, ...], index: str
) -> None:
    """Pruning and the unsettled gauge find their few rows through an index; without one each of them
    walked every event, version or tombstone of the window (350,000 of each on a busy source)."""
    s = Store(tmp_path / "s.db")
    try:
        plan = " | ".join(r[3] for r in s._db.execute(f"EXPLAIN QUERY PLAN {statement}", args))
    finally:
        s.close()
    assert f"USING INDEX {index} " in plan, plan
