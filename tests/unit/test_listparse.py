"""Table-driven tests of the pure FTP listing parsers."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest

from ftpsource.core.listing import ListEntry, parse_list_line, parse_mdtm, parse_mlsx_line

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def ts(*fields: int) -> float:
    padded = (*fields, 0, 0, 0, 0, 0)[:6]
    return float(calendar.timegm((*padded, 0, 0, 0)))


LIST_CASES = [
    pytest.param(
        "-rw-r--r--   1 owner group   1234 Nov 26 14:05 name with spaces.csv",
        ListEntry("name with spaces.csv", "file", 1234, ts(2026, 11, 26, 14, 5), 60),
        id="unix-recent",
    ),
    pytest.param(
        "-rw-r--r--    1 1000     1000            5 Jan 02  2020 a [b] ü.txt",
        ListEntry("a [b] ü.txt", "file", 5, ts(2020, 1, 2), 86400),
        id="unix-year-form-unicode-brackets",
    ),
    pytest.param(
        "-rw-r--r--   1 ftp      ftp             7 Dec 31 23:59  leading space",
        ListEntry(" leading space", "file", 7, ts(2025, 12, 31, 23, 59), 60),
        id="unix-last-year-by-inference",
    ),
    pytest.param(
        "-rw-r--r-- 1 owner 42 Nov 27 09:00 no-group",
        ListEntry("no-group", "file", 42, ts(2026, 11, 27, 9, 0), 60),
        id="unix-no-group-slightly-future",
    ),
    pytest.param(
        "-rw-r--r--+  1 owner group 9 Mar  3  2021 acl.bin",
        ListEntry("acl.bin", "file", 9, ts(2021, 3, 3), 86400),
        id="unix-acl-marker",
    ),
    pytest.param(
        "drwxr-xr-x   2 owner group 4096 Nov 26 14:05 sub dir",
        ListEntry("sub dir", "dir", 4096, ts(2026, 11, 26, 14, 5), 60),
        id="unix-dir",
    ),
    pytest.param(
        "lrwxrwxrwx   1 owner group 11 Nov 26 14:05 link -> target.csv",
        ListEntry("link", "link", 11, ts(2026, 11, 26, 14, 5), 60),
        id="unix-symlink",
    ),
    pytest.param(
        "-rw-r--r--   1 owner group 3 Feb 29 10:00 leap",
        ListEntry("leap", "file", 3, ts(2024, 2, 29, 10, 0), 60),
        id="unix-feb-29-latest-leap-year",
    ),
    pytest.param(
        "11-26-26  02:05PM                 1234 name.csv",
        ListEntry("name.csv", "file", 1234, ts(2026, 11, 26, 14, 5), 60),
        id="windows-12h",
    ),
    pytest.param(
        "01-02-98  12:30AM                   10 old file.txt",
        ListEntry("old file.txt", "file", 10, ts(1998, 1, 2, 0, 30), 60),
        id="windows-two-digit-1900s",
    ),
    pytest.param(
        "11-26-2026  14:05       <DIR>          sub dir",
        ListEntry("sub dir", "dir", None, ts(2026, 11, 26, 14, 5), 60),
        id="windows-dir-24h-four-digit-year",
    ),
]


@pytest.mark.parametrize(("line", "expected"), LIST_CASES)
def test_list_line(line: str, expected: ListEntry) -> None:
    assert parse_list_line(line, now=NOW) == expected


@pytest.mark.parametrize(
    "line",
    [
        "total 12",
        "",
        "   ",
        "drwxr-xr-x   2 owner group 4096 Nov 26 14:05 .",
        "drwxr-xr-x   2 owner group 4096 Nov 26 14:05 ..",
        "11-26-26  02:05PM       <DIR>          .",
    ],
)
def test_lines_without_entries(line: str) -> None:
    assert parse_list_line(line, now=NOW) is None


@pytest.mark.parametrize(
    "line",
    [
        "garbage",
        "-rw-r--r-- 1 owner group 12 Foo 26 14:05 bad-month",
        "-rw-r--r-- 1 owner group 12 Feb 30 2020 bad-day",
        "-rw-r--r-- 1 owner group 12 Nov 26 25:05 bad-hour",
        "-rw-r--r-- 1 owner group twelve Nov 26 14:05 size-not-a-number",
        "13-26-26  02:05PM  1234 bad-month.csv",
        "11-26-26  13:05PM  1234 bad-12h.csv",
        "-rw-r--r-- 1 owner group 12 26 Nov 14:05 day-first",
        "drwxr-xr-x folder",
    ],
)
def test_garbage_lines_raise(line: str) -> None:
    with pytest.raises(ValueError):
        parse_list_line(line, now=NOW)


def test_device_files_are_other() -> None:
    entry = parse_list_line("prw-r--r-- 1 owner group 0 Nov 26 14:05 fifo", now=NOW)
    assert entry is not None and entry.kind == "other"


def test_year_inference_is_stable_across_new_year() -> None:
    line = "-rw-r--r-- 1 o g 5 Dec 30 10:00 f"
    before = parse_list_line(line, now=datetime(2026, 12, 31, tzinfo=UTC))
    after = parse_list_line(line, now=datetime(2027, 1, 2, tzinfo=UTC))
    assert before is not None and after is not None
    assert before.mtime == after.mtime == ts(2026, 12, 30, 10, 0)
    # A server east of UTC lists a brand-new file with tomorrow's date on New Year's Eve.
    fresh = parse_list_line("-rw-r--r-- 1 o g 5 Jan  1 01:00 f", now=datetime(2026, 12, 31, 20, tzinfo=UTC))
    assert fresh is not None and fresh.mtime == ts(2027, 1, 1, 1, 0)


MLSX_CASES = [
    pytest.param(
        "type=file;size=12;modify=20251126140512; name with spaces.csv",
        ListEntry("name with spaces.csv", "file", 12, ts(2025, 11, 26, 14, 5, 12), 1),
        id="file",
    ),
    pytest.param(
        "Type=File;Size=3;Modify=20251126140512.250;perm=r; ü [x].csv",
        ListEntry("ü [x].csv", "file", 3, ts(2025, 11, 26, 14, 5, 12) + 0.25, 1),
        id="case-insensitive-fraction",
    ),
    pytest.param(
        " modify=20200102000000;perm=adfr;size=5;type=file;UNIX.mode=0644; /srv/a b.txt",
        ListEntry("/srv/a b.txt", "file", 5, ts(2020, 1, 2), 1),
        id="mlst-fact-line",
    ),
    pytest.param(
        "type=dir;modify=20251126140512; sub",
        ListEntry("sub", "dir", None, ts(2025, 11, 26, 14, 5, 12), 1),
        id="dir",
    ),
    pytest.param(
        "type=cdir;modify=20251126140512; .",
        ListEntry(".", "other", None, ts(2025, 11, 26, 14, 5, 12), 1),
        id="cdir",
    ),
    pytest.param(
        "type=OS.unix=slink:/target;modify=20251126140512; l",
        ListEntry("l", "link", None, ts(2025, 11, 26, 14, 5, 12), 1),
        id="symlink",
    ),
]


@pytest.mark.parametrize(("line", "expected"), MLSX_CASES)
def test_mlsx_line(line: str, expected: ListEntry) -> None:
    assert parse_mlsx_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "no facts here",
        "type=file;modify=20251126140512; missing-size",
        "type=file;size=12; missing-modify",
        "type=file;size=x;modify=20251126140512; bad-size",
        "type=file;size=1;modify=2025112614; short-time",
        "size=1;modify=20251126140512; no-type",
        "type=file;size=1;modify=20251126140512;",
    ],
)
def test_bad_mlsx_lines_raise(line: str) -> None:
    with pytest.raises(ValueError):
        parse_mlsx_line(line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20251126140512", ts(2025, 11, 26, 14, 5, 12)),
        (" 20251126140512.5 ", ts(2025, 11, 26, 14, 5, 12) + 0.5),
    ],
)
def test_mdtm(text: str, expected: float) -> None:
    assert parse_mdtm(text) == expected


@pytest.mark.parametrize("text", ["", "2025-11-26", "20251326140512", "Nov 26 14:05"])
def test_bad_mdtm(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mdtm(text)
