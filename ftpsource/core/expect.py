"""PURE: expected files. Deadlines from cron schedules, ``missing`` once per period, late arrivals.

An expectation is one (rule, period): the file ``rule.path`` rendered with the deadline's local
date-time must be ready by ``deadline + grace``. States: ``open`` -> ``at_risk`` (``warn_before`` the
deadline, one ``at_risk`` event) -> ``met`` (a ready version arrived in time), ``late`` (it arrived after
the grace) or ``missing`` (the grace passed first; one ``missing`` event) -> ``late``.

Each rule keeps its deadlines materialised from when the rule first appeared up to the next upcoming
deadline, so a deadline that passed while the server was down is checked on the next start, and
deadlines before the rule first appeared are never checked (no backfill).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from .model import EventSpec, Expectation, ExpectRuleSpec, FileRecord, State

__all__ = [
    "MET",
    "OPEN",
    "ArrivalMatch",
    "ExpectPlan",
    "advance",
    "deadlines",
    "file_status",
    "match_arrival",
    "prunable",
    "rule_key",
    "warn",
]

#: After a long outage, at most this many past deadlines per rule are checked.
MAX_CATCH_UP = 1000
#: Settled expectations (met or missing) are kept this long after their deadline, for late arrivals
#: and `state show`; then they are dropped so a minute schedule does not grow the state forever.
RETAIN_S = 35 * 86400
#: States of an expectation still waiting for its file, and of one whose file arrived.
OPEN = frozenset({"open", "at_risk"})
MET = frozenset({"met", "late"})


def rule_key(rule: ExpectRuleSpec) -> str:
    """Stable identity of a rule: changing its path, schedule or zone starts a new series."""
    text = f"{rule.path}\0{rule.schedule}\0{rule.timezone}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dated(rule: ExpectRuleSpec) -> bool:
    return "%" in rule.path.replace("%%", "")


@dataclass(slots=True)
class ExpectPlan:
    changed: list[Expectation]
    events: list[EventSpec]
    next_due: float | None


def _deadlines(rule: ExpectRuleSpec, last: Expectation | None, since: float, now: float) -> list[tuple[datetime, str]]:
    """The deadlines after ``last`` (or after ``since`` for a rule seen for the first time) up to and
    including the first one after ``now``, as (local date-time, rendered path), periods de-duplicated.

    After a long outage only the newest ``MAX_CATCH_UP`` past deadlines are computed at all: they are
    found walking back from ``now``, so nothing is computed that is not also checked.
    """
    tz = ZoneInfo(rule.timezone)
    after = last.deadline if last is not None else since
    if after > now:
        return []  # the upcoming deadline is already known
    candidates: list[datetime] = []
    # croniter steps strictly before/after its start: start a second late so a deadline at exactly
    # `now` is found walking back, and skip what that second adds.
    back = croniter(rule.schedule, datetime.fromtimestamp(now + 1, tz))
    while len(candidates) < MAX_CATCH_UP:
        local = back.get_prev(datetime)
        if local.timestamp() <= after:
            break
        if local.timestamp() <= now:
            candidates.append(local)
    candidates.reverse()
    candidates.append(croniter(rule.schedule, datetime.fromtimestamp(now, tz)).get_next(datetime))
    previous = (datetime.fromisoformat(last.period), last.path) if last is not None else None
    out: list[tuple[datetime, str]] = []
    for local in candidates:
        path = local.strftime(rule.path)
        if previous is not None and _same_period(rule, previous, (local, path)):
            continue
        out.append((local, path))
        previous = (local, path)
    return out


def deadlines(rule: ExpectRuleSpec, last: Expectation | None, since: float, now: float) -> list[tuple[datetime, str]]:
    """The series logic of ``advance``, for other kinds of expectation (sets, core.sets)."""
    return _deadlines(rule, last, since, now)


def _same_period(rule: ExpectRuleSpec, earlier: tuple[datetime, str], later: tuple[datetime, str]) -> bool:
    """Whether ``later`` repeats the period of ``earlier`` (the first one wins).

    - The hour repeated when clocks go back: ``30 2 * * *`` in Europe/Berlin matches 02:30 twice on
      that night; a person reading the schedule means one deadline, the first.
    - A dated path rendered twice the same day (``sales_%Y%m%d.csv`` with ``0 6,18 * * *``) names one
      file, so one period, due at the first deadline.
    """
    (a, a_path), (b, b_path) = earlier, later
    if b.replace(tzinfo=None) <= a.replace(tzinfo=None):
        return True
    return _dated(rule) and a_path == b_path and a.date() == b.date()


def advance(
    rules: Iterable[ExpectRuleSpec],
    expectations: Mapping[tuple[str, str], Expectation],
    records: Mapping[str, FileRecord],
    since: float,
    now: float,
) -> ExpectPlan:
    """Materialise deadlines up to the next upcoming one and flag those whose grace has passed.

    A rule with no expectation yet (new, or edited: a changed rule is a new series) starts at ``since``,
    when the stream that brought it opened (the source's first start, for a new source): deadlines
    before it are not checked.
    """
    changed: list[Expectation] = []
    events: list[EventSpec] = []
    next_due: float | None = None

    def due_at(at: float) -> None:
        nonlocal next_due
        next_due = at if next_due is None else min(next_due, at)

    for rule in rules:
        key = rule_key(rule)
        known = [x for (k, _), x in expectations.items() if k == key]
        newest = max(known, key=lambda x: x.deadline, default=None)
        fresh: list[Expectation] = []
        for local, path in _deadlines(rule, newest, since, now):
            rec = records.get(path)
            # A dated file that is already ready arrived before its deadline was materialised.
            met = _dated(rule) and rec is not None and rec.state is State.READY
            fresh.append(Expectation(key, local.isoformat(), path, local.timestamp(), "met" if met else "open"))
        last = fresh[-1].deadline if fresh else newest.deadline if newest is not None else None
        if last is not None and last > now:
            # When the upcoming deadline passes, materialise the one after it. (A deadline that repeats
            # a known period is not materialised; one already past is no reason to poll again at once.)
            due_at(last)
        for x in [x for x in known if x.state in OPEN] + fresh:
            due = x.deadline + rule.grace_s
            if x.state in OPEN and now >= due:
                x = replace(x, state="missing")
                events.append(EventSpec("missing", x.path, now, period=x.period, deadline=x.deadline))
                changed.append(x)
            else:
                if x.state in OPEN:
                    due_at(due)
                if x in fresh:
                    changed.append(x)
    return ExpectPlan(changed, events, next_due)


@dataclass(frozen=True, slots=True)
class ArrivalMatch:
    expectation: Expectation | None
    deadline: float | None
    late: bool
    late_seconds: float | None


def match_arrival(
    rules: Iterable[ExpectRuleSpec], expectations: Mapping[tuple[str, str], Expectation], path: str, now: float
) -> ArrivalMatch:
    """Which expectation a ready ``path`` fulfils: the earliest open or missing one, else the latest met.

    ``late`` means ready after ``deadline + grace``; ``late_seconds`` counts from the deadline itself.
    """
    grace = {rule_key(r): r.grace_s for r in rules}
    candidates = [x for x in expectations.values() if x.path == path and x.rule in grace]
    if not candidates:
        return ArrivalMatch(None, None, False, None)
    unmet = sorted((x for x in candidates if x.state not in MET), key=lambda x: x.deadline)
    chosen = unmet[0] if unmet else max(candidates, key=lambda x: x.deadline)
    late = now > chosen.deadline + grace[chosen.rule]
    return ArrivalMatch(
        replace(chosen, state="late" if late else "met") if chosen.state not in MET else None,
        chosen.deadline,
        late,
        round(now - chosen.deadline, 3) if late else None,
    )


def prunable(expectations: Mapping[tuple[str, str], Expectation], now: float) -> list[Expectation]:
    """Settled expectations older than ``RETAIN_S``, never the newest of a rule (it anchors ``advance``)."""
    newest: dict[str, float] = {}
    for x in expectations.values():
        newest[x.rule] = max(newest.get(x.rule, x.deadline), x.deadline)
    return [
        x
        for x in expectations.values()
        if x.state not in OPEN and x.deadline < now - RETAIN_S and x.deadline < newest[x.rule]
    ]


def warn(
    rules: Iterable[ExpectRuleSpec], expectations: Mapping[tuple[str, str], Expectation], now: float
) -> ExpectPlan:
    """One ``at_risk`` per expectation of a rule with ``warn_before``, once ``deadline - warn_before``
    passed while the file is still awaited (and its grace has not run out: then ``missing`` says it)."""
    before = {rule_key(r): r for r in rules if r.warn_before_s is not None}
    changed: list[Expectation] = []
    events: list[EventSpec] = []
    next_due: float | None = None
    for x in expectations.values():
        rule = before.get(x.rule)
        if rule is None or x.state != "open" or rule.warn_before_s is None:
            continue
        warn_at = x.deadline - rule.warn_before_s
        if now < warn_at:
            next_due = warn_at if next_due is None else min(next_due, warn_at)
        elif now < x.deadline + rule.grace_s:
            x = replace(x, state="at_risk")
            changed.append(x)
            events.append(EventSpec("at_risk", x.path, now, period=x.period, deadline=x.deadline))
    return ExpectPlan(changed, events, next_due)


def file_status(x: Expectation) -> str:
    """How an expected file stands, for people: waiting, at_risk, on_time, late or missing."""
    return {"open": "waiting", "met": "on_time"}.get(x.state, x.state)
