"""The one state API both backends implement, and the rows it returns.

Every method is synchronous and may raise ``StateError``; ``AsyncStore`` runs them on one dedicated
thread so the event loop never waits on a disk or a network round trip.

Fencing: a stream takes its source's lease with ``take_lease``, which bumps the source's ``epoch``.
Every write that passes ``epoch=`` checks it in the same transaction and raises ``LeaseLost`` once a
newer stream (in this process or another replica) has taken the source over, so a frozen or
partitioned owner can never write after its successor started. ``epoch=None`` writes unfenced (the
``state`` command, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core.model import Expectation, FileRecord, SetPeriod
from ..core.settle import Outcome, SettleVersion

__all__ = [
    "HistoryRow",
    "LeaseCallback",
    "NewEvent",
    "OutboxRow",
    "RecentEvent",
    "SettleResult",
    "SourceRow",
    "StateStore",
    "VersionRow",
]

#: Called with ``(source_id, epoch)`` when another process took a source's lease.
LeaseCallback = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    type: str
    path: str
    payload: bytes
    created: float


@dataclass(frozen=True, slots=True)
class HistoryRow:
    seq: int
    event_id: str
    type: str
    created: float
    delivered: float | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: str
    url: str
    first_start: float
    last_poll: float | None
    last_ok_poll: float | None
    last_error: str | None
    files: int
    pending: int
    undelivered: int


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """An outbox row without its payload, for the status page."""

    source_id: str
    event_id: str
    type: str
    path: str
    created: float
    delivered: float | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_id: str
    type: str
    path: str
    payload: bytes
    #: for ready events: the version as it can be settled later, with its actions
    version: SettleVersion | None = None


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A reported version and how far it got: delivered, settled, its post-action."""

    event_id: str
    source_id: str
    version: SettleVersion
    ready: float
    delivered: float | None
    settled: float | None
    outcome: Outcome | None
    message: str | None
    action: str | None
    action_state: str | None  # pending | done | changed | failed | none
    action_at: float | None
    action_detail: str | None
    target: str | None


@dataclass(frozen=True, slots=True)
class SettleResult:
    """``status``: ``not_found``, ``accepted``, ``same`` (already settled so) or ``conflict``."""

    status: str
    row: VersionRow | None = None


class StateStore(Protocol):
    """What the watcher, the server and the ``state`` command need from a state backend."""

    @property
    def location(self) -> str:
        """Where the state lives, for messages: a file path, or a URL without its password."""
        ...

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise ``StateError`` unless the store answers now."""

    # sources and leases
    def take_lease(self, source_id: str, url: str, owner: str, now: float) -> int:
        """Make ``owner`` the source's only writer; returns the new epoch (the fencing token)."""
        ...

    def epoch(self, source_id: str) -> int | None: ...

    async def listen_leases(self, on_change: LeaseCallback) -> None:
        """Forever: report leases taken by other processes as soon as they are taken."""

    def initialized(self, source_id: str) -> bool | None: ...

    def begin_source(self, source_id: str, url: str, now: float, *, epoch: int | None = None) -> tuple[bool, float]: ...

    def record_poll(
        self, source_id: str, at: float, ok: bool, error: str | None = None, *, epoch: int | None = None
    ) -> None: ...

    def list_sources(self) -> list[SourceRow]: ...

    def revision(self, source_id: str) -> int | None: ...

    # files
    def load_records(self, source_id: str) -> dict[str, FileRecord]: ...

    def live_records(self, source_id: str) -> dict[str, FileRecord]:
        """The records of files that are there (every record but the tombstones)."""
        ...

    def tombstones(self, source_id: str, paths: Sequence[str]) -> dict[str, FileRecord]:
        """The tombstones among ``paths``, looked up a few hundred at a time."""
        ...

    def prune_tombstones(self, source_id: str, before: float, limit: int, *, epoch: int | None = None) -> list[str]:
        """Drop at most ``limit`` tombstones of files gone before ``before``; returns their paths."""
        ...

    def get_record(self, source_id: str, path: str) -> FileRecord | None: ...

    def commit(
        self,
        source_id: str,
        upserts: Iterable[FileRecord] = (),
        removals: Iterable[str] = (),
        events: Iterable[NewEvent] = (),
        now: float = 0.0,
        expectations: Iterable[Expectation] = (),
        initialized: bool = False,
        expectations_dropped: Iterable[Expectation] = (),
        sets: Iterable[SetPeriod] = (),
        sets_dropped: Iterable[SetPeriod] = (),
        *,
        epoch: int | None = None,
    ) -> int: ...

    def forget(self, source_id: str, path: str | None = None) -> int: ...

    def forget_files(self, source_id: str, paths: list[str] | None, *, reset_source: bool = False) -> int: ...

    # outbox
    def undelivered(self, source_id: str, limit: int = 256, after_seq: int = 0) -> list[OutboxRow]: ...

    def mark_delivered(
        self, seqs: Iterable[int], now: float, *, source_id: str | None = None, epoch: int | None = None
    ) -> None: ...

    def prune_delivered(self, source_id: str, before: float, limit: int, *, epoch: int | None = None) -> int:
        """Drop at most ``limit`` delivered events and settled versions older than ``before``."""
        ...

    def undelivered_count(self, source_id: str) -> int: ...

    def history(self, source_id: str, path: str) -> list[HistoryRow]: ...

    def recent_events(self, limit: int = 20) -> list[RecentEvent]:
        """The latest events of every source, newest first (without payloads)."""
        ...

    # expectations
    def load_expectations(self, source_id: str) -> list[Expectation]: ...

    def load_sets(self, source_id: str) -> list[SetPeriod]: ...

    # settling
    def settle(self, event_id: str, outcome: Outcome, message: str, now: float) -> SettleResult:
        """Record how a version's processing ended, and its post-action as pending, in one transaction.

        The same outcome again changes nothing (``same``); a different one is refused (``conflict``).
        """
        ...

    def pending_actions(self, source_id: str) -> list[VersionRow]:
        """Settled versions whose move or delete has not run to an end yet, oldest settle first."""
        ...

    def finish_action(self, event_id: str, state: str, detail: str | None, target: str | None, now: float) -> None:
        """Record how a post-action ended: ``done``, ``changed`` (not the settled version) or ``failed``."""

    def note_action_attempt(self, event_id: str, detail: str, now: float) -> None:
        """A post-action failed in a way worth retrying: it stays pending; the reason is kept."""

    def versions(self, source_id: str, path: str) -> list[VersionRow]:
        """Every reported version of a path, oldest first."""
        ...

    def unsettled(self, source_id: str) -> tuple[int, float | None]:
        """Delivered versions that expect a settle and have none: how many, and the oldest delivery time."""
        ...
