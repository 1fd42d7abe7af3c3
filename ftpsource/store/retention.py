"""What both backends share for pruning: the SQL that drops delivered events past their retention.

Statements use ``?`` placeholders (SQLite's); the PostgreSQL backend swaps them for ``%s``. Each runs
on at most ``limit`` rows, so one pruning transaction stays short however much has piled up.
"""

from __future__ import annotations

__all__ = ["PRUNE_OUTBOX", "PRUNE_VERSIONS"]

#: Delivered (or dropped by ``forget``) events older than the cut-off, except the event of a version
#: still waiting to be settled: its delivery time is what ``unsettled_versions`` counts from.
PRUNE_OUTBOX = (
    "DELETE FROM outbox WHERE seq IN (SELECT o.seq FROM outbox o WHERE o.source_id=? AND o.delivered IS NOT NULL"
    " AND o.delivered < ? AND o.created < ? AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.event_id = o.event_id"
    " AND v.expects_settle = 1 AND v.settled IS NULL) LIMIT ?)"
)
#: Versions reported before the cut-off that are settled (or never will be) and have no action left.
PRUNE_VERSIONS = (
    "DELETE FROM versions WHERE event_id IN (SELECT v.event_id FROM versions v WHERE v.source_id=? AND v.ready < ?"
    " AND (v.settled IS NOT NULL OR v.expects_settle = 0) AND (v.action_state IS NULL OR v.action_state != 'pending')"
    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = v.event_id AND o.delivered IS NULL) LIMIT ?)"
)
