"""The only code that touches a database: one state API (``StateStore``), SQLite and PostgreSQL behind it."""

from __future__ import annotations

from .aio import AsyncStore, open_store, open_store_read_only
from .api import (
    HistoryRow,
    LeaseCallback,
    NewEvent,
    OutboxRow,
    RecentEvent,
    SettleResult,
    SourceRow,
    StateStore,
    VersionRow,
)
from .postgres import PostgresStore, is_postgres_url, redact_url
from .sqlite import SCHEMA_VERSION, Store

__all__ = [
    "SCHEMA_VERSION",
    "AsyncStore",
    "HistoryRow",
    "LeaseCallback",
    "NewEvent",
    "OutboxRow",
    "PostgresStore",
    "RecentEvent",
    "SettleResult",
    "SourceRow",
    "StateStore",
    "Store",
    "VersionRow",
    "is_postgres_url",
    "open_store",
    "open_store_read_only",
    "redact_url",
]
