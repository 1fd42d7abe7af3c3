"""The only code that touches a database: sources, file records, the outbox and expectations."""

from __future__ import annotations

from .sqlite import SCHEMA_VERSION, AsyncStore, HistoryRow, NewEvent, OutboxRow, RecentEvent, SourceRow, Store

__all__ = ["SCHEMA_VERSION", "AsyncStore", "HistoryRow", "NewEvent", "OutboxRow", "RecentEvent", "SourceRow", "Store"]
