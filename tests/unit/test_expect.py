"""Expected files: deadlines, missing once, late arrivals; time is injected."""

from __future__ import annotations

from datetime import UTC, datetime

from ftpsource.config import ExpectRule
from ftpsource.core.expect import RETAIN_S, advance, match_arrival, prunable
from ftpsource.core.model import Expectation, FileRecord, State

RULE = ExpectRule.model_validate({"path": "sales_%Y%m%d.csv", "schedule": "0 6 * * *", "grace": "30m"})


def ts(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


class Book:
    """Applies plans the way the watcher does."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.x: dict[tuple[str, str], Expectation] = {}
        self.records: dict[str, FileRecord] = {}
        self.missing: list[str] = []

    def at(self, now: float, rules: list[ExpectRule] | None = None) -> float | None:
        plan = advance(rules or [RULE], self.x, self.records, self.since, now)
        for x in plan.changed:
            self.x[(x.rule, x.period)] = x
        self.missing += [e.path for e in plan.events]
        return plan.next_due


def test_missing_once_after_deadline_plus_grace() -> None:
    b = Book(since=ts(26, 5))
    assert b.at(ts(26, 5)) == ts(26, 6)
    assert b.at(ts(26, 6)) == ts(26, 6, 30) and b.missing == []
    b.at(ts(26, 6, 29))
    assert b.missing == []
    b.at(ts(26, 6, 30))
    assert b.missing == ["sales_20261126.csv"]
    b.at(ts(26, 7))
    b.at(ts(26, 12))
    assert b.missing == ["sales_20261126.csv"]  # once


def test_late_arrival_then_on_time_next_day() -> None:
    b = Book(since=ts(26, 5))
    b.at(ts(26, 7))
    m = match_arrival([RULE], b.x, "sales_20261126.csv", ts(26, 8))
    assert m.late and m.deadline == ts(26, 6) and m.late_seconds == 7200
    assert m.expectation is not None and m.expectation.state == "late"
    b.x[(m.expectation.rule, m.expectation.period)] = m.expectation
    on_time = match_arrival([RULE], b.x, "sales_20261127.csv", ts(27, 5))
    assert not on_time.late and on_time.deadline == ts(27, 6) and on_time.late_seconds is None


def test_within_grace_is_not_late() -> None:
    b = Book(since=ts(26, 5))
    b.at(ts(26, 6, 10))
    m = match_arrival([RULE], b.x, "sales_20261126.csv", ts(26, 6, 10))
    assert not m.late and m.deadline == ts(26, 6)


def test_deadlines_before_first_start_are_not_checked() -> None:
    b = Book(since=ts(26, 9))
    b.at(ts(26, 10))
    assert b.missing == []
    b.at(ts(27, 7))
    assert b.missing == ["sales_20261127.csv"]


def test_downtime_catch_up_reports_each_missed_period_once() -> None:
    b = Book(since=ts(20, 5))
    b.at(ts(20, 5))
    b.at(ts(23, 12))  # the server was down for three days
    assert b.missing == ["sales_20261120.csv", "sales_20261121.csv", "sales_20261122.csv", "sales_20261123.csv"]


def test_file_ready_before_its_deadline_was_materialised_is_met() -> None:
    b = Book(since=ts(25, 7))
    b.records["sales_20261126.csv"] = FileRecord("sales_20261126.csv", 1, 0.0, State.READY, 0.0, 0.0, generation=1)
    b.at(ts(25, 7))
    b.at(ts(26, 7))
    assert b.missing == []


def test_timezone_is_applied() -> None:
    rule = ExpectRule.model_validate(
        {"path": "f_%Y%m%d_%H.csv", "schedule": "0 6 * * *", "timezone": "America/New_York"}
    )
    b = Book(since=ts(26, 0))
    b.at(ts(26, 0), [rule])
    ((key, period),) = b.x
    x = b.x[(key, period)]
    assert x.path == "f_20261126_06.csv" and x.deadline == ts(26, 11) and period.endswith("-05:00")


def test_unrelated_path_has_no_deadline() -> None:
    b = Book(since=ts(26, 5))
    b.at(ts(26, 5))
    m = match_arrival([RULE], b.x, "other.csv", ts(26, 5))
    assert (m.deadline, m.late, m.expectation) == (None, False, None)


def test_settled_expectations_are_pruned_but_never_the_newest_of_a_rule() -> None:

    b = Book(since=ts(1, 5))
    b.at(ts(1, 5))
    b.at(ts(26, 12))  # 25 daily deadlines, all missing
    later = ts(26, 12) + RETAIN_S - 3 * 86400
    old = prunable(b.x, later)
    assert old and all(x.deadline < later - RETAIN_S and x.state == "missing" for x in old)
    yearly = ExpectRule.model_validate({"path": "y_%Y.csv", "schedule": "0 0 1 1 *"})
    y = Book(since=ts(1, 0))
    y.at(ts(1, 0), [yearly])
    far = ts(1, 0) + 400 * 86400
    y.at(far, [yearly])
    newest = max(y.x.values(), key=lambda x: x.deadline)
    assert newest not in prunable(y.x, far + RETAIN_S * 30)  # the newest anchors the series, however old
    for x in old:
        del b.x[(x.rule, x.period)]
    before = list(b.missing)
    b.at(later)  # pruning never makes advance() re-emit a settled period
    assert b.missing[: len(before)] == before and set(b.missing[len(before) :]).isdisjoint(before)
