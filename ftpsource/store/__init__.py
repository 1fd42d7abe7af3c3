"""The only code that touches a database: sources, file records, the outbox, expectations, settlements."""

from __future__ import annotations

from .sqlite import (
    SCHEMA_VERSION,
    AsyncStore,
    HistoryRow,
    NewEvent,
    OutboxRow,
    SettleResult,
    SourceRow,
    Store,
    VersionRow,
)

__all__ = [
    "SCHEMA_VERSION",
    "AsyncStore",
    "HistoryRow",
    "NewEvent",
    "OutboxRow",
    "SettleResult",
    "SourceRow",
    "Store",
    "VersionRow",
]
