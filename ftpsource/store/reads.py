"""Reads both backends run as they are: plain ``SELECT`` statements in SQLite's ``?`` style.

A backend provides ``_select`` (PostgreSQL swaps the placeholders for ``%s``); everything that writes,
fences or differs in SQL stays in the backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..core.model import Expectation, FileRecord, SetPeriod
from .api import HistoryRow, OutboxRow
from .files import FILE_COLUMNS, to_record

__all__ = ["SharedReads"]


class SharedReads:
    """Base of both backends' store classes."""

    def _select(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def ping(self) -> None:
        self._select("SELECT 1")

    def epoch(self, source_id: str) -> int | None:
        rows = self._select("SELECT epoch FROM sources WHERE id=?", (source_id,))
        return int(rows[0][0]) if rows else None

    def load_records(self, source_id: str) -> dict[str, FileRecord]:
        rows = self._select(f"SELECT {FILE_COLUMNS} FROM files WHERE source_id=?", (source_id,))
        return {r[0]: to_record(r) for r in rows}

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
