"""PURE decisions: a listing + prior records + now + policy -> what to record, verify and emit.

No I/O and no clock: ``now`` is always passed in. The watcher feeds
listings in (``plan_poll``), performs the verifications it is asked for (hash, sidecar read), and
feeds their results back (``after_verify``). It then commits the returned records and events in one
transaction before anything is sent, which is what makes delivery survive a crash.

A path's life::

    (new) ──listed──> PENDING ──stable + marker──> verify ──same bytes as last ready──> READY (no event)
                         ^                           │ ───new bytes──> READY (+ ready event)
                         │                           │ ───problem, < reject_after──> PENDING(problem)
           size/mtime changed, or changed            └──problem, >= reject_after──> REJECTED (+ event)
           while being verified

A READY/REJECTED/SKIPPED record whose size or mtime changes becomes PENDING again (a new version).
Files that disappear are dropped while unreported; once reported they keep a DELETED tombstone so
identical bytes uploaded again are still recognised as already delivered. Files the filters no
longer select are forgotten the same way, without a ``deleted`` event: they were not deleted.
Tombstones need not be among the records a poll is given: the caller looks up the tombstones of the
listed paths it has no record of (``unknown_paths``) and passes them in, so only live files have to be
held in memory between polls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from .model import Digest, Entry, EventSpec, FileRecord, State, version_identity
from .paths import PathFilter, Template

__all__ = [
    "Policy",
    "PollPlan",
    "VerifyOutcome",
    "VerifyRequest",
    "after_verify",
    "marker_releases",
    "observe",
    "plan_poll",
    "tombstone",
    "unknown_paths",
]


@dataclass(frozen=True, slots=True)
class Policy:
    """The decision-relevant part of a SourceConfig."""

    stable_for_s: float = 30.0
    min_age_s: float = 0.0
    min_size: int = 1
    checksum: Literal["sha256", "md5"] | None = "sha256"
    reject_after_s: float = 3600.0
    existing: Literal["emit", "skip"] = "emit"
    deletes: bool = False
    validate: bool = True
    marker: Template | None = None
    sidecar: Template | None = None
    path_filter: PathFilter = field(default_factory=lambda: PathFilter([], [], True))

    def is_companion(self, path: str) -> bool:
        """Markers and sidecars are never reported as files themselves."""
        return bool((self.marker and self.marker.matches(path)) or (self.sidecar and self.sidecar.matches(path)))


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    record: FileRecord
    entry: Entry
    sidecar_path: str | None
    #: a string identifying what is about to be checked (file and sidecar state)
    check_key: str


@dataclass(slots=True)
class PollPlan:
    upserts: list[FileRecord] = field(default_factory=list)
    removals: list[str] = field(default_factory=list)
    events: list[EventSpec] = field(default_factory=list)
    verify: list[VerifyRequest] = field(default_factory=list)
    next_due: float | None = None
    pending: int = 0
    tracked: int = 0
    ready_paths: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    record: FileRecord
    event: EventSpec | None


def observe(
    rec: FileRecord | None, entry: Entry, now: float, *, stable_since: float | None = None
) -> FileRecord | None:
    """The record after ``entry`` was listed, or None when nothing changed.

    A new path, a changed size or mtime, or a reappearing tombstone is a pending version whose
    stability clock starts at ``stable_since`` (default ``now``). Any change clears a problem found
    by an earlier verification, so ``reject_after`` counts only while the file stays unchanged.
    """
    since = now if stable_since is None else stable_since
    if rec is None:
        return FileRecord(entry.path, entry.size, entry.mtime, State.PENDING, now, since)
    if rec.size == entry.size and rec.mtime == entry.mtime and rec.state is not State.DELETED:
        return None
    if rec.state is State.PENDING:
        # Still being written: a problem seen on an earlier size (a truncated archive) says nothing
        # about this one, so the rejection clock starts over with the next failed check.
        return replace(
            rec,
            size=entry.size,
            mtime=entry.mtime,
            stable_since=since,
            problem=None,
            problem_since=None,
            checked=None,
        )
    return replace(
        rec,
        size=entry.size,
        mtime=entry.mtime,
        state=State.PENDING,
        first_seen=now,
        stable_since=since,
        problem=None,
        problem_since=None,
        checked=None,
    )


def marker_releases(marker: Entry | None, entry: Entry) -> bool:
    """Whether a listed marker releases this version of a data file.

    Only a marker written at or after the data file's last change counts: a marker left over from an
    earlier version (``x.csv.done`` still there while ``x.csv`` is being uploaded again) must not release
    the new upload half way. Both times come from the same server's clock; "at or after" keeps
    coarse-grained times (FTP listings in whole minutes) working.
    """
    return marker is not None and marker.mtime >= entry.mtime


def tombstone(rec: FileRecord, now: float) -> FileRecord:
    """A reported file's record once it is gone: ``stable_since`` becomes the time it went, which is
    what its retention counts from (the store prunes it ``--retention-days`` later)."""
    return replace(rec, state=State.DELETED, stable_since=now)


def unknown_paths(entries: Iterable[Entry], records: Mapping[str, FileRecord], policy: Policy) -> list[str]:
    """The listed paths ``plan_poll`` would consider that have no record: the only ones whose
    tombstones it needs (``plan_poll(..., tombstones=...)``)."""
    wanted = policy.path_filter.wanted
    companion = policy.is_companion if (policy.marker or policy.sidecar) else None
    return [
        e.path
        for e in entries
        if e.path not in records and wanted(e.path) and (companion is None or not companion(e.path))
    ]


_NONE: Mapping[str, FileRecord] = MappingProxyType({})


def _due(due: float | None, at: float) -> float:
    return at if due is None or at < due else due


def plan_poll(
    entries: Iterable[Entry],
    records: Mapping[str, FileRecord],
    now: float,
    policy: Policy,
    *,
    first_start: bool = False,
    unlisted_dirs: Iterable[str] = (),
    tombstones: Mapping[str, FileRecord] = _NONE,
) -> PollPlan:
    """Compare a complete listing with the records and decide what changed and what to verify.

    ``first_start`` is true only for the very first poll of a source (``existing`` applies then).
    Records under ``unlisted_dirs`` (directories the adapter could not read) are left untouched.
    ``tombstones``: the tombstones of listed paths without a record (those not in ``records``
    already), so that bytes seen before are recognised; a path that is back replaces its tombstone.
    """
    unlisted = tuple(d.rstrip("/") + "/" for d in unlisted_dirs)
    plan = PollPlan()
    listed: dict[str, Entry] = {e.path: e for e in entries}
    policy.path_filter.expect(len(listed))
    skip_existing = first_start and policy.existing == "skip"
    wanted = policy.path_filter.wanted
    companion = policy.is_companion if (policy.marker or policy.sidecar) else None
    tracked = pending = 0
    known_seen = 0  # records among the tracked paths: when that is all of them, none is gone
    pending_state, deleted_state = State.PENDING, State.DELETED
    verdict = policy.path_filter.verdicts.get
    for path, entry in listed.items():
        selected = verdict(path)
        if selected is None:
            selected = wanted(path)
        if not selected or (companion is not None and companion(path)):
            continue
        tracked += 1
        known = records.get(path)
        if known is not None:
            known_seen += 1
            # Most of a steady poll: a settled file, unchanged (what ``observe`` would say, inline).
            state = known.state
            if (
                known.size == entry.size
                and known.mtime == entry.mtime
                and state is not pending_state
                and state is not deleted_state
            ):
                continue
        elif (known := tombstones.get(path)) is None and skip_existing:  # a tombstone: a reported file back
            plan.upserts.append(
                FileRecord(
                    path,
                    entry.size,
                    entry.mtime,
                    State.SKIPPED,
                    now,
                    now,
                    ready_size=entry.size,
                    ready_mtime=entry.mtime,
                )
            )
            continue
        changed = observe(known, entry, now)
        if changed is not None:
            plan.upserts.append(changed)
        rec = changed if changed is not None else known
        assert rec is not None
        if rec.state is not State.PENDING:
            continue
        pending += 1
        if entry.size < policy.min_size:
            continue
        sidecar_path = policy.sidecar.render(path) if policy.sidecar else None
        sidecar_entry = listed.get(sidecar_path) if sidecar_path else None
        if sidecar_path is not None and sidecar_entry is None:
            continue  # the sidecar has not arrived; nothing to verify against yet
        if policy.marker is not None:
            marker = listed.get(policy.marker.render(path))
            if not marker_releases(marker, entry):
                continue
            # The producer declared the file done: the marker stands in for the stability window.
            eligible_at = entry.mtime + policy.min_age_s
        else:
            eligible_at = max(rec.stable_since + policy.stable_for_s, entry.mtime + policy.min_age_s)
        if now < eligible_at:
            plan.next_due = _due(plan.next_due, eligible_at)
            continue
        check_key = f"{entry.size}:{entry.mtime!r}"
        if sidecar_entry is not None:
            check_key += f"|{sidecar_entry.size}:{sidecar_entry.mtime!r}"
        if rec.checked == check_key:
            # Already failed verification on exactly this state; only time can change the verdict.
            if rec.problem_since is not None:
                reject_at = rec.problem_since + policy.reject_after_s
                if now >= reject_at:
                    rejected = replace(rec, state=State.REJECTED)
                    plan.upserts.append(rejected)
                    plan.events.append(_rejected_event(rejected, now, None))
                    pending -= 1
                else:
                    plan.next_due = _due(plan.next_due, reject_at)
            continue
        plan.verify.append(VerifyRequest(rec, entry, sidecar_path, check_key))

    in_scope = policy.path_filter.in_scope
    for path, rec in records.items() if known_seen < len(records) else ():
        if path in listed and wanted(path) and (companion is None or not companion(path)):
            continue  # listed and tracked
        if unlisted and path.startswith(unlisted):
            continue
        # A reported file keeps a tombstone, also when it went while new bytes were being written over
        # it (pending, generation > 0): else the reported bytes coming back would be reported again.
        reported = rec.state in (State.READY, State.REJECTED) or (rec.state is State.PENDING and rec.generation > 0)
        if not in_scope(path) or (companion is not None and companion(path)):
            # The config no longer asks for this path (include/exclude narrowed, recursive turned off,
            # now a marker or sidecar): forget it quietly, it was not deleted. A reported version keeps
            # a tombstone so widening the filters again does not report the same bytes twice.
            if reported:
                plan.upserts.append(tombstone(rec, now))
            elif rec.state is not State.DELETED:
                plan.removals.append(path)
            continue
        if reported:
            plan.upserts.append(tombstone(rec, now))
            if policy.deletes and rec.state is not State.REJECTED:
                # the last reported version's facts (a pending record's are the bytes after it)
                was_pending = rec.state is State.PENDING
                plan.events.append(
                    EventSpec(
                        "deleted",
                        path,
                        now,
                        size=rec.ready_size if was_pending and rec.ready_size is not None else rec.size,
                        mtime=rec.ready_mtime if was_pending and rec.ready_mtime is not None else rec.mtime,
                        checksum=rec.ready_checksum,
                        generation=rec.generation,
                    )
                )
        elif rec.state is not State.DELETED:
            plan.removals.append(path)
    plan.pending = pending
    plan.tracked = tracked
    return plan


def _rejected_event(rec: FileRecord, now: float, digest: Digest | None) -> EventSpec:
    return EventSpec(
        "rejected",
        rec.path,
        now,
        size=rec.size,
        mtime=rec.mtime,
        checksum=digest.value if digest else None,
        checksum_method=digest.method if digest else None,
        generation=rec.generation,
        first_seen=rec.first_seen,
        stable_since=rec.stable_since,
        problem=rec.problem,
    )


def after_verify(
    request: VerifyRequest,
    digest: Digest | None,
    after: Entry | None,
    now: float,
    policy: Policy,
    *,
    sidecar_problem: str | None = None,
    deadline: float | None = None,
    late: bool = False,
    late_seconds: float | None = None,
) -> VerifyOutcome:
    """Decide on a verified version.

    ``digest`` is None when the file vanished or changed while being read; ``after`` is the file's
    state re-read after hashing. ``sidecar_problem`` is a sidecar mismatch or unreadable sidecar.
    """
    rec, before = request.record, request.entry
    if digest is None or after is None or after.size != before.size or after.mtime != before.mtime:
        # Changed or vanished while being verified: wait for it to settle again, never an event.
        size, mtime = (after.size, after.mtime) if after is not None else (rec.size, rec.mtime)
        return VerifyOutcome(replace(rec, size=size, mtime=mtime, stable_since=now, checked=None), None)

    problem = digest.problem or sidecar_problem
    if problem is not None:
        since = rec.problem_since if rec.problem_since is not None else now
        waiting = replace(rec, problem=problem, problem_since=since, checked=request.check_key)
        if now - since >= policy.reject_after_s:
            rejected = replace(waiting, state=State.REJECTED)
            return VerifyOutcome(rejected, _rejected_event(rejected, now, digest))
        return VerifyOutcome(waiting, None)

    identity = version_identity(digest.value, after.size, after.mtime)
    previous_identity = (
        version_identity(rec.ready_checksum, rec.ready_size or 0, rec.ready_mtime or 0.0)
        if rec.generation > 0
        else None
    )
    if identity == previous_identity:
        # Same bytes as the version already reported (identical rewrite, touch, re-upload): no event.
        same = replace(
            rec,
            problem=None,
            problem_since=None,
            checked=None,
            state=State.READY,
            ready_size=after.size,
            ready_mtime=after.mtime,
        )
        return VerifyOutcome(same, None)

    generation = rec.generation + 1
    previous = (rec.ready_checksum, rec.ready_size or 0, rec.ready_mtime or 0.0) if rec.generation > 0 else None
    ready = replace(  # one replace, not two: this runs once per new version, 10,000 times in a burst
        rec,
        problem=None,
        problem_since=None,
        checked=None,
        state=State.READY,
        generation=generation,
        ready_checksum=digest.value,
        ready_size=after.size,
        ready_mtime=after.mtime,
    )
    event = EventSpec(
        "ready",
        rec.path,
        now,
        size=after.size,
        mtime=after.mtime,
        checksum=digest.value,
        checksum_method=digest.method if digest.value is not None else None,
        reason="new" if generation == 1 else "reupload",
        generation=generation,
        previous=previous,
        first_seen=rec.first_seen,
        stable_since=rec.stable_since,
        deadline=deadline,
        late=late,
        late_seconds=late_seconds,
    )
    return VerifyOutcome(ready, event)
