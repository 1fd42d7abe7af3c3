"""Opening a state store by location, and running its calls off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..errors import LeaseLost, StateError
from .api import StateStore
from .postgres import PostgresStore, is_postgres_url
from .sqlite import Store

__all__ = ["AsyncStore", "open_store", "open_store_read_only"]

P = ParamSpec("P")
T = TypeVar("T")


def open_store(location: str | Path, password_file: Path | None = None) -> StateStore:
    """A SQLite file path or a ``postgresql://`` URL; creates or migrates the schema."""
    if is_postgres_url(location):
        return PostgresStore(str(location), password_file)
    return Store(Path(location))


def open_store_read_only(location: str | Path, password_file: Path | None = None) -> StateStore:
    """Existing state only: never creates a file or a table, never writes."""
    if is_postgres_url(location):
        return PostgresStore(str(location), password_file, read_only=True)
    return Store.open_read_only(Path(location))


class AsyncStore:
    """Runs ``StateStore`` calls on one dedicated thread: one connection, one writer, in order.

    ``healthy`` follows the outcome of the latest call, for readiness: false after the store failed
    (disk full, database unreachable), true again after the next call that succeeds.
    """

    def __init__(self, store: StateStore) -> None:
        self.sync = store
        self.healthy = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftpsource-store")

    @classmethod
    def open(cls, location: str | Path, password_file: Path | None = None) -> AsyncStore:
        return cls(open_store(location, password_file))

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except LeaseLost:
            raise
        except StateError:
            self.healthy = False
            raise
        self.healthy = True
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sync.close()
