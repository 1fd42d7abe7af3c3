"""PURE: expected files. Deadlines from cron schedules, ``missing`` once per period, late arrivals.

An expectation is one (rule, period): the file ``rule.path`` rendered with the deadline's local
date-time must be ready by ``deadline + grace``. States: ``open`` -> ``met`` (a ready version arrived) or
``missing`` (the grace passed first; one ``missing`` event) -> ``met`` (it arrived late).

Each rule keeps its deadlines materialised from the source's first start up to the next upcoming
deadline, so a deadline that passed while the server was down is checked on the next start, and
deadlines before the first start are never checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from .model import EventSpec, Expectation, ExpectRuleSpec, FileRecord, State

__all__ = ["ArrivalMatch", "ExpectPlan", "advance", "match_arrival", "prunable", "rule_key"]

#: After a long outage, at most this many past deadlines per rule are checked.
MAX_CATCH_UP = 1000
#: Settled expectations (met or missing) are kept this long after their deadline, for late arrivals
#: and `state show`; then they are dropped so a minute schedule does not grow the state forever.
RETAIN_S = 35 * 86400


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


def advance(
    rules: Iterable[ExpectRuleSpec],
    expectations: Mapping[tuple[str, str], Expectation],
    records: Mapping[str, FileRecord],
    since: float,
    now: float,
) -> ExpectPlan:
    """Materialise deadlines up to the next upcoming one and flag those whose grace has passed."""
    changed: list[Expectation] = []
    events: list[EventSpec] = []
    next_due: float | None = None

    def due_at(at: float) -> None:
        nonlocal next_due
        next_due = at if next_due is None else min(next_due, at)

    for rule in rules:
        key = rule_key(rule)
        known = [x for (k, _), x in expectations.items() if k == key]
        last = max((x.deadline for x in known), default=None)
        fresh: list[Expectation] = []
        if last is None or last <= now:
            local_tz = ZoneInfo(rule.timezone)
            it = croniter(rule.schedule, datetime.fromtimestamp(since if last is None else last, local_tz))
            while not fresh or fresh[-1].deadline <= now:
                local = it.get_next(datetime)
                path = local.strftime(rule.path)
                rec = records.get(path)
                # A dated file that is already ready arrived before its deadline was materialised.
                met = _dated(rule) and rec is not None and rec.state is State.READY
                fresh.append(Expectation(key, local.isoformat(), path, local.timestamp(), "met" if met else "open"))
            fresh = fresh[-MAX_CATCH_UP:]
            last = fresh[-1].deadline
        due_at(last)  # when the upcoming deadline passes, materialise the one after it
        for x in [x for x in known if x.state == "open"] + fresh:
            due = x.deadline + rule.grace_s
            if x.state == "open" and now >= due:
                x = replace(x, state="missing")
                events.append(EventSpec("missing", x.path, now, period=x.period, deadline=x.deadline))
                changed.append(x)
            else:
                if x.state == "open":
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
    unmet = sorted((x for x in candidates if x.state != "met"), key=lambda x: x.deadline)
    chosen = unmet[0] if unmet else max(candidates, key=lambda x: x.deadline)
    late = now > chosen.deadline + grace[chosen.rule]
    return ArrivalMatch(
        replace(chosen, state="met") if chosen.state != "met" else None,
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
        if x.state != "open" and x.deadline < now - RETAIN_S and x.deadline < newest[x.rule]
    ]
