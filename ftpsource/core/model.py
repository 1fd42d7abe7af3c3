"""The plain data types the decision core works on: what an adapter lists and reads, what is
remembered about a file, a decided event, and an expected file's period.

PURE: no I/O. Adapters produce ``Entry``/``Listing``/``Digest``; the store persists ``FileRecord`` and
``Expectation``; ``core.events`` encodes ``EventSpec``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

__all__ = [
    "Algorithm",
    "Digest",
    "Entry",
    "EventSpec",
    "ExpectRuleSpec",
    "ExpectSetSpec",
    "Expectation",
    "FileRecord",
    "Listing",
    "SetMember",
    "SetPatternSpec",
    "SetPeriod",
    "Staged",
    "State",
    "Verifier",
    "version_identity",
]

Algorithm = Literal["sha256", "md5"]


class State(StrEnum):
    PENDING = "pending"
    READY = "ready"
    REJECTED = "rejected"
    SKIPPED = "skipped"  # present at a source's first start with `existing: skip`
    DELETED = "deleted"  # tombstone of a reported file


@dataclass(frozen=True, slots=True)
class FileRecord:
    """What is remembered about one path. ``size``/``mtime`` are as last observed;
    ``ready_*`` describe the last version reported ready (generation ``generation``)."""

    path: str
    size: int
    mtime: float
    state: State
    first_seen: float  # when the current version was first observed
    stable_since: float  # when size/mtime last changed
    generation: int = 0
    ready_checksum: str | None = None
    ready_size: int | None = None
    ready_mtime: float | None = None
    problem: str | None = None
    problem_since: float | None = None
    checked: str | None = None  # what a failed verification saw; re-verify only when it changes


@dataclass(frozen=True, slots=True)
class Staged:
    """Where a version's bytes were landed in object storage (``data.staged`` of its ready event)."""

    url: str
    bucket: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A decided event, before it is encoded as a CloudEvent (events.py)."""

    type: Literal[
        "ready",
        "rejected",
        "deleted",
        "missing",
        "at_risk",
        "set_complete",
        "set_amended",
        "set_incomplete",
        "set_at_risk",
    ]
    path: str
    at: float
    size: int = 0
    mtime: float = 0.0
    checksum: str | None = None
    checksum_method: str | None = None
    reason: Literal["new", "reupload"] | None = None
    generation: int = 0
    previous: tuple[str | None, int, float] | None = None  # checksum, size, mtime
    first_seen: float = 0.0
    stable_since: float = 0.0
    problem: str | None = None
    period: str | None = None
    deadline: float | None = None
    late: bool = False
    late_seconds: float | None = None
    staged: Staged | None = None
    #: set events: ``path`` is the set's name; ``members`` the present member files, ``missing`` the
    #: member paths or patterns not (fully) there
    members: tuple[SetMember, ...] = ()
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One regular file as listed. ``mtime`` is seconds since the epoch (UTC).

    Adapters must return the same ``(size, mtime)`` for an unchanged file on every listing, even when
    the protocol only gives coarse times (FTP LIST), so a precision change is never read as a new version.
    """

    path: str
    size: int
    mtime: float


@dataclass(slots=True)
class Listing:
    """A listing of the tree, complete except for ``unlisted_dirs``.

    ``warnings`` name lines or entries that were skipped. ``unlisted_dirs`` are directories (relative,
    no trailing slash) that could not be read; records under them are kept as they are, never read as
    deleted. ``bad_names`` describe entries skipped because their name is unusable (``name_problem``).
    An adapter raises instead when the root itself or the connection fails.
    """

    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    unlisted_dirs: list[str] = field(default_factory=list)
    bad_names: list[str] = field(default_factory=list)


class Verifier(Protocol):
    """Fed every chunk while hashing; ``finish`` returns a problem description or None (see formats.py)."""

    def update(self, chunk: bytes) -> None: ...

    def finish(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """The outcome of reading a file completely."""

    algorithm: Algorithm | None
    value: str | None
    method: Literal["local", "download", "server"]
    size: int
    problem: str | None = None
    #: the file's mtime right after reading, when the adapter knows it (saves the caller a stat)
    mtime: float | None = None


@dataclass(frozen=True, slots=True)
class Expectation:
    rule: str
    period: str
    path: str
    deadline: float
    state: str  # open | at_risk | met | late | missing (see core.expect)


class ExpectRuleSpec(Protocol):
    """What the core needs of an ``expect`` rule (the validated config's ``ExpectRule`` is one)."""

    @property
    def path(self) -> str: ...

    @property
    def schedule(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def grace_s(self) -> float: ...

    @property
    def warn_before_s(self) -> float | None: ...


class SetPatternSpec(Protocol):
    """A set member made of several files: ``count`` distinct ready files matching ``pattern``."""

    @property
    def pattern(self) -> str: ...

    @property
    def count(self) -> int: ...


class ExpectSetSpec(Protocol):
    """What the core needs of an ``expect`` set (the validated config's ``ExpectSet`` is one)."""

    @property
    def set(self) -> str: ...

    @property
    def files(self) -> Sequence[str | SetPatternSpec]: ...

    @property
    def schedule(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def grace_s(self) -> float: ...

    @property
    def warn_before_s(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class SetMember:
    """A member file of a set as it was last reported ready."""

    path: str
    size: int
    checksum: str | None
    mtime: float
    generation: int
    staged: Staged | None = None  # with ``stage``: where this version's bytes are (core.stage.staged)


@dataclass(frozen=True, slots=True)
class SetPeriod:
    """One period of an expected set. ``state``: ``open`` -> ``at_risk`` (warned) -> ``incomplete``
    (deadline + grace passed, reported) -> ``complete`` or ``late`` (reported complete, on time or
    not). ``generation`` counts complete + amended reports; ``members`` are the ``(path, generation)``
    pairs last reported, so an amendment is reported only for a new member version."""

    rule: str
    period: str
    name: str
    deadline: float
    state: str
    generation: int = 0
    members: tuple[tuple[str, int], ...] = ()


def version_identity(checksum: str | None, size: int, mtime: float) -> str:
    """Content identity: the checksum, or size+mtime when checksums are off."""
    return checksum if checksum is not None else f"size={size},mtime={mtime!r}"
