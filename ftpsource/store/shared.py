"""The statements both backends run alike, written once in SQLite's ``?`` style.

A backend provides ``_select`` (a read outside a transaction), ``_tx`` (a transaction) and ``_exec`` (one
statement inside it); PostgreSQL swaps the placeholders for ``%s``. What differs in SQL (upserts, batch
updates, the lease and its notification, the schema) stays in the backend.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.model import Expectation, FileRecord, SetPeriod
from ..core.settle import Outcome
from ..errors import LeaseLost
from ..gcpause import drop_in_slices
from . import versions as v_sql
from .api import HistoryRow, OutboxRow, RecentEvent, SettleResult, SourceRow, VersionRow
from .files import FILE_COLUMNS, to_record
from .retention import PRUNE_TOMBSTONES

__all__ = ["LOOKUP_BATCH", "SharedSql"]

#: Paths looked up per statement (well below both databases' limits on parameters).
LOOKUP_BATCH = 500


class SharedSql:
    """Base of both backends' store classes."""

    #: appended to a ``SELECT`` of rows the transaction then changes, and to the fencing read: empty for
    #: SQLite, whose ``BEGIN IMMEDIATE`` already holds the whole file; PostgreSQL locks the rows.
    _LOCK_ROWS = ""
    _SHARE_ROWS = ""

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _exec(self, db: Any, sql: str, args: Iterable[Any] = ()) -> Any:
        """Run one statement in the transaction ``db``; returns the cursor (``rowcount``, ``fetchone``)."""
        raise NotImplementedError

    def _fence(self, db: Any, source_id: str, epoch: int | None) -> None:
        """Fail the transaction when a newer stream has taken the source (``epoch`` is ours)."""
        if epoch is None:
            return
        # PostgreSQL: FOR SHARE, so a takeover by another replica waits until this transaction is over,
        # and a write either commits before the takeover or sees the new epoch and fails.
        row = self._exec(db, "SELECT epoch FROM sources WHERE id=?" + self._SHARE_ROWS, (source_id,)).fetchone()
        current = None if row is None else int(row[0])
        if current != epoch:
            raise LeaseLost(f"source {source_id}: taken over by a newer stream (epoch {current}, ours {epoch})")

    # sources -------------------------------------------------------------------------------------------
    def initialized(self, source_id: str) -> bool | None:
        """Whether the source finished its first poll; None when the state has no such source."""
        rows = self._select("SELECT initialized FROM sources WHERE id=?", (source_id,))
        return None if not rows else rows[0][0] is not None

    def begin_source(self, source_id: str, url: str, now: float, *, epoch: int | None = None) -> tuple[bool, float]:
        """Register a source. Returns ``(first_start, first_start_time)``; ``first_start`` stays true
        until a first poll has been committed (``commit(..., initialized=True)``)."""
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            row = self._exec(
                db, "SELECT first_start, initialized FROM sources WHERE id=?" + self._LOCK_ROWS, (source_id,)
            ).fetchone()
            if row is None:
                self._exec(db, "INSERT INTO sources (id, url, first_start) VALUES (?, ?, ?)", (source_id, url, now))
                return True, now
            self._exec(db, "UPDATE sources SET url=? WHERE id=?", (url, source_id))
            return row[1] is None, float(row[0])

    def record_poll(
        self, source_id: str, at: float, ok: bool, error: str | None = None, *, epoch: int | None = None
    ) -> None:
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            if ok:
                self._exec(
                    db,
                    "UPDATE sources SET last_poll=?, last_ok_poll=?, last_error=NULL WHERE id=?",
                    (at, at, source_id),
                )
            else:
                self._exec(db, "UPDATE sources SET last_poll=?, last_error=? WHERE id=?", (at, error, source_id))

    def list_sources(self) -> list[SourceRow]:
        rows = self._select(
            "SELECT s.id, s.url, s.first_start, s.last_poll, s.last_ok_poll, s.last_error,"
            " (SELECT COUNT(*) FROM files f WHERE f.source_id=s.id AND f.state != 'deleted'),"
            " (SELECT COUNT(*) FROM files f WHERE f.source_id=s.id AND f.state = 'pending'),"
            " (SELECT COUNT(*) FROM outbox o WHERE o.source_id=s.id AND o.delivered IS NULL)"
            " FROM sources s ORDER BY s.id"
        )
        return [SourceRow(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8])) for r in rows]

    def revision(self, source_id: str) -> int | None:
        """The source's forget counter, or None if the source is unknown."""
        rows = self._select("SELECT revision FROM sources WHERE id=?", (source_id,))
        return int(rows[0][0]) if rows else None

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
                n = self._exec(db, "DELETE FROM files WHERE source_id=?", (source_id,)).rowcount
            else:
                n = sum(
                    self._exec(db, "DELETE FROM files WHERE source_id=? AND path=?", (source_id, p)).rowcount
                    for p in paths
                )
            if reset_source:
                self._exec(db, "DELETE FROM expectations WHERE source_id=?", (source_id,))
                self._exec(db, "DELETE FROM expect_sets WHERE source_id=?", (source_id,))
                self._exec(db, "UPDATE outbox SET delivered=-1 WHERE source_id=? AND delivered IS NULL", (source_id,))
                self._exec(
                    db,
                    "UPDATE sources SET initialized=NULL, first_start=?, last_error=NULL WHERE id=?",
                    (time.time(), source_id),
                )
            self._exec(db, "UPDATE sources SET revision=revision+1 WHERE id=?", (source_id,))
        return int(n)

    # outbox --------------------------------------------------------------------------------------------
    def undelivered_count(self, source_id: str) -> int:
        rows = self._select("SELECT COUNT(*) FROM outbox WHERE source_id=? AND delivered IS NULL", (source_id,))
        return int(rows[0][0])

    def recent_events(self, limit: int = 20) -> list[RecentEvent]:
        """The latest events of every source, newest first (without payloads)."""
        rows = self._select(
            "SELECT source_id, event_id, type, path, created, delivered FROM outbox ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        return [RecentEvent(*r) for r in rows]

    # settling ------------------------------------------------------------------------------------------
    def settle(self, event_id: str, outcome: Outcome, message: str, now: float) -> SettleResult:
        with self._tx() as db:
            # PostgreSQL: FOR UPDATE, so two replicas settling one version take turns; the second sees
            # the first's outcome.
            lock = self._LOCK_ROWS and self._LOCK_ROWS + " OF v"
            row = self._exec(db, v_sql.SELECT_ONE + lock, (event_id,)).fetchone()
            if row is None:
                return SettleResult("not_found")
            found = v_sql.to_version(row)
            if found.outcome is not None:
                return SettleResult("same" if found.outcome == outcome else "conflict", found)
            action = found.version.action_for(outcome).action
            state = "none" if action == "none" else "pending"
            self._exec(db, v_sql.SETTLE, (now, outcome, message, action, state, event_id))
            row = self._exec(db, v_sql.SELECT_ONE, (event_id,)).fetchone()
        return SettleResult("accepted", v_sql.to_version(row))

    def pending_actions(self, source_id: str) -> list[VersionRow]:
        return [v_sql.to_version(r) for r in self._select(v_sql.PENDING, (source_id,))]

    def finish_action(self, event_id: str, state: str, detail: str | None, target: str | None, now: float) -> None:
        with self._tx() as db:
            self._exec(db, v_sql.FINISH, (state, detail, target, now, event_id))

    def note_action_attempt(self, event_id: str, detail: str, now: float) -> None:
        with self._tx() as db:
            self._exec(db, v_sql.NOTE_ATTEMPT, (detail, now, event_id))

    def unsettled(self, source_id: str) -> tuple[int, float | None]:
        count, oldest = self._select(v_sql.UNSETTLED, (source_id,))[0]
        return int(count), oldest

    def ping(self) -> None:
        self._select("SELECT 1")

    def epoch(self, source_id: str) -> int | None:
        rows = self._select("SELECT epoch FROM sources WHERE id=?", (source_id,))
        return int(rows[0][0]) if rows else None

    def load_records(self, source_id: str) -> dict[str, FileRecord]:
        rows = self._select(f"SELECT {FILE_COLUMNS} FROM files WHERE source_id=?", (source_id,))
        records = {r[0]: to_record(r) for r in rows}
        drop_in_slices(rows)  # a million rows freed at once would hold the GIL for 0.1 s
        return records

    def live_records(self, source_id: str) -> dict[str, FileRecord]:
        rows = self._select(f"SELECT {FILE_COLUMNS} FROM files WHERE source_id=? AND state != 'deleted'", (source_id,))
        return {r[0]: to_record(r) for r in rows}

    def tombstones(self, source_id: str, paths: Sequence[str]) -> dict[str, FileRecord]:
        found: dict[str, FileRecord] = {}
        for i in range(0, len(paths), LOOKUP_BATCH):
            chunk = paths[i : i + LOOKUP_BATCH]
            rows = self._select(
                f"SELECT {FILE_COLUMNS} FROM files WHERE source_id=? AND state='deleted'"
                f" AND path IN ({','.join('?' * len(chunk))})",
                (source_id, *chunk),
            )
            found.update((r[0], to_record(r)) for r in rows)
        return found

    def prune_tombstones(self, source_id: str, before: float, limit: int, *, epoch: int | None = None) -> list[str]:
        with self._tx() as db:
            self._fence(db, source_id, epoch)
            return [r[0] for r in self._exec(db, PRUNE_TOMBSTONES, (source_id, source_id, before, limit)).fetchall()]

    def get_record(self, source_id: str, path: str) -> FileRecord | None:
        rows = self._select(f"SELECT {FILE_COLUMNS} FROM files WHERE source_id=? AND path=?", (source_id, path))
        return to_record(rows[0]) if rows else None

    def undelivered(self, source_id: str, limit: int = 256, after_seq: int = 0) -> list[OutboxRow]:
        rows = self._select(
            "SELECT seq, event_id, type, path, payload, created FROM outbox"
            " WHERE source_id=? AND delivered IS NULL AND seq > ? ORDER BY seq LIMIT ?",
            (source_id, after_seq, limit),
        )
        return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    def history(self, source_id: str, path: str) -> list[HistoryRow]:
        rows = self._select(
            "SELECT seq, event_id, type, created, delivered, payload FROM outbox"
            " WHERE source_id=? AND path=? ORDER BY seq",
            (source_id, path),
        )
        return [HistoryRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def load_expectations(self, source_id: str) -> list[Expectation]:
        rows = self._select(
            "SELECT rule, period, path, deadline, state FROM expectations WHERE source_id=? ORDER BY deadline",
            (source_id,),
        )
        return [Expectation(*r) for r in rows]

    def load_sets(self, source_id: str) -> list[SetPeriod]:
        rows = self._select(
            "SELECT rule, period, name, deadline, state, generation, members FROM expect_sets"
            " WHERE source_id=? ORDER BY deadline",
            (source_id,),
        )
        return [
            SetPeriod(r[0], r[1], r[2], r[3], r[4], r[5], tuple((p, int(g)) for p, g in json.loads(r[6]))) for r in rows
        ]
