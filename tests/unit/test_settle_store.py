"""The store's side of settling, on both backends: versions recorded with their ready events, one
outcome each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpsource.core.settle import PostAction, SettleVersion
from ftpsource.store import NewEvent, StateStore, open_store, open_store_read_only

ARCHIVE = PostAction("move", "archive/{name}")
QUARANTINE = PostAction("move", "failed/{name}", "Europe/Paris")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path | None]:
    if request.param == "sqlite":
        return str(tmp_path / "s.db"), None
    db = request.getfixturevalue("pg_db")
    return db.url, db.password_file


@pytest.fixture
def store(location: tuple[str, Path | None]) -> Iterator[StateStore]:
    s = open_store(*location)
    s.begin_source("src", "file:///x", 1.0)
    for n, path in enumerate(["a.csv", "b.csv"], start=1):
        version = SettleVersion(path, 1, 10 * n, 100.0 + n, f"sum{n}", ARCHIVE, QUARANTINE)
        s.commit("src", (), (), [NewEvent(f"id{n}", "ready", path, b"{}", version)], now=5.0)
    yield s
    s.close()


def test_settle_once_then_same_is_a_no_op_and_a_different_outcome_conflicts(store: StateStore) -> None:
    s = store
    assert s.settle("nope", "succeeded", "", 6.0).status == "not_found"
    first = s.settle("id1", "failed", "workflow wf-1 failed", 6.0)
    assert first.status == "accepted" and first.row is not None
    assert (first.row.outcome, first.row.action, first.row.action_state) == ("failed", "move", "pending")
    assert first.row.version.on_failure == QUARANTINE  # the spec recorded with the event, not a later config
    again = s.settle("id1", "failed", "retried exit handler", 7.0)
    assert again.status == "same" and again.row is not None and again.row.message == "workflow wf-1 failed"
    assert s.settle("id1", "succeeded", "", 8.0).status == "conflict"
    assert [r.event_id for r in s.pending_actions("src")] == ["id1"]
    s.finish_action("id1", "done", None, "failed/a.csv", 9.0)
    assert s.pending_actions("src") == []
    (shown,) = s.versions("src", "a.csv")
    assert (shown.action_state, shown.target, shown.action_at, shown.settled) == ("done", "failed/a.csv", 9.0, 6.0)


def test_unsettled_counts_delivered_versions_only(store: StateStore) -> None:
    s = store
    assert s.unsettled("src") == (0, None)  # decided, not delivered yet
    s.mark_delivered([r.seq for r in s.undelivered("src")], 7.0)
    assert s.unsettled("src") == (2, 7.0)
    s.settle("id2", "succeeded", "", 8.0)
    assert s.unsettled("src") == (1, 7.0)
    # A version whose outcomes do nothing is not waited for.
    s.commit(
        "src",
        (),
        (),
        [NewEvent("id3", "ready", "c", b"{}", SettleVersion("c", 1, 1, 1.0, None, PostAction(), PostAction()))],
        now=9.0,
    )
    s.mark_delivered([r.seq for r in s.undelivered("src")], 9.5)
    assert s.unsettled("src") == (1, 7.0)
    assert s.settle("id3", "succeeded", "", 10.0).row.action_state == "none"  # type: ignore[union-attr]


def test_a_retry_keeps_the_action_pending_with_its_reason(store: StateStore, location: tuple[str, Path | None]) -> None:
    s = store
    s.settle("id2", "succeeded", "", 6.0)
    s.note_action_attempt("id2", "connection refused", 7.0)
    (row,) = s.pending_actions("src")
    assert (row.action_state, row.action_detail) == ("pending", "connection refused")
    ro = open_store_read_only(*location)
    assert [v.event_id for v in ro.versions("src", "b.csv")] == ["id2"]
    ro.close()
