"""The decision core, table-driven and property-based. Time is injected; nothing sleeps."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftpsource.core.detect import Policy, after_verify, plan_poll, unknown_paths
from ftpsource.core.model import Digest, Entry, EventSpec, FileRecord, State
from ftpsource.core.paths import PathFilter, Template

S = 30.0  # stable_for in these tests


def policy(**kw: object) -> Policy:
    base: dict[str, object] = {"stable_for_s": S}
    base.update(kw)
    return Policy(**base)  # type: ignore[arg-type]


@dataclass
class Sim:
    """A tiny in-memory 'filesystem' driven through the pure functions, as the watcher would: live
    records in memory, tombstones apart (the store) and passed in for the listed paths without a record."""

    pol: Policy
    files: dict[str, bytes]
    mtimes: dict[str, float]
    records: dict[str, FileRecord]
    events: list[EventSpec]
    tombstones: dict[str, FileRecord]
    first: bool = True

    @classmethod
    def new(cls, **kw: object) -> Sim:
        return cls(policy(**kw), {}, {}, {}, [], {})

    def apply(self, rec: FileRecord) -> None:
        if rec.state is State.DELETED:
            self.records.pop(rec.path, None)
            self.tombstones[rec.path] = rec
        else:
            self.records[rec.path] = rec
            self.tombstones.pop(rec.path, None)

    def write(self, path: str, content: bytes, t: float) -> None:
        self.files[path] = content
        self.mtimes[path] = t

    def touch(self, path: str, t: float) -> None:
        self.mtimes[path] = t

    def entries(self) -> list[Entry]:
        return [Entry(p, len(c), self.mtimes[p]) for p, c in self.files.items()]

    def poll(self, now: float) -> list[EventSpec]:
        entries = self.entries()
        back = {p: self.tombstones[p] for p in unknown_paths(entries, self.records, self.pol) if p in self.tombstones}
        plan = plan_poll(entries, self.records, now, self.pol, first_start=self.first, tombstones=back)
        self.first = False
        for r in plan.upserts:
            self.apply(r)
        for p in plan.removals:
            self.records.pop(p, None)
        new = list(plan.events)
        for req in plan.verify:
            content = self.files.get(req.record.path)
            if content is None:
                outcome = after_verify(req, None, None, now, self.pol)
            else:
                algo = self.pol.checksum
                value = hashlib.new(algo, content).hexdigest() if algo else None
                digest = Digest(algo, value, "local", len(content))
                after = Entry(req.record.path, len(content), self.mtimes[req.record.path])
                outcome = after_verify(req, digest, after, now, self.pol)
            self.apply(outcome.record)
            if outcome.event:
                new.append(outcome.event)
        self.events.extend(new)
        return new


def kinds(events: list[EventSpec]) -> list[tuple[str, str, str | None, int]]:
    return [(e.type, e.path, e.reason, e.generation) for e in events]


# --- table-driven scenarios ----------------------------------------------------------------------------
# Each step: ("write", path, content, t) | ("touch", path, t) | ("delete", path) | ("poll", t, expected)
SCENARIOS: dict[str, list[tuple[object, ...]]] = {
    "new file waits for stable_for, then one event": [
        ("write", "a", b"1", 0.0),
        ("poll", 1.0, []),
        ("poll", 1.0 + S - 0.1, []),
        ("poll", 1.0 + S, [("ready", "a", "new", 1)]),
        ("poll", 100.0, []),
    ],
    "growing file restarts the window": [
        ("write", "a", b"1", 0.0),
        ("poll", 1.0, []),
        ("write", "a", b"12", 20.0),
        ("poll", 21.0, []),
        ("poll", 1.0 + S, []),
        ("poll", 21.0 + S, [("ready", "a", "new", 1)]),
    ],
    "identical rewrite emits nothing": [
        ("write", "a", b"same", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("write", "a", b"same", 50.0),
        ("poll", 50.0, []),
        ("poll", 50.0 + S, []),
    ],
    "touch emits nothing": [
        ("write", "a", b"x", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("touch", "a", 60.0),
        ("poll", 60.0, []),
        ("poll", 60.0 + S, []),
    ],
    "new bytes are a reupload, generation 2": [
        ("write", "a", b"v1", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("write", "a", b"v2", 60.0),
        ("poll", 60.0, []),
        ("poll", 60.0 + S, [("ready", "a", "reupload", 2)]),
    ],
    "min_size holds back an empty file": [
        ("write", "a", b"", 0.0),
        ("poll", 0.0, []),
        ("poll", 2 * S, []),
        ("write", "a", b"data", 70.0),
        ("poll", 70.0, []),
        ("poll", 70.0 + S, [("ready", "a", "new", 1)]),
    ],
    "deleted then identical bytes again: nothing": [
        ("write", "a", b"v1", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("delete", "a"),
        ("poll", 40.0, []),
        ("write", "a", b"v1", 50.0),
        ("poll", 50.0, []),
        ("poll", 50.0 + S, []),
    ],
    "overwritten, gone before it settled, the reported bytes back: nothing": [
        ("write", "a", b"v1", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("write", "a", b"v2-partial", 40.0),
        ("poll", 40.0, []),
        ("delete", "a"),
        ("poll", 45.0, []),
        ("write", "a", b"v1", 50.0),
        ("poll", 50.0, []),
        ("poll", 50.0 + S, []),
    ],
    "overwritten, gone before it settled, new bytes back: reupload, generation 2": [
        ("write", "a", b"v1", 0.0),
        ("poll", 0.0, []),
        ("poll", S, [("ready", "a", "new", 1)]),
        ("write", "a", b"v2-partial", 40.0),
        ("poll", 40.0, []),
        ("delete", "a"),
        ("poll", 45.0, []),
        ("write", "a", b"v2", 50.0),
        ("poll", 50.0, []),
        ("poll", 50.0 + S, [("ready", "a", "reupload", 2)]),
    ],
    "old mtime file added later is still reported": [
        ("write", "new", b"n", 1000.0),
        ("poll", 1000.0, []),
        ("poll", 1000.0 + S, [("ready", "new", "new", 1)]),
        ("write", "old", b"o", 5.0),
        ("poll", 1100.0, []),
        ("poll", 1100.0 + S, [("ready", "old", "new", 1)]),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    sim = Sim.new()
    for step in SCENARIOS[name]:
        op = step[0]
        if op == "write":
            sim.write(step[1], step[2], step[3])  # type: ignore[arg-type]
        elif op == "touch":
            sim.touch(step[1], step[2])  # type: ignore[arg-type]
        elif op == "delete":
            sim.files.pop(step[1])  # type: ignore[call-overload]
        else:
            assert kinds(sim.poll(step[1])) == step[2], f"{name}: at t={step[1]}"  # type: ignore[arg-type]


def test_existing_skip_records_without_emitting_but_reports_later_changes() -> None:
    sim = Sim.new(existing="skip")
    sim.write("old", b"1", 0.0)
    assert sim.poll(10.0) == []
    assert sim.records["old"].state is State.SKIPPED
    assert sim.poll(10.0 + S) == []
    sim.write("fresh", b"2", 50.0)
    sim.poll(50.0)
    assert kinds(sim.poll(50.0 + S)) == [("ready", "fresh", "new", 1)]
    sim.write("old", b"changed", 90.0)
    sim.poll(90.0)
    assert kinds(sim.poll(90.0 + S)) == [("ready", "old", "new", 1)]


def test_existing_emit_reports_files_present_at_first_start() -> None:
    sim = Sim.new(existing="emit")
    sim.write("old", b"1", 0.0)
    sim.poll(1000.0)
    assert kinds(sim.poll(1000.0 + S)) == [("ready", "old", "new", 1)]


def test_checksum_none_uses_size_and_mtime() -> None:
    sim = Sim.new(checksum=None)
    sim.write("a", b"1", 0.0)
    sim.poll(0.0)
    first = sim.poll(S)
    assert kinds(first) == [("ready", "a", "new", 1)] and first[0].checksum is None
    sim.touch("a", 100.0)  # without checksums a touch *is* a new version
    sim.poll(100.0)
    assert kinds(sim.poll(100.0 + S)) == [("ready", "a", "reupload", 2)]


def test_changed_while_hashing_goes_back_to_pending() -> None:
    pol = policy()
    rec = FileRecord("a", 5, 1.0, State.PENDING, 0.0, 0.0)
    plan = plan_poll([Entry("a", 5, 1.0)], {"a": rec}, 100.0, pol)
    (req,) = plan.verify
    digest = Digest("sha256", "x", "local", 5)
    grown = Entry("a", 9, 101.0)
    out = after_verify(req, digest, grown, 102.0, pol)
    assert out.event is None
    assert out.record.state is State.PENDING and out.record.stable_since == 102.0 and out.record.size == 9
    vanished = after_verify(req, None, None, 102.0, pol)
    assert vanished.event is None and vanished.record.state is State.PENDING


def test_ready_event_fields() -> None:
    sim = Sim.new()
    sim.write("d/a.csv", b"v1", 0.0)
    sim.poll(5.0)
    (ev,) = sim.poll(5.0 + S)
    assert (ev.first_seen, ev.stable_since, ev.size, ev.mtime) == (5.0, 5.0, 2, 0.0)
    assert ev.previous is None
    sim.write("d/a.csv", b"v2!", 100.0)
    sim.poll(100.0)
    (ev2,) = sim.poll(100.0 + S)
    assert ev2.previous == (hashlib.sha256(b"v1").hexdigest(), 2, 0.0)


def test_marker_releases_file_and_is_never_reported() -> None:
    sim = Sim.new(marker=Template("{path}.done"))
    sim.write("a.csv", b"data", 0.0)
    sim.poll(0.0)
    assert sim.poll(10 * S) == []  # stable for ages, but no marker
    sim.write("a.csv.done", b"", 400.0)
    assert kinds(sim.poll(401.0)) == [("ready", "a.csv", "new", 1)]  # the marker stands in for stability
    assert "a.csv.done" not in sim.records


def test_directory_marker_releases_every_file_in_that_directory() -> None:
    sim = Sim.new(marker=Template("{dir}/_SUCCESS"))
    for name in ("d/p1", "d/p2", "e/p3"):
        sim.write(name, b"x" + name.encode(), 0.0)
    sim.poll(0.0)
    assert sim.poll(100.0) == []
    sim.write("d/_SUCCESS", b"", 100.0)
    assert sorted(e.path for e in sim.poll(101.0)) == ["d/p1", "d/p2"]


def test_include_exclude() -> None:
    sim = Sim.new(path_filter=PathFilter(["**/*.csv"], ["**/.*", "**/*.part"], True))
    for p in ("a.csv", "d/b.csv", "c.txt", "d/x.csv.part", ".hidden.csv"):
        sim.write(p, b"1", 0.0)
    sim.poll(0.0)
    assert sorted(e.path for e in sim.poll(S)) == ["a.csv", "d/b.csv"]


def test_problem_waits_then_rejects_once() -> None:
    pol = policy(reject_after_s=100.0)
    rec = FileRecord("a.gz", 5, 1.0, State.PENDING, 0.0, 0.0)
    entry = Entry("a.gz", 5, 1.0)
    plan = plan_poll([entry], {"a.gz": rec}, S, pol)
    (req,) = plan.verify
    bad = Digest("sha256", "h", "local", 5, problem="truncated gzip")
    waiting = after_verify(req, bad, entry, S, pol)
    assert waiting.event is None and waiting.record.problem == "truncated gzip"
    # Unchanged file: not re-verified, and rejected once reject_after has passed since the problem.
    plan2 = plan_poll([entry], {"a.gz": waiting.record}, S + 50, pol)
    assert plan2.verify == [] and plan2.events == [] and plan2.next_due == S + 100
    plan3 = plan_poll([entry], {"a.gz": waiting.record}, S + 100, pol)
    assert [e.type for e in plan3.events] == ["rejected"] and plan3.events[0].problem == "truncated gzip"
    rejected = plan3.upserts[0]
    assert plan_poll([entry], {"a.gz": rejected}, S + 500, pol).events == []
    # A corrected upload after rejection becomes pending again and is reported as new.
    fixed = Entry("a.gz", 9, 700.0)
    plan4 = plan_poll([fixed], {"a.gz": rejected}, 700.0, pol)
    assert plan4.upserts[0].state is State.PENDING and plan4.upserts[0].problem is None


def test_partial_listing_dirs_are_not_deletions() -> None:
    sim = Sim.new(deletes=True)
    sim.write("d/a", b"1", 0.0)
    sim.poll(0.0)
    sim.poll(S)
    plan = plan_poll([], sim.records, 100.0, sim.pol, unlisted_dirs=["d"])
    assert plan.upserts == [] and plan.removals == [] and plan.events == []
    plan = plan_poll([], sim.records, 100.0, sim.pol)
    assert [e.type for e in plan.events] == ["deleted"]


# --- property: for any writes and polls -------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from([b"A", b"B", b"CC"]), st.floats(0.1, 50.0)),
        st.tuples(st.just("touch"), st.just(b""), st.floats(0.1, 50.0)),
        st.tuples(st.just("poll"), st.just(b""), st.floats(0.1, 50.0)),
        st.tuples(st.just("delete"), st.just(b""), st.floats(0.1, 50.0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_property_no_early_event_and_one_event_per_content_version(steps: list[tuple[str, bytes, float]]) -> None:
    sim = Sim.new()
    t = 0.0
    last_change = None
    emitted: list[bytes] = []
    for op, content, dt in steps:
        t += dt
        if op == "write":
            sim.write("f", content, t)
            last_change = t
        elif op == "touch" and "f" in sim.files:
            sim.touch("f", t)
            last_change = t
        elif op == "delete":
            sim.files.pop("f", None)
        else:
            for ev in sim.poll(t):
                assert ev.type == "ready"
                # never before the file has been unchanged for stable_for
                assert last_change is not None and t - last_change >= S
                emitted.append(sim.files["f"])
    # settle: two polls far apart report the final content if it differs from the last reported
    if sim.files:
        for ev in sim.poll(t + 1) + sim.poll(t + 1 + S):
            emitted.append(sim.files["f"])
            assert ev.type == "ready"
        assert emitted and emitted[-1] == sim.files["f"]
    # exactly one event per distinct content version: never the same bytes twice in a row
    assert all(a != b for a, b in itertools.pairwise(emitted))
    gens = [e.generation for e in sim.events]
    assert gens == list(range(1, len(gens) + 1))


# --- regressions: markers, rejection clock, narrowed filters ----------------------------------------


def test_a_stale_marker_does_not_release_a_reupload_in_progress() -> None:
    for template, marker in (("{path}.done", "x.csv.done"), ("{dir}/_SUCCESS", "_SUCCESS")):
        sim = Sim.new(marker=Template(template))
        sim.write("x.csv", b"version one", 0.0)
        sim.write(marker, b"", 1.0)
        assert kinds(sim.poll(2.0)) == [("ready", "x.csv", "new", 1)]
        # The producer starts uploading a new version; the old marker is still there.
        sim.write("x.csv", b"vers", 100.0)
        assert sim.poll(100.5) == []
        sim.write("x.csv", b"version two, longer", 160.0)
        assert sim.poll(1000.0) == [], template  # stable for ages: the marker still predates it
        sim.write(marker, b"", 1001.0)  # the producer declares the new version done
        assert kinds(sim.poll(1002.0)) == [("ready", "x.csv", "reupload", 2)], template


def test_a_marker_with_the_same_coarse_time_as_the_file_releases_it() -> None:
    sim = Sim.new(marker=Template("{path}.done"))
    sim.write("a.csv", b"data", 60.0)  # FTP LIST: whole minutes
    sim.write("a.csv.done", b"", 60.0)
    assert kinds(sim.poll(61.0)) == [("ready", "a.csv", "new", 1)]


def test_a_growing_file_restarts_the_rejection_clock() -> None:
    pol = policy(reject_after_s=100.0)
    rec = FileRecord("a.gz", 5, 1.0, State.PENDING, 0.0, 0.0)
    entry = Entry("a.gz", 5, 1.0)
    (req,) = plan_poll([entry], {"a.gz": rec}, S, pol).verify
    waiting = after_verify(req, Digest("sha256", "h", "local", 5, problem="truncated gzip"), entry, S, pol)
    assert waiting.record.problem_since == S
    # The slow upload resumes: larger and newer. The old problem no longer applies to it.
    grown = Entry("a.gz", 50, 200.0)
    plan = plan_poll([grown], {"a.gz": waiting.record}, 200.0, pol)
    (again,) = plan.upserts
    assert again.state is State.PENDING and again.problem is None and again.problem_since is None
    # Truncated once more after it pauses: the clock counts from this failure, not the first one.
    (req2,) = plan_poll([grown], {"a.gz": again}, 200.0 + S, pol).verify
    bad = Digest("sha256", "h2", "local", 50, problem="truncated gzip")
    second = after_verify(req2, bad, grown, 200.0 + S, pol)
    assert second.event is None and second.record.problem_since == 200.0 + S
    assert plan_poll([grown], {"a.gz": second.record}, 200.0 + S + 99, pol).events == []


@pytest.mark.parametrize(
    ("include", "exclude", "recursive"),
    [(["**/*.csv"], [], True), ([], ["d/**"], True), ([], [], False), ([], ["**/d"], True)],
)
def test_files_the_filters_no_longer_select_are_forgotten_not_deleted(
    include: list[str], exclude: list[str], recursive: bool
) -> None:
    sim = Sim.new(deletes=True)
    sim.write("a.csv", b"a", 0.0)
    sim.write("d/b.txt", b"b", 0.0)
    sim.poll(0.0)
    assert sorted(e.path for e in sim.poll(S)) == ["a.csv", "d/b.txt"]
    narrowed = policy(deletes=True, path_filter=PathFilter(include, exclude, recursive))
    listed = [e for e in sim.entries() if narrowed.path_filter.descend("d") or "/" not in e.path]
    plan = plan_poll(listed, sim.records, 2 * S, narrowed)
    assert plan.events == []  # d/b.txt is still there: no `deleted`
    assert "d/b.txt" not in {r.path for r in plan.upserts if r.state is not State.DELETED}
    for r in plan.upserts:
        sim.apply(r)
    # Widening the filters again: the same bytes are not reported a second time.
    sim.pol = policy(deletes=True)
    assert sim.poll(3 * S) == [] and sim.poll(4 * S) == []


def test_a_reported_file_gone_while_new_bytes_were_written_is_deleted_as_the_version_reported() -> None:
    sim = Sim.new(deletes=True)
    sim.write("a", b"v1", 0.0)
    sim.poll(0.0)
    ready = sim.poll(S)[0]
    sim.write("a", b"v2, half of it", 40.0)
    assert sim.poll(40.0) == []
    del sim.files["a"]
    (deleted,) = sim.poll(45.0)
    assert (deleted.type, deleted.generation, deleted.checksum) == ("deleted", 1, ready.checksum)
    assert (deleted.size, deleted.mtime) == (ready.size, ready.mtime)
    assert sim.tombstones["a"].generation == 1 and "a" not in sim.records


def test_a_deleted_file_leaves_the_pending_count_a_count() -> None:
    """The pending gauge comes from plan.pending: a deletion in the same poll must not replace it."""
    sim = Sim.new(deletes=True)
    sim.write("gone", b"1", 0.0)
    sim.poll(0.0)
    sim.poll(S)
    del sim.files["gone"]
    sim.write("new1", b"a", 50.0)
    sim.write("new2", b"b", 50.0)
    entries = sim.entries()
    plan = plan_poll(entries, sim.records, 50.0, sim.pol, first_start=False)
    assert [e.type for e in plan.events] == ["deleted"]
    assert type(plan.pending) is int and plan.pending == 2


def test_tombstones_expire_after_the_retention_and_identity_holds_until_then() -> None:
    sim = Sim.new()
    sim.write("a", b"same bytes", 0.0)
    sim.poll(0.0)
    assert kinds(sim.poll(S)) == [("ready", "a", "new", 1)]
    del sim.files["a"]
    sim.poll(100.0)
    assert "a" not in sim.records  # only live files are held; the tombstone is looked up when "a" is back
    assert sim.tombstones["a"].state is State.DELETED and sim.tombstones["a"].stable_since == 100.0
    sim.write("a", b"same bytes", 0.0)  # back within the retention: recognised, nothing emitted
    sim.poll(1050.0)
    assert sim.poll(1050.0 + S) == []
    del sim.files["a"]
    sim.poll(2000.0)
    assert sim.tombstones["a"].stable_since == 2000.0  # the retention counts from the last time it went
    del sim.tombstones["a"]  # pruned by the store once the retention has passed (tests/unit/test_store.py)
    sim.write("a", b"same bytes", 0.0)  # back after the retention: a new file again
    sim.poll(3100.0)
    assert kinds(sim.poll(3100.0 + S)) == [("ready", "a", "new", 1)]


def test_only_listed_paths_without_a_record_that_a_poll_considers_need_their_tombstones() -> None:
    pol = policy(marker=Template("{path}.done"), path_filter=PathFilter(["**/*.csv", "**/*.done"], [], True))
    known = FileRecord("old.csv", 1, 0.0, State.READY, 0.0, 0.0, generation=1)
    listed = [Entry(p, 1, 0.0) for p in ("old.csv", "new.csv", "new.csv.done", "notes.txt")]
    assert unknown_paths(listed, {"old.csv": known}, pol) == ["new.csv"]
