"""Hostile config text: bounded size, no anchors/aliases/tags, string keys, short quotes, and a fuzzer."""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpsource.config import MAX_CONFIG_BYTES, QUOTE_MAX, SourceConfig, parse_source_config
from ftpsource.errors import ConfigError
from tests.support.hostile import alias_bomb

# Far above what any input here costs (well under 10 ms), far below what the alias bomb used to (seconds).
GENEROUS_CPU_S = 1.0
LONG = "x" * 5000


def problems(text: str | bytes) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_source_config(text)
    return info.value.problems


def test_alias_bomb_is_refused_without_expanding() -> None:
    bomb = alias_bomb(9)
    assert len(bomb) < 450
    t0 = time.process_time()
    found = problems(bomb)
    assert time.process_time() - t0 < GENEROUS_CPU_S
    assert found == ["config: YAML anchors (&name) are not allowed at line 1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: &b file:///x\nurl: *b", "config: YAML anchors (&name) are not allowed"),
        ("url: *nowhere", "config: YAML aliases (*name) are not allowed"),
        ("url: !!str file:///x", "config: YAML tags (!tag) are not allowed"),
        ("url: !custom file:///x", "config: YAML tags (!tag) are not allowed"),
        ("url: file:///x\ninclude: !!seq [a]", "config: YAML tags (!tag) are not allowed"),
        ("1: a\nurl: file:///x", "config: keys must be strings, got 1"),
        ("null: a\nurl: file:///x", "config: keys must be strings, got None"),
        ("url: file:///x\nexpect: [{true: 1}]", "expect.0: keys must be strings, got True"),
        ("url: file:///x\nx: " + "[" * 40 + "]" * 40, "config: nested more than 12 levels deep"),
        ("url: file:///x\nmin_size: " + "9" * 5000, "config: unreadable value"),
        ("url: file:///x\n" + "".join(f"k{i}: 1\n" for i in range(200)), "config: more than 128 keys in a mapping"),
        ("url: file:///x\ninclude: [" + ",".join("a" * 300) + "]", "config: more than 128 items in a list"),
        (
            "url: file:///x\n" + "".join(f"k{i}: [{', '.join('1' * 16)}]\n" for i in range(120)),
            "config: more than 2048 keys and values",
        ),
        ("url: file:///x\nstable_for: .nan", "stable_for: invalid duration nan: must be finite"),
        ("url: file:///x\nstable_for: 1.0e+400", "stable_for: invalid duration inf: must be finite"),
        ("url: file:///x\nreject_after: 100000h", "reject_after: invalid duration '100000h'"),
        ("url: 'file:///x%0Ay'", "url: the path must not contain NUL, CR or LF"),
        ("url: 'ftp://alice%0D%0ASTAT%20x@h/'", "url: the user name must not contain control characters"),
        ("url: 'sftp://a%00b@h/'", "url: the user name must not contain control characters"),
        ("url: file:///x\nmarker: '{dir}/../{name}.done'", "marker: template '{dir}/../{name}.done' names a file"),
        ("url: file:///x\nsidecar: '/etc/{name}'", "sidecar: template '/etc/{name}' names a file outside"),
        ("url: file:///x\nsidecar: '{dir}.'", "sidecar: template '{dir}.' names a file outside the source root"),
        ("url: file:///x\nmarker: '{path}/../../x'", "marker: template '{path}/../../x' names a file outside"),
    ],
)
def test_hostile_constructs_are_named(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_size_is_bounded_before_parsing() -> None:
    text = "url: file:///x\n# " + "y" * MAX_CONFIG_BYTES
    assert problems(text) == [f"config: {len(text)} bytes; at most {MAX_CONFIG_BYTES} are accepted"]
    assert problems(text.encode()) == problems(text)


@pytest.mark.parametrize(
    "text",
    [
        f"url: file:///x\nstable_for: '{LONG}'",
        f"url: file:///x\nchecksum: '{LONG}'",
        f"url: file:///x\n'{LONG}': 1",
        f"url: file:///x\nmarker: '{{nope{LONG}}}'",
        f"url: file:///x\nmarker: '{{dir}}/../{LONG}'",
        f"url: file:///x\nexpect: [{{path: 'a%Q{LONG}', schedule: '0 6 * * *'}}]",
        f"url: file:///x\nexpect: [{{path: a, schedule: '0 6 * * *', timezone: '{LONG[:200]}'}}]",
        f"url: 'gopher://h/{LONG}'",
        f"url: '{LONG}'",
        f"url: file:///x\ninclude: ['{LONG}']",
    ],
)
def test_errors_quote_at_most_a_short_prefix(text: str) -> None:
    for problem in problems(text):
        assert "x" * (QUOTE_MAX + 1) not in problem, problem
        assert len(problem) < 300, problem


def test_problem_list_is_capped() -> None:
    text = "url: file:///x\n" + "".join(f"k{i}: 1\n" for i in range(100))
    found = problems(text)
    assert len(found) == 21 and found[-1] == "config: and 80 more problems"


# --- fuzzing --------------------------------------------------------------------------------------

KEYS = [*SourceConfig.model_fields, "poll_interval", "stable_for", "min_age", "reject_after", "validate", "timeout"]
SCALARS = st.one_of(
    st.text(max_size=60),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["90s", "5m", "1h30m", "{path}.done", "{dir}/_SUCCESS", "**/*.csv", "0 6 * * *", "UTC"]),
    st.sampled_from(["file:///data", "ftp://h/in", "sftp://u@h:22/x", "ftps://h", "file:///", "ftp://[::1]:21/"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)
CONFIGS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=10)
YAML_SNIPPETS = st.lists(
    st.sampled_from(
        [
            *("url: file:///x\n", "&a ", "*a", "!!str ", "!t ", "[", "]", "{", "}", ": ", "- ", "? ", "\n"),
            *("  ", "'", '"', "#", "expect:\n  - path: a\n", "<<: ", "%YAML 1.1\n---\n", "...\n", "\t", "\\"),
            *("|\n", ">-\n", "\x00", "\ufeff"),
        ]
    )
    | st.text(max_size=5),
    max_size=40,
).map("".join)


def _check_one(raw: str | bytes) -> None:
    t0 = time.process_time()
    try:
        parse_source_config(raw)
    except ConfigError as exc:
        assert exc.problems and len(str(exc)) < 8192
    assert time.process_time() - t0 < GENEROUS_CPU_S


fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(CONFIGS)
def test_fuzz_structured_configs(data: dict[str, object]) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    _check_one(text)
    _check_one(text.encode())


@fuzz
@given(YAML_SNIPPETS)
def test_fuzz_yaml_fragments(text: str) -> None:
    _check_one(text)


@fuzz
@given(st.binary(max_size=300))
def test_fuzz_bytes(raw: bytes) -> None:
    _check_one(raw)
