"""File sets and early warnings: one report per set and period, amendments only for new bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpsource.config import ExpectRule, ExpectSet
from ftpsource.core.events import SourceInfo, encode_event, event_id
from ftpsource.core.expect import advance, match_arrival, warn
from ftpsource.core.model import EventSpec, Expectation, FileRecord, SetPeriod, State
from ftpsource.core.sets import advance_sets, prunable_sets, resolve, set_key, set_status, todays

SET = ExpectSet.model_validate(
    {
        "set": "daily-master",
        "files": ["orders_%Y%m%d.csv", "customers_%Y%m%d.csv", {"pattern": "products_%Y%m%d_part*.csv", "count": 2}],
        "schedule": "0 6 * * *",
        "grace": "30m",
        "warn_before": "1h",
    }
)
DAY26 = ["orders_20261126.csv", "customers_20261126.csv", "products_20261126_part1.csv", "products_20261126_part2.csv"]


def ts(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()


def ready(path: str, generation: int = 1, content: str = "v1") -> FileRecord:
    return FileRecord(
        path,
        10,
        1.0,
        State.READY,
        0.0,
        0.0,
        generation=generation,
        ready_checksum=hashlib.sha256(content.encode()).hexdigest(),
        ready_size=10,
        ready_mtime=1.0,
    )


class Board:
    """Applies set plans the way the watcher does; ``restart`` keeps only what the store would."""

    def __init__(self, rules: list[ExpectSet] | None = None, since: float | None = None) -> None:
        self.rules = rules or [SET]
        self.since = since  # when the set first appeared: the first ``at``
        self.periods: dict[tuple[str, str], SetPeriod] = {}
        self.records: dict[str, FileRecord] = {}
        self.events: list[EventSpec] = []

    def at(self, now: float) -> float | None:
        if self.since is None:
            self.since = now
        plan = advance_sets(self.rules, self.periods, self.records, self.since, now)
        for x in plan.changed:
            self.periods[(x.rule, x.period)] = x
        self.events += plan.events
        return plan.next_due

    def upload(self, path: str, content: str) -> None:
        """A version is reported: new bytes raise the generation, identical bytes change nothing."""
        digest = hashlib.sha256(content.encode()).hexdigest()
        old = self.records.get(path)
        if old is not None and old.ready_checksum == digest:
            return
        self.records[path] = ready(path, (old.generation if old else 0) + 1, content)

    def kinds(self) -> list[str]:
        return [e.type for e in self.events]


def test_complete_once_with_every_member_and_its_data() -> None:
    b = Board()
    assert b.at(ts(26, 4)) == ts(26, 5)  # the warning is the next thing due
    for path in DAY26[:3]:
        b.upload(path, "a")
        b.at(ts(26, 4, 30))
    assert b.kinds() == []  # one of the two parts is still missing
    b.upload(DAY26[3], "a")
    b.at(ts(26, 4, 40))
    b.at(ts(26, 7))
    assert b.kinds() == ["set_complete"]
    (ev,) = b.events
    assert ev.path == "daily-master" and ev.generation == 1 and not ev.late
    assert ev.period == "2026-11-26T06:00:00+00:00" and ev.deadline == ts(26, 6)
    assert sorted(m.path for m in ev.members) == sorted(DAY26)


@pytest.mark.parametrize(
    ("arrivals", "checks", "expected"),
    [
        # all before the warning: complete only
        ([(ts(26, 4), DAY26)], [ts(26, 5), ts(26, 7)], ["set_complete"]),
        # one missing at the warning, then in before the deadline: at risk, complete on time
        ([(ts(26, 4), DAY26[:3]), (ts(26, 5, 30), DAY26[3:])], [ts(26, 5), ts(26, 7)], ["set_at_risk", "set_complete"]),
        # in within the grace: on time, no incomplete
        ([(ts(26, 4), DAY26[:3]), (ts(26, 6, 20), DAY26[3:])], [ts(26, 5), ts(26, 7)], ["set_at_risk", "set_complete"]),
        # still missing after the grace: at risk, incomplete, then complete (late)
        (
            [(ts(26, 4), DAY26[:3]), (ts(26, 8), DAY26[3:])],
            [ts(26, 5), ts(26, 6, 30), ts(26, 9)],
            ["set_at_risk", "set_incomplete", "set_complete"],
        ),
        # nothing at all: at risk, incomplete, nothing more
        ([], [ts(26, 5), ts(26, 6, 30), ts(26, 12)], ["set_at_risk", "set_incomplete"]),
    ],
)
def test_lifecycle(arrivals: list[tuple[float, list[str]]], checks: list[float], expected: list[str]) -> None:
    b = Board()
    b.at(ts(26, 3))
    steps = sorted([(t, p) for t, p in arrivals] + [(t, []) for t in checks], key=lambda s: s[0])
    for t, paths in steps:
        for path in paths:
            b.upload(path, "a")
        b.at(t)
    assert [e.type for e in b.events if e.period == "2026-11-26T06:00:00+00:00"] == expected
    if expected[-1] == "set_complete":
        done = b.events[-1]
        assert done.late == (len(expected) == 3)


def test_incomplete_lists_missing_and_present() -> None:
    b = Board()
    b.at(ts(26, 3))
    b.upload(DAY26[0], "a")
    b.upload(DAY26[2], "a")
    b.at(ts(26, 6, 30))
    inc = next(e for e in b.events if e.type == "set_incomplete")
    assert inc.missing == ("customers_20261126.csv", "products_20261126_part*.csv")
    assert sorted(m.path for m in inc.members) == [DAY26[0], DAY26[2]]


def test_amended_only_for_new_bytes() -> None:
    b = Board()
    b.at(ts(26, 3))
    for path in DAY26:
        b.upload(path, "a")
    b.at(ts(26, 4))
    b.upload(DAY26[0], "a")  # identical bytes: nothing
    b.at(ts(26, 4, 10))
    b.upload("products_20261126_part3.csv", "a")  # a file that is not a reported member
    b.at(ts(26, 4, 20))
    assert b.kinds() == ["set_complete"]
    b.upload(DAY26[1], "b")  # new bytes
    b.at(ts(26, 4, 30))
    b.at(ts(26, 4, 40))
    assert b.kinds() == ["set_complete", "set_amended"]
    amended = b.events[-1]
    assert amended.generation == 2 and len(amended.members) == 4
    assert {m.path: m.generation for m in amended.members}[DAY26[1]] == 2


def test_pattern_needs_distinct_files_in_its_own_directory() -> None:
    rule = ExpectSet.model_validate(
        {"set": "s", "files": [{"pattern": "in/p_%Y%m%d_*.csv", "count": 2}], "schedule": "0 6 * * *"}
    )
    records = {p: ready(p) for p in ["in/p_20261126_1.csv", "in/sub/p_20261126_2.csv", "in/p_20261125_2.csv"]}
    status = resolve(rule, "2026-11-26T06:00:00+00:00", records)
    assert [m.path for m in status.present] == ["in/p_20261126_1.csv"] and status.missing == ["in/p_20261126_*.csv"]
    records["in/p_20261126_2.csv"] = ready("in/p_20261126_2.csv")
    assert resolve(rule, "2026-11-26T06:00:00+00:00", records).complete


def test_members_rendered_in_the_sets_timezone() -> None:
    rule = ExpectSet.model_validate(
        {"set": "s", "files": ["a_%Y%m%d_%H.csv"], "schedule": "0 1 * * *", "timezone": "Europe/Berlin"}
    )
    b = Board([rule])
    b.at(ts(25, 12))
    (x,) = b.periods.values()
    assert x.period == "2026-11-26T01:00:00+01:00" and x.deadline == ts(26, 0)
    b.upload("a_20261126_01.csv", "a")
    b.at(ts(25, 23))
    assert b.kinds() == ["set_complete"]


def test_a_new_set_starts_now_and_passed_deadlines_are_caught_up_after_an_outage() -> None:
    b = Board()
    b.at(ts(26, 12))  # first seen after today's deadline: today is not checked
    assert [x.period[:10] for x in b.periods.values()] == ["2026-11-27"]
    b.at(ts(29, 12))  # down for two days
    assert [(e.type, (e.period or "")[:10]) for e in b.events] == [
        ("set_incomplete", "2026-11-27"),
        ("set_incomplete", "2026-11-28"),
        ("set_incomplete", "2026-11-29"),
    ]


def test_two_deadlines_naming_the_same_files_are_one_period() -> None:
    rule = ExpectSet.model_validate({"set": "s", "files": ["a_%Y%m%d.csv"], "schedule": "0 6,18 * * *"})
    b = Board([rule])
    b.at(ts(26, 0))
    b.at(ts(27, 12))
    assert sorted(x.period for x in b.periods.values()) == ["2026-11-26T06:00:00+00:00", "2026-11-27T06:00:00+00:00"]
    assert b.kinds() == ["set_incomplete", "set_incomplete"]


def test_set_prune_keeps_the_newest() -> None:
    b = Board()
    b.at(ts(1, 0))
    b.at(ts(2, 7))
    old = prunable_sets(b.periods, ts(1, 0) + 40 * 86400)
    assert [x.period[:10] for x in old] == ["2026-11-01", "2026-11-02"]
    assert prunable_sets({k: v for k, v in b.periods.items() if v.period.startswith("2026-11-03")}, ts(30, 0)) == []


def test_set_event_payloads() -> None:
    info = SourceInfo("src", "sftp://etl@h/out", "sha256")
    b = Board()
    b.at(ts(26, 3))
    for path in DAY26:
        b.upload(path, "a")
    b.at(ts(26, 4))
    b.upload(DAY26[0], "b")
    b.at(ts(26, 5))
    complete, amended = b.events
    eid, payload = encode_event(info, complete)
    doc = json.loads(payload)
    assert doc["type"] == "ftpsource.set.complete" and doc["subject"] == "daily-master"
    data = doc["data"]
    assert set(data) == {"source_id", "set", "period", "deadline", "late", "late_seconds", "generation", "members"}
    assert data["deadline"] == "2026-11-26T06:00:00Z" and data["generation"] == 1 and data["late"] is False
    member = next(m for m in data["members"] if m["path"] == DAY26[0])
    assert member["url"] == "sftp://etl@h/out/orders_20261126.csv" and member["generation"] == 1
    assert member["checksum"] == {"algorithm": "sha256", "value": hashlib.sha256(b"a").hexdigest()}
    assert member["size"] == 10
    # the same report re-decided (after a crash) keeps its id; an amendment has its own
    assert event_id("src", complete) == event_id("src", replace(complete, at=complete.at + 5)) == eid
    assert encode_event(info, amended)[0] not in (eid, event_id("src", replace(amended, generation=3)))
    inc = json.loads(encode_event(info, replace(complete, type="set_incomplete", missing=("x.csv",)))[1])
    assert inc["type"] == "ftpsource.set.incomplete" and inc["data"]["missing"] == ["x.csv"]
    assert len(inc["data"]["present"]) == 4


# file warnings --------------------------------------------------------------------------------------

RULE = ExpectRule.model_validate(
    {"path": "sales_%Y%m%d.csv", "schedule": "0 6 * * *", "grace": "30m", "warn_before": "1h"}
)


def file_step(x: dict[tuple[str, str], Expectation], now: float) -> tuple[list[EventSpec], float | None]:
    plan = advance([RULE], x, {}, ts(26, 0), now)
    x.update({(e.rule, e.period): e for e in plan.changed})
    w = warn([RULE], x, now)
    x.update({(e.rule, e.period): e for e in w.changed})
    return plan.events + w.events, w.next_due


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([ts(26, 4), ts(26, 5), ts(26, 5, 30), ts(26, 7)], ["at_risk", "missing"]),
        ([ts(26, 4), ts(26, 6, 10)], ["at_risk"]),  # inside the grace: still worth a warning
        ([ts(26, 4), ts(26, 6, 30)], ["missing"]),  # past the grace: missing says it all
    ],
)
def test_file_at_risk_once(times: list[float], expected: list[str]) -> None:
    x: dict[tuple[str, str], Expectation] = {}
    kinds: list[str] = []
    for t in times:
        events, _ = file_step(x, t)
        kinds += [e.type for e in events if e.period == "2026-11-26T06:00:00+00:00"]
    assert kinds == expected


def test_file_warning_is_due_and_arrival_after_it_is_on_time() -> None:
    x: dict[tuple[str, str], Expectation] = {}
    _, due = file_step(x, ts(26, 4))
    assert due == ts(26, 5)
    events, _ = file_step(x, ts(26, 5))
    assert [e.type for e in events] == ["at_risk"]
    m = match_arrival([RULE], x, "sales_20261126.csv", ts(26, 5, 30))
    assert m.expectation is not None and m.expectation.state == "met" and not m.late
    late = match_arrival([RULE], x, "sales_20261126.csv", ts(26, 7))
    assert late.expectation is not None and late.expectation.state == "late"


# any order, any restarts ------------------------------------------------------------------------------

ACTION = st.one_of(
    st.tuples(st.just("upload"), st.sampled_from(DAY26), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("tick"), st.integers(0, 4 * 3600), st.just("")),
    st.tuples(st.just("restart"), st.just(0), st.just("")),
    st.tuples(st.just("crash"), st.integers(0, 3600), st.just("")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ACTION, max_size=40))
def test_exactly_one_complete_and_amended_only_for_new_bytes(actions: list[tuple[str, object, str]]) -> None:
    b = Board()
    now = ts(26, 3)
    b.at(now)
    contents: dict[str, str] = {}
    new_bytes_after_complete = 0
    for kind, arg, content in actions:
        if kind == "upload":
            path = str(arg)
            complete = any(e.type == "set_complete" for e in b.events)
            if complete and contents.get(path) not in (None, content):
                new_bytes_after_complete += 1
            if contents.get(path) != content:
                contents[path] = content
            b.upload(path, content)
        elif kind == "tick":
            assert isinstance(arg, int)
            now += arg
        elif kind == "restart":
            # A restart keeps what the store kept: the periods and records, nothing else.
            b = _restarted(b)
        else:
            # A crash before the plan was committed: its events never reached the outbox.
            assert isinstance(arg, int)
            now += arg
            advance_sets(b.rules, b.periods, b.records, b.since or now, now)
            b = _restarted(b)
        b.at(now)
    b.at(now)
    today = [e for e in b.events if e.period == "2026-11-26T06:00:00+00:00"]
    completes = [e for e in today if e.type == "set_complete"]
    every_member = set(contents) == set(DAY26)
    assert len(completes) == (1 if every_member else 0)
    assert len([e for e in today if e.type == "set_incomplete"]) <= 1
    assert len([e for e in today if e.type == "set_at_risk"]) <= 1
    amended = [e for e in today if e.type == "set_amended"]
    assert len(amended) == new_bytes_after_complete
    assert [e.generation for e in completes + amended] == list(range(1, len(completes) + len(amended) + 1))
    if completes and any(e.type == "set_incomplete" for e in today):
        assert completes[0].late
    key = (set_key(SET), "2026-11-26T06:00:00+00:00")
    assert b.periods[key].generation == len(completes) + len(amended)


def _restarted(b: Board) -> Board:
    fresh = Board(b.rules, b.since)
    fresh.periods = dict(b.periods)
    fresh.records = dict(b.records)
    fresh.events = b.events
    return fresh


def test_board_status_and_what_belongs_to_today() -> None:
    x = SetPeriod("k", "2026-11-26T06:00:00+00:00", "s", ts(26, 6), "open")
    assert set_status(x) == "waiting"
    assert set_status(replace(x, state="at_risk")) == "at_risk"
    assert set_status(replace(x, state="incomplete")) == "missing"
    assert set_status(replace(x, state="late", generation=1)) == "late"
    assert set_status(replace(x, state="late", generation=3)) == "amended"
    # a set still incomplete two days on is not today's news; one still open is
    assert not todays(x.deadline, False, ts(28, 7)) and todays(x.deadline, True, ts(28, 7))
    assert todays(x.deadline, False, ts(27, 5))
