"""The only module that touches SQLite: sources, file records, the outbox and expectations.

Durability model: each decision (file records + the events it produced) is committed in ONE
transaction before anything is streamed; a stream reads undelivered rows from the outbox and marks
them delivered after writing them. So a crash at any point either loses nothing (undelivered rows are
sent on the next stream) or re-sends the few rows written but not yet marked.

The database uses WAL with ``synchronous=FULL``. It must live on a local filesystem: SQLite's locking
and WAL need a real local disk, not NFS/SMB.

All methods are synchronous; ``AsyncStore`` runs them on one dedicated thread, so there is exactly one
connection and one writer and the event loop never blocks on disk. The API is ``api.StateStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..core.model import Expectation, FileRecord, SetPeriod
from ..errors import StateError
from . import versions as v_sql
from .api import LeaseCallback, NewEvent, VersionRow
from .files import FILE_COLUMNS, record_row
from .retention import PRUNE_OUTBOX, PRUNE_VERSIONS, RETENTION_INDEXES
from .shared import SharedSql

__all__ = ["SCHEMA_VERSION", "Store"]

#: The schema ``_SCHEMA`` creates is version 1; ``_MIGRATIONS[v]`` takes a store from ``v - 1`` to ``v``.
#: The PostgreSQL backend keeps the same numbering and the same steps in its own dialect.
SCHEMA_VERSION = 2
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # Leases: the epoch is the fencing token every write of a stream checks; owner is for people.
    2: (
        "ALTER TABLE sources ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sources ADD COLUMN owner TEXT",
    ),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    first_start REAL NOT NULL,
    last_poll REAL,
    last_ok_poll REAL,
    last_error TEXT,
    initialized REAL,
    revision INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    source_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    state TEXT NOT NULL,
    first_seen REAL NOT NULL,
    stable_since REAL NOT NULL,
    generation INTEGER NOT NULL,
    ready_checksum TEXT,
    ready_size INTEGER,
    ready_mtime REAL,
    problem TEXT,
    problem_since REAL,
    checked TEXT,
    PRIMARY KEY (source_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    path TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS outbox_undelivered ON outbox (source_id, seq) WHERE delivered IS NULL;
CREATE INDEX IF NOT EXISTS outbox_path ON outbox (source_id, path);
CREATE TABLE IF NOT EXISTS expectations (
    source_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    period TEXT NOT NULL,
    path TEXT NOT NULL,
    deadline REAL NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (source_id, rule, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS expect_sets (
    source_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    period TEXT NOT NULL,
    name TEXT NOT NULL,
    deadline REAL NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    members TEXT NOT NULL,
    PRIMARY KEY (source_id, rule, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    event_id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    path TEXT NOT NULL,
    generation INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    checksum TEXT,
    on_success TEXT NOT NULL,
    on_failure TEXT NOT NULL,
    expects_settle INTEGER NOT NULL,
    ready REAL NOT NULL,
    settled REAL,
    outcome TEXT,
    message TEXT,
    action TEXT,
    action_state TEXT,
    action_at REAL,
    action_detail TEXT,
    target TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_path ON versions (source_id, path);
CREATE INDEX IF NOT EXISTS versions_pending ON versions (source_id) WHERE action_state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_id);
"""


def _describe(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return f"state store {path}: disk full; nothing was recorded, will retry"
    if "readonly" in text or "unable to open" in text:
        return f"state store {path}: cannot write ({text}); check the directory exists and is writable"
    if "not a database" in text:
        return f"state store {path}: file is not an ftpsource SQLite database"
    return f"state store {path}: {text}"


class Store(SharedSql):
    """Synchronous SQLite access. Use ``AsyncStore`` from async code."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise StateError(f"state store {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StateError(f"state store {self.path}: directory {parent} is not writable")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError(_describe(exc, self.path)) from None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # One statement at a time: executescript() would commit, and two processes opening a new
            # file at once must not both see "no schema yet".
            for statement in [*filter(str.strip, _SCHEMA.split(";")), *RETENTION_INDEXES]:
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', '1')")
                version = 1
            else:
                version = int(row[0])
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.path}: written by a newer ftpsource (schema {version}); upgrade ftpsource"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(target),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @classmethod
    def open_read_only(cls, path: Path | str) -> Store:
        """Open an existing state file for reading only, writing nothing next to it.

        With a live WAL (``-wal`` and ``-shm`` present: a server has it open) a plain read-only
        connection sees the latest commits. Without one, a read-only connection would create and leave
        behind ``-wal``/``-shm`` files, so the file is opened as immutable instead: nothing is written
        and, as no writer is active, nothing is missed.
        """
        path = Path(path)
        if not path.is_file():
            raise StateError(f"no state file at {path}")
        live_wal = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
        uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("" if live_wal else "&immutable=1")
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "sources", "files", "outbox"} <= tables:
                db.close()
                raise StateError(f"{path} is not an ftpsource state file")
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.Error as exc:
            if "not a database" in str(exc):
                raise StateError(f"{path} is not an ftpsource state file (not an SQLite database)") from None
            raise StateError(f"state file {path}: {exc}") from None
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            db.close()
            raise StateError(f"state file {path}: written by a newer ftpsource (schema {row[0]}); upgrade ftpsource")
        store = cls.__new__(cls)
        store.path, store._db, store._lock = path, db, threading.Lock()
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # leases --------------------------------------------------------------------------------------
    def take_lease(self, source_id: str, url: str, owner: str, now: float) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sources (id, url, first_start) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (source_id, url, now),
            )
            db.execute("UPDATE sources SET epoch=epoch+1, owner=? WHERE id=?", (owner, source_id))
            return int(db.execute("SELECT epoch FROM sources WHERE id=?", (source_id,)).fetchone()[0])

    async def listen_leases(self, on_change: LeaseCallback) -> None:
        """Nothing to listen to: one process owns a SQLite file, and its streams supersede each other
        in memory (``epoch`` still fences them)."""
        await asyncio.Event().wait()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    # SQLite has already rolled back after some errors (SQLITE_FULL among them).
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StateError(_describe(exc, self.path)) from None

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        return self._query(sql, args)

    def _exec(self, db: sqlite3.Connection, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        return db.execute(sql, tuple(args))

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StateError(_describe(exc, self.path)) from None

    # files ---------------------------------------------------------------------------------------
    def commit(
        self,
        source_id: str,
        upserts: Iterable[FileRecord] = (),
        removals: Iterable[str] = (),
        events: Iterable[NewEvent] = (),
        now: float = 0.0,
        expectations: Iterable[Expectation] = (),
        initialized: bool = False,
        expectations_dropped: Iterable[Expectation] = (),
        sets: Iterable[SetPeriod] = (),
        sets_dropped: Iterable[SetPeriod] = (),
        *,
        epoch: int | None = None,
    ) -> int:
        """Persist one decision atomically. Returns the number of events added to the outbox."""
        events = list(events)
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            db.executemany(
                f"INSERT OR REPLACE INTO files (source_id, {FILE_COLUMNS}) VALUES ({','.join('?' * 14)})",
                (record_row(source_id, r) for r in upserts),
            )
            db.executemany("DELETE FROM files WHERE source_id=? AND path=?", ((source_id, p) for p in removals))
            db.executemany(
                "INSERT INTO outbox (source_id, event_id, type, path, payload, created) VALUES (?,?,?,?,?,?)",
                ((source_id, e.event_id, e.type, e.path, e.payload, now) for e in events),
            )
            db.executemany(v_sql.INSERT, v_sql.insert_rows(source_id, events, now))
            db.executemany(
                "INSERT OR REPLACE INTO expectations VALUES (?,?,?,?,?,?)",
                ((source_id, x.rule, x.period, x.path, x.deadline, x.state) for x in expectations),
            )
            db.executemany(
                "DELETE FROM expectations WHERE source_id=? AND rule=? AND period=?",
                ((source_id, x.rule, x.period) for x in expectations_dropped),
            )
            db.executemany(
                "INSERT OR REPLACE INTO expect_sets VALUES (?,?,?,?,?,?,?,?)",
                (
                    (source_id, x.rule, x.period, x.name, x.deadline, x.state, x.generation, json.dumps(x.members))
                    for x in sets
                ),
            )
            db.executemany(
                "DELETE FROM expect_sets WHERE source_id=? AND rule=? AND period=?",
                ((source_id, x.rule, x.period) for x in sets_dropped),
            )
            if initialized:
                db.execute("UPDATE sources SET initialized=? WHERE id=? AND initialized IS NULL", (now, source_id))
        return len(events)

    # outbox --------------------------------------------------------------------------------------
    def mark_delivered(
        self, seqs: Iterable[int], now: float, *, source_id: str | None = None, epoch: int | None = None
    ) -> None:
        with self._tx() as db:
            if source_id is not None:
                self._fence(db, source_id, epoch)
            db.executemany("UPDATE outbox SET delivered=? WHERE seq=?", ((now, s) for s in seqs))

    def prune_delivered(self, source_id: str, before: float, limit: int, *, epoch: int | None = None) -> int:
        """Drop at most ``limit`` delivered events (and settled versions) from before ``before``, in
        one short transaction. Returns how many rows went; call again until it returns less."""
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            n = db.execute(PRUNE_OUTBOX, (source_id, before, before, limit)).rowcount
            n += db.execute(PRUNE_VERSIONS, (source_id, before, limit)).rowcount
        return int(n)

    # settling ------------------------------------------------------------------------------------------
    def versions(self, source_id: str, path: str) -> list[VersionRow]:
        if not self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='versions'"):
            return []  # a state file from before settling, opened read-only
        return [v_sql.to_version(r) for r in self._query(v_sql.VERSIONS_OF_PATH, (source_id, path))]

    # expectations ----------------------------------------------------------------------------------
