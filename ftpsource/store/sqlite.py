"""The only module that touches SQLite: sources, file records, the outbox and expectations.

Durability model: each decision (file records + the events it produced) is committed in ONE
transaction before anything is streamed; a stream reads undelivered rows from the outbox and marks
them delivered after writing them. So a crash at any point either loses nothing (undelivered rows are
sent on the next stream) or re-sends the few rows written but not yet marked.

The database uses WAL with ``synchronous=FULL``. It must live on a local filesystem: SQLite's locking
and WAL need a real local disk, not NFS/SMB.

All methods are synchronous; ``AsyncStore`` runs them on one dedicated thread, so there is exactly one
connection and one writer and the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from ..core.model import Expectation, FileRecord, SetPeriod, State
from ..core.settle import Outcome, PostAction, SettleVersion
from ..errors import StateError

__all__ = [
    "AsyncStore",
    "HistoryRow",
    "NewEvent",
    "OutboxRow",
    "SettleResult",
    "SourceRow",
    "Store",
    "VersionRow",
]

SCHEMA_VERSION = 1
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
CREATE INDEX IF NOT EXISTS versions_unsettled ON versions (source_id) WHERE settled IS NULL AND expects_settle = 1;
CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_id);
"""

_FILE_COLUMNS = (
    "path, size, mtime, state, first_seen, stable_since, generation, ready_checksum, ready_size, "
    "ready_mtime, problem, problem_since, checked"
)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    type: str
    path: str
    payload: bytes
    created: float


@dataclass(frozen=True, slots=True)
class HistoryRow:
    seq: int
    event_id: str
    type: str
    created: float
    delivered: float | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: str
    url: str
    first_start: float
    last_poll: float | None
    last_ok_poll: float | None
    last_error: str | None
    files: int
    pending: int
    undelivered: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: str
    type: str
    path: str
    payload: bytes
    #: for ready events: the version as it can be settled later, with its actions
    version: SettleVersion | None = None


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A reported version and how far it got: delivered, settled, its post-action."""

    event_id: str
    source_id: str
    version: SettleVersion
    ready: float
    delivered: float | None
    settled: float | None
    outcome: Outcome | None
    message: str | None
    action: str | None
    action_state: str | None  # pending | done | changed | failed | none
    action_at: float | None
    action_detail: str | None
    target: str | None


@dataclass(frozen=True, slots=True)
class SettleResult:
    """``status``: ``not_found``, ``accepted``, ``same`` (already settled so) or ``conflict``."""

    status: str
    row: VersionRow | None = None


_VERSION_COLUMNS = (
    "v.event_id, v.source_id, v.path, v.generation, v.size, v.mtime, v.checksum, v.on_success, v.on_failure, "
    "v.ready, (SELECT MAX(o.delivered) FROM outbox o WHERE o.event_id = v.event_id), v.settled, v.outcome, "
    "v.message, v.action, v.action_state, v.action_at, v.action_detail, v.target"
)


def _to_version(r: tuple[Any, ...]) -> VersionRow:
    version = SettleVersion(r[2], r[3], r[4], r[5], r[6], PostAction.from_json(r[7]), PostAction.from_json(r[8]))
    delivered = r[10] if r[10] is not None and r[10] >= 0 else None
    return VersionRow(r[0], r[1], version, r[9], delivered, *r[11:])


def _record_row(source_id: str, r: FileRecord) -> tuple[Any, ...]:
    return (
        source_id,
        r.path,
        r.size,
        r.mtime,
        r.state.value,
        r.first_seen,
        r.stable_since,
        r.generation,
        r.ready_checksum,
        r.ready_size,
        r.ready_mtime,
        r.problem,
        r.problem_since,
        r.checked,
    )


def _to_record(r: tuple[Any, ...]) -> FileRecord:
    return FileRecord(
        path=r[0],
        size=r[1],
        mtime=r[2],
        state=State(r[3]),
        first_seen=r[4],
        stable_since=r[5],
        generation=r[6],
        ready_checksum=r[7],
        ready_size=r[8],
        ready_mtime=r[9],
        problem=r[10],
        problem_since=r[11],
        checked=r[12],
    )


def _describe(exc: sqlite3.Error, path: Path) -> str:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return f"state store {path}: disk full; nothing was recorded, will retry"
    if "readonly" in text or "unable to open" in text:
        return f"state store {path}: cannot write ({text}); check the directory exists and is writable"
    if "not a database" in text:
        return f"state store {path}: file is not an ftpsource SQLite database"
    return f"state store {path}: {text}"


class Store:
    """Synchronous SQLite access. Use ``AsyncStore`` from async code."""

    def __init__(self, path: Path) -> None:
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
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.path}: written by a newer ftpsource (schema {row[0]}); upgrade ftpsource"
                )
        except sqlite3.Error as exc:
            raise StateError(_describe(exc, self.path)) from None
        self._lock = threading.Lock()

    @classmethod
    def open_read_only(cls, path: Path) -> Store:
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

    def initialized(self, source_id: str) -> bool | None:
        """Whether the source finished its first poll; None when the state has no such source."""
        rows = self._query("SELECT initialized FROM sources WHERE id=?", (source_id,))
        return None if not rows else rows[0][0] is not None

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

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StateError(_describe(exc, self.path)) from None

    # sources -----------------------------------------------------------------------------------
    def begin_source(self, source_id: str, url: str, now: float) -> tuple[bool, float]:
        """Register a source. Returns ``(first_start, first_start_time)``; ``first_start`` stays true
        until a first poll has been committed (``commit(..., initialized=True)``)."""
        with self._tx() as db:
            row = db.execute("SELECT first_start, initialized FROM sources WHERE id=?", (source_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO sources (id, url, first_start) VALUES (?, ?, ?)", (source_id, url, now))
                return True, now
            db.execute("UPDATE sources SET url=? WHERE id=?", (url, source_id))
            return row[1] is None, float(row[0])

    def record_poll(self, source_id: str, at: float, ok: bool, error: str | None = None) -> None:
        with self._tx() as db:
            if ok:
                db.execute(
                    "UPDATE sources SET last_poll=?, last_ok_poll=?, last_error=NULL WHERE id=?",
                    (at, at, source_id),
                )
            else:
                db.execute("UPDATE sources SET last_poll=?, last_error=? WHERE id=?", (at, error, source_id))

    def list_sources(self) -> list[SourceRow]:
        rows = self._query(
            "SELECT s.id, s.url, s.first_start, s.last_poll, s.last_ok_poll, s.last_error,"
            " (SELECT COUNT(*) FROM files f WHERE f.source_id=s.id AND f.state != 'deleted'),"
            " (SELECT COUNT(*) FROM files f WHERE f.source_id=s.id AND f.state = 'pending'),"
            " (SELECT COUNT(*) FROM outbox o WHERE o.source_id=s.id AND o.delivered IS NULL)"
            " FROM sources s ORDER BY s.id"
        )
        return [SourceRow(*r) for r in rows]

    # files ---------------------------------------------------------------------------------------
    def load_records(self, source_id: str) -> dict[str, FileRecord]:
        rows = self._query(f"SELECT {_FILE_COLUMNS} FROM files WHERE source_id=?", (source_id,))
        return {r[0]: _to_record(r) for r in rows}

    def get_record(self, source_id: str, path: str) -> FileRecord | None:
        rows = self._query(f"SELECT {_FILE_COLUMNS} FROM files WHERE source_id=? AND path=?", (source_id, path))
        return _to_record(rows[0]) if rows else None

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
    ) -> int:
        """Persist one decision atomically. Returns the number of events added to the outbox."""
        events = list(events)
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO files (source_id, {_FILE_COLUMNS}) VALUES ({','.join('?' * 14)})",
                (_record_row(source_id, r) for r in upserts),
            )
            db.executemany("DELETE FROM files WHERE source_id=? AND path=?", ((source_id, p) for p in removals))
            db.executemany(
                "INSERT INTO outbox (source_id, event_id, type, path, payload, created) VALUES (?,?,?,?,?,?)",
                ((source_id, e.event_id, e.type, e.path, e.payload, now) for e in events),
            )
            db.executemany(
                "INSERT OR IGNORE INTO versions (event_id, source_id, path, generation, size, mtime, checksum,"
                " on_success, on_failure, expects_settle, ready) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    (
                        e.event_id,
                        source_id,
                        v.path,
                        v.generation,
                        v.size,
                        v.mtime,
                        v.checksum,
                        v.on_success.to_json(),
                        v.on_failure.to_json(),
                        int(v.expects_settle),
                        now,
                    )
                    for e in events
                    if (v := e.version) is not None
                ),
            )
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
    def undelivered(self, source_id: str, limit: int = 256, after_seq: int = 0) -> list[OutboxRow]:
        rows = self._query(
            "SELECT seq, event_id, type, path, payload, created FROM outbox"
            " WHERE source_id=? AND delivered IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (source_id, after_seq, limit),
        )
        return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def mark_delivered(self, seqs: Iterable[int], now: float) -> None:
        with self._tx() as db:
            db.executemany("UPDATE outbox SET delivered=? WHERE seq=?", ((now, s) for s in seqs))

    def undelivered_count(self, source_id: str) -> int:
        return int(
            self._query("SELECT COUNT(*) FROM outbox WHERE source_id=? AND delivered IS NULL", (source_id,))[0][0]
        )

    def history(self, source_id: str, path: str) -> list[HistoryRow]:
        rows = self._query(
            "SELECT seq, event_id, type, created, delivered, payload FROM outbox"
            " WHERE source_id=? AND path=? ORDER BY seq",
            (source_id, path),
        )
        return [HistoryRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def forget(self, source_id: str, path: str | None = None) -> int:
        """Forget a path, or a whole source, so it is reported again. Returns how many records went.

        Forgetting bumps the source's ``revision``: a running watcher reloads, and the replayed events
        get new ids (consumers de-duplicating by id must not drop a deliberate replay). Forgetting a whole
        source also drops its expectations and undelivered events, and makes its next poll a first start.
        """
        return self.forget_files(source_id, None if path is None else [path], reset_source=path is None)

    def forget_files(self, source_id: str, paths: list[str] | None, *, reset_source: bool = False) -> int:
        """Forget the named paths (or every file record when ``paths`` is None)."""
        with self._tx() as db:
            if paths is None:
                n = db.execute("DELETE FROM files WHERE source_id=?", (source_id,)).rowcount
            else:
                n = sum(
                    db.execute("DELETE FROM files WHERE source_id=? AND path=?", (source_id, p)).rowcount for p in paths
                )
            if reset_source:
                db.execute("DELETE FROM expectations WHERE source_id=?", (source_id,))
                db.execute("DELETE FROM expect_sets WHERE source_id=?", (source_id,))
                db.execute("UPDATE outbox SET delivered=COALESCE(delivered, -1) WHERE source_id=?", (source_id,))
                db.execute(
                    "UPDATE sources SET initialized=NULL, first_start=?, last_error=NULL WHERE id=?",
                    (time.time(), source_id),
                )
            db.execute("UPDATE sources SET revision=revision+1 WHERE id=?", (source_id,))
        return int(n)

    def revision(self, source_id: str) -> int | None:
        """The source's forget counter, or None if the source is unknown."""
        rows = self._query("SELECT revision FROM sources WHERE id=?", (source_id,))
        return int(rows[0][0]) if rows else None

    # settlement --------------------------------------------------------------------------------------
    def settle(self, event_id: str, outcome: Outcome, message: str, now: float) -> SettleResult:
        """Record how a version's processing ended, and its post-action as pending, in one transaction.

        The same outcome again changes nothing (``same``); a different one is refused (``conflict``).
        """
        with self._tx() as db:
            row = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE v.event_id=?", (event_id,)).fetchone()
            if row is None:
                return SettleResult("not_found")
            found = _to_version(row)
            if found.outcome is not None:
                return SettleResult("same" if found.outcome == outcome else "conflict", found)
            action = found.version.action_for(outcome).action
            state = "none" if action == "none" else "pending"
            db.execute(
                "UPDATE versions SET settled=?, outcome=?, message=?, action=?, action_state=? WHERE event_id=?",
                (now, outcome, message, action, state, event_id),
            )
            row = db.execute(f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE v.event_id=?", (event_id,)).fetchone()
        return SettleResult("accepted", _to_version(row))

    def pending_actions(self, source_id: str) -> list[VersionRow]:
        """Settled versions whose move or delete has not run to an end yet, oldest settle first."""
        rows = self._query(
            f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE v.source_id=? AND v.action_state='pending'"
            " ORDER BY v.settled",
            (source_id,),
        )
        return [_to_version(r) for r in rows]

    def finish_action(self, event_id: str, state: str, detail: str | None, target: str | None, now: float) -> None:
        """Record how a post-action ended: ``done``, ``changed`` (not the settled version) or ``failed``."""
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET action_state=?, action_detail=?, target=?, action_at=? WHERE event_id=?",
                (state, detail, target, now, event_id),
            )

    def note_action_attempt(self, event_id: str, detail: str, now: float) -> None:
        """A post-action failed in a way worth retrying: it stays pending; the reason is kept for `state show`."""
        with self._tx() as db:
            db.execute(
                "UPDATE versions SET action_detail=?, action_at=? WHERE event_id=? AND action_state='pending'",
                (detail, now, event_id),
            )

    def versions(self, source_id: str, path: str) -> list[VersionRow]:
        """Every reported version of a path, oldest first (none in a state file older than settling)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='versions'"):
            return []
        rows = self._query(
            f"SELECT {_VERSION_COLUMNS} FROM versions v WHERE v.source_id=? AND v.path=? ORDER BY v.ready",
            (source_id, path),
        )
        return [_to_version(r) for r in rows]

    def unsettled(self, source_id: str) -> tuple[int, float | None]:
        """Delivered versions that expect a settle and have none: how many, and the oldest delivery time."""
        row = self._query(
            "SELECT COUNT(*), MIN(d) FROM (SELECT (SELECT MAX(o.delivered) FROM outbox o WHERE o.event_id = v.event_id)"
            " AS d FROM versions v WHERE v.source_id=? AND v.settled IS NULL AND v.expects_settle=1) WHERE d > 0",
            (source_id,),
        )[0]
        return int(row[0]), row[1]

    # expectations ----------------------------------------------------------------------------------
    def load_expectations(self, source_id: str) -> list[Expectation]:
        rows = self._query(
            "SELECT rule, period, path, deadline, state FROM expectations WHERE source_id=? ORDER BY deadline",
            (source_id,),
        )
        return [Expectation(*r) for r in rows]

    def load_sets(self, source_id: str) -> list[SetPeriod]:
        rows = self._query(
            "SELECT rule, period, name, deadline, state, generation, members FROM expect_sets"
            " WHERE source_id=? ORDER BY deadline",
            (source_id,),
        )
        return [
            SetPeriod(r[0], r[1], r[2], r[3], r[4], r[5], tuple((p, int(g)) for p, g in json.loads(r[6]))) for r in rows
        ]


class AsyncStore:
    """Runs ``Store`` calls on one dedicated thread."""

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftpsource-store")

    @classmethod
    def open(cls, path: Path) -> AsyncStore:
        return cls(Store(path))

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sync.close()
