"""Exceptions raised by ftpsource.

Every error ftpsource raises on purpose derives from :class:`FtpsourceError`::

    FtpsourceError
    ├── ConfigError              bad source config or server settings; names every bad field
    │   └── PolicyError              a valid config the operator's policy forbids (a root not allowed,
    │                                a credential set not bound to the URL's host)
    ├── StateError               the state store (SQLite or PostgreSQL) cannot be opened or written
    │   └── LeaseLost                a newer stream, maybe on another replica, took the source over
    └── SourceError              a protocol adapter failed; ``kind`` labels the metric
        ├── TransientSourceError     worth retrying with backoff (refused, timeout, reset)
        ├── PermanentSourceError     retrying will not help (auth, host key, missing root)
        ├── FileVanished             the file changed or disappeared while being read
        ├── ActionRefused            the server refused a move or delete (target exists, no permission)
        └── StageError               object storage (``stage``) failed; the version is read again later

Third-party exceptions are translated at the adapter boundary (``raise SourceError(...) from exc``)
so nothing above ``ftpsource.sources`` needs to know about aioftp, asyncssh or OSError.
Messages never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "ActionRefused",
    "ConfigError",
    "FileVanished",
    "FtpsourceError",
    "LeaseLost",
    "PermanentSourceError",
    "PolicyError",
    "SourceError",
    "StageError",
    "StateError",
    "TransientSourceError",
]


class FtpsourceError(Exception):
    """Base class of every ftpsource error."""


class ConfigError(FtpsourceError):
    """Invalid configuration. ``problems`` holds one ``field: reason`` line per bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class PolicyError(ConfigError):
    """The config is valid, but the operator does not allow it: the server answers ``PERMISSION_DENIED``."""


class StateError(FtpsourceError):
    """The state store is unusable (unwritable directory, full disk, corrupt file, database unreachable)."""


class LeaseLost(StateError):
    """This stream's lease on its source moved to a newer stream: it must stop, having written nothing."""


class SourceError(FtpsourceError):
    """A protocol adapter failed. ``kind`` is a short label used in metrics and logs."""

    kind: str = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class TransientSourceError(SourceError):
    """Connection refused, reset, timed out: retried with exponential backoff."""

    kind = "transient"


class PermanentSourceError(SourceError):
    """Wrong password, wrong host key, missing root directory: needs a human."""

    kind = "permanent"


class FileVanished(SourceError):
    """The file disappeared or changed while it was being read; it goes back to pending."""

    kind = "vanished"


class ActionRefused(SourceError):
    """A settled file's move or delete was refused for good (target exists, permission denied)."""

    kind = "action"


class StageError(SourceError):
    """Object storage refused or could not be reached while staging; the event waits and it is retried."""

    kind = "stage"
