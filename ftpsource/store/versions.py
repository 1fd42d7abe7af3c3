"""What both backends share for settling: the ``versions`` table's SQL and its rows.

Statements are written with ``?`` placeholders (SQLite's); the PostgreSQL backend swaps them for
``%s``. Each reported ready version gets one row, written in the transaction of its event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.settle import PostAction, SettleVersion
from .api import NewEvent, VersionRow

__all__ = [
    "FINISH",
    "INSERT",
    "NOTE_ATTEMPT",
    "PENDING",
    "SELECT_ONE",
    "SETTLE",
    "UNSETTLED",
    "VERSIONS_OF_PATH",
    "insert_rows",
    "to_version",
]

_COLUMNS = (
    "v.event_id, v.source_id, v.path, v.generation, v.size, v.mtime, v.checksum, v.on_success, v.on_failure, "
    "v.ready, (SELECT MAX(o.delivered) FROM outbox o WHERE o.event_id = v.event_id), v.settled, v.outcome, "
    "v.message, v.action, v.action_state, v.action_at, v.action_detail, v.target"
)
INSERT = (
    "INSERT INTO versions (event_id, source_id, path, generation, size, mtime, checksum, on_success, on_failure,"
    " expects_settle, ready) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING"
)
SELECT_ONE = f"SELECT {_COLUMNS} FROM versions v WHERE v.event_id=?"
SETTLE = "UPDATE versions SET settled=?, outcome=?, message=?, action=?, action_state=? WHERE event_id=?"
PENDING = f"SELECT {_COLUMNS} FROM versions v WHERE v.source_id=? AND v.action_state='pending' ORDER BY v.settled"
FINISH = "UPDATE versions SET action_state=?, action_detail=?, target=?, action_at=? WHERE event_id=?"
NOTE_ATTEMPT = "UPDATE versions SET action_detail=?, action_at=? WHERE event_id=? AND action_state='pending'"
VERSIONS_OF_PATH = f"SELECT {_COLUMNS} FROM versions v WHERE v.source_id=? AND v.path=? ORDER BY v.ready"
UNSETTLED = (
    "SELECT COUNT(*), MIN(d) FROM (SELECT (SELECT MAX(o.delivered) FROM outbox o WHERE o.event_id = v.event_id)"
    " AS d FROM versions v WHERE v.source_id=? AND v.settled IS NULL AND v.expects_settle=1) AS t WHERE d > 0"
)


def insert_rows(source_id: str, events: Iterable[NewEvent], now: float) -> list[tuple[Any, ...]]:
    """``INSERT`` parameters for the ready events among ``events``."""
    texts: dict[PostAction, str] = {}  # a burst's versions share their source's two actions

    def text(action: PostAction) -> str:
        found = texts.get(action)
        if found is None:
            found = texts[action] = action.to_json()
        return found

    return [
        (
            e.event_id,
            source_id,
            v.path,
            v.generation,
            v.size,
            v.mtime,
            v.checksum,
            text(v.on_success),
            text(v.on_failure),
            int(v.expects_settle),
            now,
        )
        for e in events
        if (v := e.version) is not None
    ]


def to_version(r: tuple[Any, ...] | Any) -> VersionRow:
    version = SettleVersion(r[2], r[3], r[4], r[5], r[6], PostAction.from_json(r[7]), PostAction.from_json(r[8]))
    delivered = r[10] if r[10] is not None and r[10] >= 0 else None
    return VersionRow(r[0], r[1], version, r[9], delivered, *r[11:])
