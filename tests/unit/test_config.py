from __future__ import annotations

import pytest

from ftpsource.config import SetPattern, format_duration, parse_duration, parse_source_config
from ftpsource.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_source_config(text)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("0s", 0), (12, 12), ("1h", 3600), ("2m5s", 125)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "-5s", "5", "1d", "s", "m5", True, None, -1])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 1, 59, 60, 3599, 3600, 5400, 86399, 0.25])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_defaults_follow_the_product_contract() -> None:
    c = parse_source_config("url: ftp://ftp.example.com/in")
    assert (c.poll_interval_s, c.stable_for_s, c.min_age_s, c.min_size) == (30, 30, 0, 1)
    assert (c.checksum, c.validate_, c.reject_after_s, c.existing, c.deletes) == ("sha256", "auto", 3600, "emit", False)
    assert c.exclude == ["**/.*", "**/*.part", "**/*.tmp", "**/*.filepart"] and c.include == []
    assert (c.recursive, c.max_connections, c.tls_verify, c.insecure_skip_host_key_check) == (True, 2, True, False)


def test_json_is_accepted() -> None:
    c = parse_source_config(b'{"url": "file:///data", "stable_for": "5s"}')
    assert c.stable_for_s == 5 and c.display_url == "file:///data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("url: file:///x\nstable_for: abc", "stable_for: invalid duration 'abc'"),
        ("url: file:///x\nfoo: 1", "foo: unknown key"),
        ("url: file:///x\nmin_age: -5s", "min_age: invalid duration '-5s': must not be negative"),
        ("url: file:///x\nmin_size: big", "min_size: "),
        ("url: file:///x\nrecursive: maybe", "recursive: "),
        ("url: file:///x\nchecksum: sha1", "checksum: "),
        ("url: gopher://h/x", "url: unsupported scheme 'gopher'"),
        ("url: ftp://u:pw@h/x", "url: a password in the URL is not allowed"),
        ("url: file:///x\npassword: hunter2", "password: secrets never go inline"),
        ("stable_for: 5s", "url: required"),
        ("url: file:///x\nmarker: '{nope}.done'", "marker: unknown template field {nope}"),
        ("url: file:///x\nexpect: [{path: 'a_%Q.csv', schedule: '0 6 * * *'}]", "expect.0.path: unknown strftime"),
        ("url: file:///x\nexpect: [{path: a.csv, schedule: '61 6 * * *'}]", "expect.0.schedule: invalid cron"),
        (
            "url: file:///x\nexpect: [{path: a.csv, schedule: '0 6 * * *', timezone: Mars/Base}]",
            "expect.0.timezone: unknown timezone 'Mars/Base'",
        ),
        ("url: file:///x\nexpect: [{path: a.csv, schedule: '0 6 * * *', warn_before: soon}]", "expect.0.warn_before: "),
        ("url: file:///x\nexpect: [{set: s, files: [], schedule: '0 6 * * *'}]", "expect.0.files: "),
        (
            "url: file:///x\nexpect: [{set: s, files: ['a_%Q'], schedule: '0 6 * * *'}]",
            "expect.0.files: unknown strftime",
        ),
        (
            "url: file:///x\nexpect: [{set: s, files: [a, a], schedule: '0 6 * * *'}]",
            "expect.0.files: 'a' is listed twice",
        ),
        ("url: file:///x\nexpect: [{set: 'a b', files: [a], schedule: '0 6 * * *'}]", "expect.0.set: use letters"),
        (
            "url: file:///x\nexpect: [{set: s, files: [{pattern: 'p*', count: 0}], schedule: '0 6 * * *'}]",
            "expect.0.files.0.count: ",
        ),
        (
            "url: file:///x\nexpect: [{set: s, files: [{pattern: 'p*'}], schedule: '0 6 * * *'}]",
            "expect.0.files.0.count: required",
        ),
        (
            "url: file:///x\nexpect: [{set: s, files: [a], schedule: '0 6 * * *', path: b}]",
            "expect.0.path: unknown key",
        ),
        (
            "url: file:///x\nexpect: [{set: s, files: [a], schedule: '0 6 * * *'},"
            " {set: s, files: [b], schedule: '0 7 * * *'}]",
            "expect: set 's' is defined twice",
        ),
        ("url: file:///x\nmax_connections: 0", "max_connections: "),
        ("url: [", "config: malformed YAML at line "),
        ("- a\n- b", "config: expected a mapping"),
        ("", "config: empty"),
        ("url: sftp://h/x\nhost_key: abc", "host_key: expected a fingerprint"),
    ],
)
def test_each_bad_field_is_named(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_every_bad_field_is_reported_at_once() -> None:
    found = problems("url: file:///x\nstable_for: abc\npoll_interval: zz\nfoo: 1\nchecksum: crc")
    assert {p.split(":")[0] for p in found} == {"stable_for", "poll_interval", "foo", "checksum"}


def test_secret_never_echoed_in_errors() -> None:
    text = "\n".join(problems("url: ftp://user:hunter2@h/x\npassword: hunter2"))
    assert "hunter2" not in text


def test_non_utf8_config() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_source_config(b"url: \xff\xfe")


def test_source_id_is_stable_per_url() -> None:
    a = parse_source_config("url: ftp://alice@h/in").source_id("sales")
    assert a == parse_source_config("url: ftp://alice@h/in").source_id("sales")
    assert a != parse_source_config("url: ftp://alice@h/other").source_id("sales")
    assert parse_source_config("url: ftp://h/in\nid: fixed").source_id("sales") == "fixed"


def test_sets_and_warnings_parse() -> None:
    c = parse_source_config(
        """
url: file:///x
expect:
  - path: "sales_%Y%m%d.csv"
    schedule: "0 6 * * *"
    warn_before: 1h
  - set: daily-master
    files: ["orders_%Y%m%d.csv", "customers_%Y%m%d.csv", {pattern: "products_%Y%m%d_part*.csv", count: 4}]
    schedule: "0 6 * * 1-5"
    grace: 30m
    warn_before: 1h
    timezone: Europe/Berlin
"""
    )
    (solo,) = c.expect_files
    (daily,) = c.expect_sets
    assert solo.warn_before_s == 3600 and daily.warn_before_s == 3600 and daily.grace_s == 1800
    assert daily.files[2] == SetPattern(pattern="products_%Y%m%d_part*.csv", count=4)
    assert daily.set == "daily-master" and daily.timezone == "Europe/Berlin"
