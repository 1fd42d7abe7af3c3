"""Settling, the pure part: target templates, what they exclude from detection, the changed-version guard."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftpsource.config import parse_source_config
from ftpsource.core.model import Entry
from ftpsource.core.paths import PathFilter
from ftpsource.core.settle import (
    PostAction,
    SettleVersion,
    check_target_template,
    render_target,
    still_the_version,
    target_excludes,
)
from ftpsource.errors import ConfigError

AT = datetime(2026, 3, 4, 23, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("template", "path", "tz", "target"),
    [
        ("archive/%Y/%m/%d/{name}", "in/sales.csv", "UTC", "archive/2026/03/04/sales.csv"),
        ("archive/%Y/%m/%d/{name}", "sales.csv", "Europe/Paris", "archive/2026/03/05/sales.csv"),  # local date
        ("failed/{name}", "a/b/c.csv", "UTC", "failed/c.csv"),
        ("failed/{path}", "a/b/c.csv", "UTC", "failed/a/b/c.csv"),
        ("{dir}/done/{stem}.%H%M.csv", "a/c.csv", "UTC", "a/done/c.2330.csv"),
        ("{dir}/done/{name}", "c.csv", "UTC", "done/c.csv"),  # {dir} is "." at the root
        ("old/{name}", "100%_{x}.csv", "UTC", "old/100%_{x}.csv"),  # the file name is never a format
    ],
)
def test_render_target(template: str, path: str, tz: str, target: str) -> None:
    assert render_target(check_target_template(template), path, AT, tz) == target


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("/abs/{name}", "relative"),
        ("../{name}", "inside the source root"),
        ("a/../../{name}", "inside the source root"),
        ("archive/today.csv", "every file would get the same name"),
        ("{dir}/x", "every file would get the same name"),
        ("{foo}/{name}", "unknown template field {foo}"),
        ("%Q/{name}", "unknown strftime field '%Q'"),
        ("a/{name}\r\nDELE x", "control characters"),
        ("{name", "invalid template"),
    ],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        check_target_template(template)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "template", ["archive/%Y/%m/%d/{name}", "failed/{name}", "{dir}/done/{name}", "{path}.bad", "{stem}.%Y%m%d.done"]
)
@given(
    path=st.from_regex(r"[a-z0-9_]{1,8}(/[a-z0-9_]{1,8}){0,3}\.csv", fullmatch=True),
    at=st.floats(min_value=0, max_value=4e9),
)
def test_every_target_is_excluded_from_detection(template: str, path: str, at: float) -> None:
    target = render_target(template, path, at, "UTC")
    assert not PathFilter([], target_excludes(template), recursive=True).wanted(target)


def test_a_fixed_directory_is_excluded_whole_and_not_descended() -> None:
    assert target_excludes("archive/%Y/{name}") == ["archive", "archive/**"]
    pf = PathFilter([], target_excludes("archive/%Y/{name}"), recursive=True)
    assert not pf.descend("archive") and pf.wanted("in/archive.csv") and pf.wanted("archived/x.csv")


def test_config_moves_targets_out_of_detection_and_names_bad_fields() -> None:
    cfg = parse_source_config(
        "url: file:///in\non_success: {action: move, to: 'done/%Y/{name}'}\n"
        "on_failure: {action: move, to: 'failed/{name}', timezone: Europe/Paris}\n"
    )
    policy = cfg.policy()
    assert not policy.path_filter.wanted("done/2026/a.csv") and not policy.path_filter.wanted("failed/a.csv")
    assert policy.path_filter.wanted("a.csv")
    assert cfg.on_failure.spec() == PostAction("move", "failed/{name}", "Europe/Paris")
    with pytest.raises(ConfigError) as info:
        parse_source_config(
            "url: file:///in\non_success: {action: move}\non_failure: {action: delete}\non_success_typo: 1\n"
        )
    text = str(info.value)
    assert "on_success: `move` needs `to`" in text
    assert "on_failure.action:" in text and "'delete'" in text
    assert "on_success_typo: unknown key" in text
    with pytest.raises(ConfigError, match=r"on_success.to: must stay inside the source root"):
        parse_source_config("url: file:///in\non_success: {action: move, to: '../{name}'}\n")
    with pytest.raises(ConfigError, match=r"on_success: `to` only goes with `action: move`"):
        parse_source_config("url: file:///in\non_success: {action: delete, to: 'x/{name}'}\n")


VERSION = SettleVersion("a.csv", 1, 10, 1000.0, "ab" * 32, PostAction("delete"), PostAction())


@pytest.mark.parametrize(
    ("entry", "server_sum", "verdict"),
    [
        (Entry("a.csv", 10, 1000.0), None, None),
        (Entry("a.csv", 10, 1000.0), "ab" * 32, None),
        (None, None, "the file is gone"),
        (Entry("a.csv", 11, 1000.0), None, "size/mtime now 11/1000.0"),
        (Entry("a.csv", 10, 1001.0), None, "size/mtime now 10/1001.0"),
        (Entry("a.csv", 10, 1000.0), "cd" * 32, "checksum differs"),
    ],
)
def test_only_the_settled_version_is_touched(entry: Entry | None, server_sum: str | None, verdict: str | None) -> None:
    found = still_the_version(VERSION, entry, server_sum)
    if verdict is None:
        assert found is None
    else:
        assert found is not None and found.startswith("changed since reported") and verdict in found


def test_expects_settle_only_when_some_outcome_acts() -> None:
    assert VERSION.expects_settle
    assert not SettleVersion("a", 1, 1, 1.0, None, PostAction(), PostAction()).expects_settle
    assert PostAction.from_json(PostAction("move", "x/{name}", "UTC").to_json()) == PostAction("move", "x/{name}")
