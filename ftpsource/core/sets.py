"""PURE: files expected together. One report per set and period, early warnings, amendments.

A set period is one (set, deadline): every member of ``files`` (a path template, or a pattern with a
count of distinct files), rendered with the deadline's local date-time, must be ready by
``deadline + grace``. Decisions come from the file records alone, so the order in which members
arrive, re-uploads of identical bytes and restarts cannot change what is reported:

- ``set_at_risk`` once, when ``deadline - warn_before`` passes and the set is not complete;
- ``set_incomplete`` once, when ``deadline + grace`` passes with members missing;
- ``set_complete`` once, when every member is ready (``late`` when after ``deadline + grace``);
- ``set_amended`` each time a reported member gets a new version (its file ``generation`` grew).

A member counts as ready once a version of it was reported (file ``generation`` >= 1), even if it was
since moved away or is being re-uploaded: the set reports what was delivered.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from wcmatch import glob as wcglob

from .expect import deadlines
from .model import EventSpec, Expectation, ExpectSetSpec, FileRecord, SetMember, SetPeriod

__all__ = [
    "OPEN",
    "TODAY_S",
    "SetPlan",
    "SetStatus",
    "advance_sets",
    "prunable_sets",
    "resolve",
    "set_key",
    "set_status",
    "todays",
]

#: Settled periods are kept this long after their deadline (for amendments and the status page).
RETAIN_S = 35 * 86400
#: States in which a period still waits for members; the first two are before deadline + grace.
WAITING = frozenset({"open", "at_risk", "incomplete"})
OPEN = frozenset({"open", "at_risk"})
#: Periods whose deadline is this recent (or still ahead, or still waiting) are "today's".
TODAY_S = 86400
_GLOB_CHARS = re.compile(r"[*?\[]")

SetEvent = Literal["set_complete", "set_amended", "set_incomplete", "set_at_risk"]


def set_key(rule: ExpectSetSpec) -> str:
    """Stable identity of a set's series: renaming it or changing its schedule or zone starts a new one.

    The member list is not part of it, so adding a member applies to the periods still waiting.
    """
    text = f"set\0{rule.set}\0{rule.schedule}\0{rule.timezone}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Series:
    """A set seen as one expected path, for the deadline series of core.expect: its "path" joins every
    member, so two deadlines are one period exactly when every member renders the same."""

    path: str
    schedule: str
    timezone: str
    grace_s: float
    warn_before_s: float | None


def _series(rule: ExpectSetSpec) -> _Series:
    path = " | ".join(m if isinstance(m, str) else m.pattern for m in rule.files)
    return _Series(path, rule.schedule, rule.timezone, rule.grace_s, rule.warn_before_s)


@dataclass(slots=True)
class SetStatus:
    """Which members of one period are there."""

    present: list[SetMember]
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing


class _Paths:
    """The reported paths, sorted once per evaluation so a pattern only looks at its literal prefix."""

    def __init__(self, records: Mapping[str, FileRecord]) -> None:
        self._records = records
        self._sorted: list[str] | None = None

    def matching(self, pattern: str) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(p for p, r in self._records.items() if _reported(r))
        m = _GLOB_CHARS.search(pattern)
        prefix = pattern if m is None else pattern[: m.start()]
        regex = re.compile(wcglob.translate(pattern, flags=wcglob.DOTGLOB)[0][0])
        out: list[str] = []
        for path in self._sorted[bisect.bisect_left(self._sorted, prefix) :]:
            if not path.startswith(prefix):
                break
            if regex.fullmatch(path):
                out.append(path)
        return out


def _reported(rec: FileRecord | None) -> bool:
    return rec is not None and rec.generation >= 1 and rec.ready_size is not None


def _member(rec: FileRecord) -> SetMember:
    return SetMember(
        rec.path,
        rec.ready_size if rec.ready_size is not None else rec.size,
        rec.ready_checksum,
        rec.ready_mtime if rec.ready_mtime is not None else rec.mtime,
        rec.generation,
    )


def _local(period: str) -> datetime:
    return datetime.fromisoformat(period)


def resolve(
    rule: ExpectSetSpec, period: str, records: Mapping[str, FileRecord], paths: _Paths | None = None
) -> SetStatus:
    """The members of ``rule`` for ``period`` (its deadline's local ISO date-time), given the records."""
    local = _local(period)
    paths = paths or _Paths(records)
    present: list[SetMember] = []
    missing: list[str] = []
    for spec in rule.files:
        if isinstance(spec, str):
            path = local.strftime(spec)
            rec = records.get(path)
            if rec is not None and _reported(rec):
                present.append(_member(rec))
            else:
                missing.append(path)
        else:
            pattern = local.strftime(spec.pattern)
            found = paths.matching(pattern)
            present.extend(_member(records[p]) for p in found)
            if len(found) < spec.count:
                missing.append(pattern)
    return SetStatus(present, missing)


@dataclass(slots=True)
class SetPlan:
    changed: list[SetPeriod]
    events: list[EventSpec]
    next_due: float | None


def advance_sets(
    rules: Iterable[ExpectSetSpec],
    periods: Mapping[tuple[str, str], SetPeriod],
    records: Mapping[str, FileRecord],
    since: float,
    now: float,
) -> SetPlan:
    """Materialise each set's deadlines up to the next upcoming one and decide what to report now.

    The series is the one files have (core.expect): a set seen for the first time starts at ``since``
    (when the stream that brought it opened), and deadlines before it are never checked.
    """
    changed: dict[tuple[str, str], SetPeriod] = {}
    events: list[EventSpec] = []
    next_due: float | None = None
    paths = _Paths(records)

    def due_at(at: float) -> None:
        nonlocal next_due
        next_due = at if next_due is None else min(next_due, at)

    by_key: dict[str, list[SetPeriod]] = {}
    for x in periods.values():
        by_key.setdefault(x.rule, []).append(x)
    for rule in rules:
        key = set_key(rule)
        known = sorted(by_key.get(key, []), key=lambda x: x.deadline)
        rows = list(known)
        series = _series(rule)
        newest = known[-1] if known else None
        anchor = None
        if newest is not None:
            anchor = Expectation(key, newest.period, _local(newest.period).strftime(series.path), newest.deadline, "")
        fresh = [
            SetPeriod(key, local.isoformat(), rule.set, local.timestamp(), "open")
            for local, _ in deadlines(series, anchor, since, now)
        ]
        changed.update(((x.rule, x.period), x) for x in fresh)
        rows.extend(fresh)
        last = fresh[-1].deadline if fresh else newest.deadline if newest is not None else None
        if last is not None and last > now:
            due_at(last)  # when the upcoming deadline passes, materialise the one after it
        for x in rows:
            after = _decide(rule, x, records, paths, now, events)
            if after != x:
                changed[(after.rule, after.period)] = after
            if after.state in WAITING:
                for at in (_warn_at(rule, after), after.deadline + rule.grace_s):
                    if at is not None and at > now:
                        due_at(at)
    return SetPlan(list(changed.values()), events, next_due)


def _warn_at(rule: ExpectSetSpec, x: SetPeriod) -> float | None:
    if rule.warn_before_s is None or x.state != "open":
        return None
    return x.deadline - rule.warn_before_s


def _decide(
    rule: ExpectSetSpec,
    x: SetPeriod,
    records: Mapping[str, FileRecord],
    paths: _Paths,
    now: float,
    events: list[EventSpec],
) -> SetPeriod:
    due = x.deadline + rule.grace_s

    def event(kind: SetEvent, y: SetPeriod, status: SetStatus, late: bool = False) -> None:
        events.append(
            EventSpec(
                kind,
                rule.set,
                now,
                period=y.period,
                deadline=y.deadline,
                late=late,
                late_seconds=round(now - y.deadline, 3) if late else None,
                generation=y.generation,
                members=tuple(status.present),
                missing=tuple(status.missing),
            )
        )

    if x.state in ("complete", "late"):
        amended = []
        for path, gen in x.members:
            rec = records.get(path)
            amended.append(
                (path, rec.generation if rec is not None and _reported(rec) and rec.generation > gen else gen)
            )
        if tuple(amended) == x.members:
            return x
        y = replace(x, generation=x.generation + 1, members=tuple(amended))
        present = [_member(records[p]) if _reported(records.get(p)) else None for p, _ in amended]
        status = SetStatus([m for m in present if m is not None], [])
        event("set_amended", y, status, late=x.state == "late")
        return y
    status = resolve(rule, x.period, records, paths)
    if status.complete:
        late = now > due
        y = replace(
            x,
            state="late" if late else "complete",
            generation=1,
            members=tuple((m.path, m.generation) for m in status.present),
        )
        event("set_complete", y, status, late=late)
        return y
    if x.state != "incomplete" and now >= due:
        y = replace(x, state="incomplete")
        event("set_incomplete", y, status)
        return y
    warn_at = _warn_at(rule, x)
    if warn_at is not None and warn_at <= now < due:
        y = replace(x, state="at_risk")
        event("set_at_risk", y, status)
        return y
    return x


def prunable_sets(periods: Mapping[tuple[str, str], SetPeriod], now: float) -> list[SetPeriod]:
    """Periods older than ``RETAIN_S``, never the newest of a series (it anchors ``advance_sets``)."""
    newest: dict[str, float] = {}
    for x in periods.values():
        newest[x.rule] = max(newest.get(x.rule, x.deadline), x.deadline)
    return [x for x in periods.values() if x.deadline < now - RETAIN_S and x.deadline < newest[x.rule]]


def set_status(y: SetPeriod) -> str:
    """How a set period stands, for people: waiting, at_risk, missing (incomplete after its grace),
    complete, late (complete after its grace) or amended (reported again for new member bytes)."""
    if y.generation > 1:
        return "amended"
    return {"open": "waiting", "incomplete": "missing"}.get(y.state, y.state)


def todays(deadline: float, waiting: bool, now: float) -> bool:
    """Whether a period belongs on today's board: due in the last day or later, or still before its
    deadline + grace (``waiting``)."""
    return waiting or deadline >= now - TODAY_S
