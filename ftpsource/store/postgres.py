"""The only module that touches PostgreSQL: the state API of ``api.StateStore`` shared by replicas.

Same tables, same schema versions and same durability model as the SQLite backend: one decision (file
records + its outbox rows) is one transaction. What PostgreSQL adds is several writers, so every write
of a stream checks its source's epoch (``SELECT ... FOR SHARE`` in the same transaction): a lease taken
by another replica waits for a write in flight, and every later write of the older owner fails with
``LeaseLost``. ``take_lease`` also sends a ``NOTIFY`` so the older owner ends its stream within moments
instead of at its next write.

Connection details follow libpq: the URL (``postgresql://user@host:port/db?sslmode=...``), then
``PGPASSWORD``/``PGPASSFILE`` and the other ``PG*`` variables; a password file given to ftpsource wins
and is re-read on every (re)connection, so a rotated Secret needs no restart. A password never appears
in ``location`` or in an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..core.model import Expectation, FileRecord, SetPeriod
from ..errors import StateError
from . import versions as v_sql
from .api import LeaseCallback, NewEvent, VersionRow
from .files import FILE_COLUMNS, record_row
from .retention import PRUNE_OUTBOX, PRUNE_VERSIONS, RETENTION_INDEXES
from .shared import SharedSql
from .sqlite import SCHEMA_VERSION

__all__ = ["LEASE_CHANNEL", "PostgresStore", "is_postgres_url", "redact_url"]

log = logging.getLogger(__name__)

LEASE_CHANNEL = "ftpsource_lease"
#: Serialises schema creation and migrations when several replicas start at once.
_MIGRATION_LOCK = 0x66747073  # "ftps"
_CONNECT_TIMEOUT_S = 10
#: Transactions are a few statements long; one idle this long belongs to a frozen or cut-off replica.
IDLE_IN_TX_MS = 10_000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sources (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        first_start DOUBLE PRECISION NOT NULL,
        last_poll DOUBLE PRECISION,
        last_ok_poll DOUBLE PRECISION,
        last_error TEXT,
        initialized DOUBLE PRECISION,
        revision INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS files (
        source_id TEXT NOT NULL,
        path TEXT NOT NULL,
        size BIGINT NOT NULL,
        mtime DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        stable_since DOUBLE PRECISION NOT NULL,
        generation INTEGER NOT NULL,
        ready_checksum TEXT,
        ready_size BIGINT,
        ready_mtime DOUBLE PRECISION,
        problem TEXT,
        problem_since DOUBLE PRECISION,
        checked TEXT,
        PRIMARY KEY (source_id, path)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        path TEXT NOT NULL,
        payload BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        delivered DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_undelivered ON outbox (source_id, seq) WHERE delivered IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_path ON outbox (source_id, path)",
    """CREATE TABLE IF NOT EXISTS expectations (
        source_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        period TEXT NOT NULL,
        path TEXT NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (source_id, rule, period)
    )""",
    """CREATE TABLE IF NOT EXISTS expect_sets (
        source_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        period TEXT NOT NULL,
        name TEXT NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL,
        generation INTEGER NOT NULL,
        members TEXT NOT NULL,
        PRIMARY KEY (source_id, rule, period)
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        event_id TEXT PRIMARY KEY,
        source_id TEXT NOT NULL,
        path TEXT NOT NULL,
        generation INTEGER NOT NULL,
        size BIGINT NOT NULL,
        mtime DOUBLE PRECISION NOT NULL,
        checksum TEXT,
        on_success TEXT NOT NULL,
        on_failure TEXT NOT NULL,
        expects_settle INTEGER NOT NULL,
        ready DOUBLE PRECISION NOT NULL,
        settled DOUBLE PRECISION,
        outcome TEXT,
        message TEXT,
        action TEXT,
        action_state TEXT,
        action_at DOUBLE PRECISION,
        action_detail TEXT,
        target TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS versions_path ON versions (source_id, path)",
    "CREATE INDEX IF NOT EXISTS versions_pending ON versions (source_id) WHERE action_state = 'pending'",
    "CREATE INDEX IF NOT EXISTS outbox_event ON outbox (event_id)",
)
#: The SQLite backend's migrations, step for step.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE sources ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE sources ADD COLUMN IF NOT EXISTS owner TEXT",
    ),
}

_FILE_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in FILE_COLUMNS.split(", ")[1:])


def _pg(sql: str) -> str:
    """The shared statements use SQLite's ``?`` placeholders; psycopg takes ``%s``."""
    return sql.replace("?", "%s")


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme, user part, rest)`` of a URL whose user part holds a password, else None.

    The user part runs to the *last* '@' and the password from its first ':': a password may hold
    '#', '?' or '/', which a generic URL parser takes for the end of the user part, and libpq does not.
    Splitting a URL with an '@' further on (in a parameter) this way only hides more, never less.
    """
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return None
    return scheme, rest[:at], rest[at + 1 :]


def url_secrets(url: str) -> tuple[str, ...]:
    """Every form in which ``url`` may carry a password, to be scrubbed from error texts."""
    found: list[str] = []
    parts = _userinfo(url)
    if parts is not None:
        password = parts[1].split(":", 1)[1]
        found += [password, unquote(password)]
    for item in url.partition("?")[2].split("&"):
        key, _, value = item.partition("=")
        if key.lower() == "password" and value:
            found += [value, unquote(value)]
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def redact_url(url: str) -> str:
    """The URL without a password (in the user part or as a ``password`` parameter). Works on the
    text, not on a parse: a URL that does not parse must not be echoed with its password either."""
    parts = _userinfo(url)
    if parts is not None:
        scheme, userinfo, rest = parts
        user = userinfo.split(":", 1)[0]
        url = f"{scheme}://{user}@{rest}" if user else f"{scheme}://{rest}"
    head, sep, query = url.partition("?")
    if not sep:
        return url
    items = ["password=***" if item.partition("=")[0].lower() == "password" else item for item in query.split("&")]
    return f"{head}?{'&'.join(items)}"


class PostgresStore(SharedSql):
    """Synchronous PostgreSQL access with one connection, re-opened after a fault. Use ``AsyncStore``
    from async code."""

    def __init__(self, url: str, password_file: Path | None = None, *, read_only: bool = False) -> None:
        self.url = url
        self._location = redact_url(url)
        self._password_file = password_file
        self._read_only = read_only
        self._secrets: tuple[str, ...] = ()
        self._options = ""
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise StateError(f"state store {self.location}: not a valid postgresql:// URL") from None
        self._secrets = url_secrets(url)
        if params.get("password"):
            self._secrets = (*self._secrets, str(params["password"]))
        self._options = str(params.get("options") or "")
        with self._lock:
            conn = self._connection()
            try:
                if read_only:
                    self._check_schema(conn)
                else:
                    self._migrate(conn)
            except psycopg.Error as exc:
                conn.close()
                raise self._error(exc) from None
            except BaseException:
                conn.close()
                raise

    @property
    def location(self) -> str:
        return self._location

    # connection --------------------------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": _CONNECT_TIMEOUT_S,
            "application_name": "ftpsource",
            # A server that vanished without closing the socket is noticed in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if self._password_file is not None:
            try:
                password = self._password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise StateError(
                    f"state store {self.location}: cannot read password file {self._password_file} ({exc.strerror})"
                ) from None
            if password:
                kwargs["password"] = password
                self._secrets = (*self._secrets, password)
        # Added to the URL's own options (a search_path, say), not instead of them. A replica frozen or cut
        # off inside a transaction would hold its row locks, and with them every takeover of its sources,
        # until TCP gave up: the server ends such a transaction after IDLE_IN_TX_MS instead.
        options = f"{self._options} -c idle_in_transaction_session_timeout={IDLE_IN_TX_MS}"
        if self._read_only:
            options += " -c default_transaction_read_only=on"
        kwargs["options"] = options.strip()
        return kwargs

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            self._conn = None
        try:
            self._conn = psycopg.connect(self.url, **self._connect_kwargs())
        except psycopg.Error as exc:
            raise self._error(exc) from None
        return self._conn

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text.replace(self.url, self.location)

    def _error(self, exc: psycopg.Error) -> StateError:
        if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
            # The connection may be half-dead; the next call opens a fresh one.
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        text = " ".join(self._scrub(str(exc)).split())
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StateError(f"state store {self.location}: opened read-only")
        return StateError(f"state store {self.location}: {text}")

    def _check_schema(self, conn: psycopg.Connection[Any]) -> None:
        tables = conn.execute(
            "SELECT count(*) FROM unnest(ARRAY['meta', 'sources', 'files', 'outbox']) AS t(name)"
            " WHERE to_regclass(t.name) IS NOT NULL"
        ).fetchone()
        if tables is None or int(tables[0]) != 4:
            raise StateError(f"state store {self.location}: no ftpsource state in this database")
        row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.location}: written by a newer ftpsource (schema {row[0]}); upgrade ftpsource"
            )

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in (*_SCHEMA, *RETENTION_INDEXES):
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', '1')")
                version = 1
            else:
                version = int(row[0])
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.location}: written by a newer ftpsource (schema {version}); upgrade ftpsource"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("UPDATE meta SET value=%s WHERE key='schema'", (str(target),))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    yield conn
            except psycopg.Error as exc:
                raise self._error(exc) from None

    _LOCK_ROWS = " FOR UPDATE"
    _SHARE_ROWS = " FOR SHARE"

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        return self._query(_pg(sql), args)

    def _exec(self, db: psycopg.Connection[Any], sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor[Any]:
        return db.execute(_pg(sql), tuple(args))

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, tuple(args)).fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    # leases --------------------------------------------------------------------------------------
    def take_lease(self, source_id: str, url: str, owner: str, now: float) -> int:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sources (id, url, first_start) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (source_id, url, now),
            )
            row = db.execute(
                "UPDATE sources SET epoch=epoch+1, owner=%s WHERE id=%s RETURNING epoch", (owner, source_id)
            ).fetchone()
            assert row is not None
            epoch = int(row[0])
            # Delivered at commit, to every replica listening (this one included).
            db.execute("SELECT pg_notify(%s, %s)", (LEASE_CHANNEL, f"{epoch} {source_id}"))
        return epoch

    async def listen_leases(self, on_change: LeaseCallback) -> None:
        """Forever: ``LISTEN`` on its own connection; reconnect with a growing pause after a fault."""
        pause = 0.5
        while True:
            try:
                kwargs = self._connect_kwargs()
                async with await psycopg.AsyncConnection.connect(self.url, **kwargs) as conn:
                    await conn.execute(f"LISTEN {LEASE_CHANNEL}")
                    pause = 0.5
                    async for note in conn.notifies():
                        epoch, _, source_id = note.payload.partition(" ")
                        on_change(source_id, int(epoch))
            except (psycopg.Error, StateError) as exc:
                text = self._scrub(str(exc)) if isinstance(exc, psycopg.Error) else str(exc)
                log.warning("lease notifications interrupted (%s); reconnecting", " ".join(text.split()))
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

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
        rows = [record_row(source_id, r) for r in upserts]
        gone = [(source_id, p) for p in removals]
        events = list(events)
        met = [(source_id, x.rule, x.period, x.path, x.deadline, x.state) for x in expectations]
        dropped = [(source_id, x.rule, x.period) for x in expectations_dropped]
        set_rows = [
            (source_id, x.rule, x.period, x.name, x.deadline, x.state, x.generation, json.dumps(x.members))
            for x in sets
        ]
        sets_gone = [(source_id, x.rule, x.period) for x in sets_dropped]
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            cur = db.cursor()
            if rows:
                cur.executemany(
                    f"INSERT INTO files (source_id, {FILE_COLUMNS}) VALUES ({','.join(['%s'] * 14)})"
                    f" ON CONFLICT (source_id, path) DO UPDATE SET {_FILE_UPDATE}",
                    rows,
                )
            if gone:
                cur.executemany("DELETE FROM files WHERE source_id=%s AND path=%s", gone)
            if events:
                cur.executemany(
                    "INSERT INTO outbox (source_id, event_id, type, path, payload, created) VALUES (%s,%s,%s,%s,%s,%s)",
                    [(source_id, e.event_id, e.type, e.path, e.payload, now) for e in events],
                )
                version_rows = v_sql.insert_rows(source_id, events, now)
                if version_rows:
                    cur.executemany(_pg(v_sql.INSERT), version_rows)
            if met:
                cur.executemany(
                    "INSERT INTO expectations VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (source_id, rule, period)"
                    " DO UPDATE SET path=EXCLUDED.path, deadline=EXCLUDED.deadline, state=EXCLUDED.state",
                    met,
                )
            if dropped:
                cur.executemany("DELETE FROM expectations WHERE source_id=%s AND rule=%s AND period=%s", dropped)
            if set_rows:
                cur.executemany(
                    "INSERT INTO expect_sets VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (source_id, rule, period)"
                    " DO UPDATE SET name=EXCLUDED.name, deadline=EXCLUDED.deadline, state=EXCLUDED.state,"
                    " generation=EXCLUDED.generation, members=EXCLUDED.members",
                    set_rows,
                )
            if sets_gone:
                cur.executemany("DELETE FROM expect_sets WHERE source_id=%s AND rule=%s AND period=%s", sets_gone)
            if initialized:
                db.execute("UPDATE sources SET initialized=%s WHERE id=%s AND initialized IS NULL", (now, source_id))
        return len(events)

    # outbox --------------------------------------------------------------------------------------
    def mark_delivered(
        self, seqs: Iterable[int], now: float, *, source_id: str | None = None, epoch: int | None = None
    ) -> None:
        seqs = list(seqs)
        with self._tx() as db:
            if source_id is not None:
                self._fence(db, source_id, epoch)
            db.execute("UPDATE outbox SET delivered=%s WHERE seq = ANY(%s)", (now, seqs))

    def prune_delivered(self, source_id: str, before: float, limit: int, *, epoch: int | None = None) -> int:
        """Drop at most ``limit`` delivered events (and settled versions) from before ``before``, in
        one short transaction. Returns how many rows went; call again until it returns less."""
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            n = db.execute(_pg(PRUNE_OUTBOX), (source_id, before, before, limit)).rowcount
            n += db.execute(_pg(PRUNE_VERSIONS), (source_id, before, limit)).rowcount
        return int(n)

    # settling ------------------------------------------------------------------------------------------
    def versions(self, source_id: str, path: str) -> list[VersionRow]:
        if not self._query("SELECT 1 WHERE to_regclass('versions') IS NOT NULL"):
            return []  # a database from before settling, opened read-only
        return [v_sql.to_version(r) for r in self._query(_pg(v_sql.VERSIONS_OF_PATH), (source_id, path))]

    # expectations ----------------------------------------------------------------------------------
