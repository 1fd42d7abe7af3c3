"""What both backends share for pruning: the SQL that drops what is past its retention, and the
indexes that let it find those rows without walking the rest.

Statements use ``?`` placeholders (SQLite's); the PostgreSQL backend swaps them for ``%s``. Each runs
on at most ``limit`` rows, so one pruning transaction stays short however much has piled up.
"""

from __future__ import annotations

__all__ = ["PRUNE_OUTBOX", "PRUNE_TOMBSTONES", "PRUNE_VERSIONS", "RETENTION_INDEXES"]

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
#: Tombstones whose file went (``stable_since``) before the cut-off; returns their paths.
PRUNE_TOMBSTONES = (
    "DELETE FROM files WHERE source_id=? AND path IN (SELECT path FROM files WHERE source_id=? AND state='deleted'"
    " AND stable_since < ? LIMIT ?) RETURNING path"
)
#: Without these, each pruning statement scans the source's whole retention window to find its few
#: hundred rows, and a busy source's daily pruning grows with the window. The last one serves the
#: ``unsettled`` gauge (``versions.UNSETTLED``), refreshed every second during a burst: it reads only
#: the versions still waiting to be settled, not every version of the window (1 s each at 350,000).
RETENTION_INDEXES = (
    "CREATE INDEX IF NOT EXISTS files_tombstones ON files (source_id, stable_since) WHERE state = 'deleted'",
    "CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (source_id, delivered) WHERE delivered IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS versions_ready ON versions (source_id, ready)",
    "CREATE INDEX IF NOT EXISTS versions_unsettled ON versions (source_id)"
    " WHERE settled IS NULL AND expects_settle = 1",
)
