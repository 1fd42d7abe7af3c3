"""Expected files: deadlines, missing once, late arrivals; time is injected."""

from __future__ import annotations

from datetime import UTC, datetime

from ftpsource.config import ExpectRule
from ftpsource.core.expect import MAX_CATCH_UP, RETAIN_S, advance, match_arrival, prunable
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


# --- regressions: new rules, catch-up, DST ---------------------------------------------------------

BERLIN = "Europe/Berlin"


def berlin(rule_path: str, schedule: str) -> ExpectRule:
    return ExpectRule.model_validate({"path": rule_path, "schedule": schedule, "timezone": BERLIN})


def test_a_rule_added_to_a_year_old_source_starts_when_it_appears() -> None:
    b = Book(since=ts(26, 5) - 365 * 86400)  # the source first started a year ago, without rules
    b.since = ts(26, 5)  # a stream opens with the new rule (the watcher passes its load time)
    b.at(ts(26, 5))
    assert b.missing == []
    b.at(ts(26, 7))
    assert b.missing == ["sales_20261126.csv"]  # from its first deadline on, as usual


def test_an_edited_rule_is_a_new_series_from_when_it_appears() -> None:
    b = Book(since=ts(1, 5))
    b.at(ts(1, 5))
    b.at(ts(3, 12))
    assert len(b.missing) == 3
    edited = ExpectRule.model_validate({"path": "sales_%Y%m%d.csv", "schedule": "0 7 * * *", "grace": "30m"})
    b.since = ts(26, 5)
    b.at(ts(26, 5), [edited])
    assert len(b.missing) == 3  # nothing from the 4th to the 25th
    b.at(ts(26, 8), [edited])
    assert b.missing[3:] == ["sales_20261126.csv"]


def test_catch_up_after_an_outage_checks_only_the_newest_deadlines() -> None:
    minutely = ExpectRule.model_validate({"path": "m_%Y%m%d%H%M.csv", "schedule": "* * * * *"})
    b = Book(since=ts(1, 0))
    b.at(ts(1, 0), [minutely])
    plan = advance([minutely], b.x, b.records, b.since, ts(8, 0))  # a week down: 10,080 deadlines passed
    # The one deadline known before the outage, then the newest 1,000 minutes and nothing older.
    assert [e.path for e in plan.events[:2]] == ["m_202611010001.csv", "m_202611070721.csv"]
    assert len(plan.events) == 1 + MAX_CATCH_UP and plan.events[-1].path == "m_202611080000.csv"


def test_dst_fall_back_is_one_period_per_rendered_path() -> None:
    # 25 Oct 2026: clocks in Berlin go back from 03:00 CEST to 02:00 CET, so 02:30 happens twice.
    rule = berlin("f_%Y%m%d.csv", "30 2 * * *")
    start = datetime(2026, 10, 24, 12, tzinfo=UTC).timestamp()
    b = Book(since=start)
    b.at(start, [rule])
    first_0230 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()  # 02:30 CEST
    b.at(first_0230 - 60, [rule])
    m = match_arrival([rule], b.x, "f_20261025.csv", first_0230 - 30)
    assert m.expectation is not None and m.deadline == first_0230 and not m.late
    b.x[(m.expectation.rule, m.expectation.period)] = m.expectation
    b.at(first_0230 + 2 * 3600, [rule])  # past the second 02:30 (CET)
    assert b.missing == []
    periods = [x for x in b.x.values() if x.path == "f_20261025.csv"]
    assert len(periods) == 1 and periods[0].period == "2026-10-25T02:30:00+02:00"


def test_dst_fall_back_half_hourly_keeps_the_first_of_each_repeated_time() -> None:
    rule = berlin("h_%Y%m%d_%H%M.csv", "*/30 * * * *")
    start = datetime(2026, 10, 24, 23, 10, tzinfo=UTC).timestamp()  # 01:10 CEST
    b = Book(since=start)
    b.at(start, [rule])
    b.at(datetime(2026, 10, 25, 3, 0, tzinfo=UTC).timestamp(), [rule])  # 04:00 CET
    paths = sorted(x.path for x in b.x.values())
    assert len(paths) == len(set(paths))
    assert [p[-8:-4] for p in paths] == ["0130", "0200", "0230", "0300", "0330", "0400", "0430"]
    assert {x.period for x in b.x.values() if x.path.endswith("0230.csv")} == {"2026-10-25T02:30:00+02:00"}


def test_dst_spring_forward_moves_a_deadline_in_the_gap_to_when_the_clock_jumps() -> None:
    # 29 Mar 2026: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night.
    rule = berlin("f_%Y%m%d.csv", "30 2 * * *")
    start = datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp()
    b = Book(since=start)
    b.at(start, [rule])
    ((_, period),) = b.x
    assert period == "2026-03-29T03:00:00+02:00" and b.x[(_, period)].path == "f_20260329.csv"
    b.at(datetime(2026, 3, 30, 12, tzinfo=UTC).timestamp(), [rule])
    assert b.missing == ["f_20260329.csv", "f_20260330.csv"]


def test_a_dated_path_rendered_twice_a_day_is_one_period_due_at_the_first_deadline() -> None:
    rule = ExpectRule.model_validate({"path": "s_%Y%m%d.csv", "schedule": "0 6,18 * * *"})
    b = Book(since=ts(26, 0))
    b.at(ts(26, 0), [rule])
    b.at(ts(26, 20), [rule])
    assert b.missing == ["s_20261126.csv"]
    assert [x.deadline for x in b.x.values()] == [ts(26, 6), ts(27, 6)]


def test_a_repeated_period_is_never_due_in_the_past() -> None:
    twice = ExpectRule.model_validate({"path": "a_%Y%m%d.csv", "schedule": "0 6,18 * * *"})
    x: dict[tuple[str, str], Expectation] = {}
    for now in (ts(26, 0), ts(26, 12), ts(26, 17)):
        plan = advance([twice], x, {}, ts(26, 0), now)
        x.update({(e.rule, e.period): e for e in plan.changed})
        # a past next_due would make the watcher poll again at once, over and over, until 18:00
        assert plan.next_due is None or plan.next_due > now
