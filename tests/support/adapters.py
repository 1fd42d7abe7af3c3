"""Helpers shared by the adapter tests (local, FTP, SFTP)."""

from __future__ import annotations

from collections.abc import Callable

from ftpsource.core.model import Entry


def by_path(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.path)


class Recorder:
    """A Verifier that counts bytes and can run an action (a saboteur) on the first chunk."""

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        self.size = 0
        self.on_first = on_first

    def update(self, chunk: bytes) -> None:
        if self.size == 0 and self.on_first is not None:
            self.on_first()
        self.size += len(chunk)

    def finish(self) -> str | None:
        return None


def assert_no_secret(exc: BaseException, secret: str) -> None:
    """The secret appears nowhere in the exception or its chain."""
    seen: BaseException | None = exc
    while seen is not None:
        assert secret not in str(seen)
        assert secret not in repr(seen)
        seen = seen.__cause__ or seen.__context__
