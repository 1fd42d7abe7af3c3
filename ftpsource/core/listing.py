"""PURE parsers for FTP directory listings: MLSD/MLST facts, Unix and Windows (IIS) ``LIST`` lines, MDTM.

``LIST`` output is meant for humans and differs between servers; these parsers accept the two common
shapes and raise ``ValueError`` for anything else, so the caller can skip the line with a warning.
Times without a zone are taken as UTC. ``resolution_s`` tells how coarse a time is (1 for exact, 60
for ``Nov 26 14:05``, 86400 for ``Nov 26  2025``) so the adapter knows when to ask for MDTM.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

__all__ = ["ListEntry", "name_problem", "parse_list_line", "parse_mdtm", "parse_mlsx_line", "quote_name"]

Kind = Literal["file", "dir", "link", "other"]


class ListEntry(NamedTuple):
    """One line of a directory listing. ``mtime`` is seconds since the epoch; ``size`` None for dirs.

    A tuple of plain values, so the garbage collector stops tracking it: an adapter keeps one per line
    of a (possibly huge) listing between polls, and full collections would otherwise walk them all.
    """

    name: str
    kind: Kind
    size: int | None
    mtime: float | None
    resolution_s: int = 1


_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}

# "-rw-r--r--  1 owner group  1234 Nov 26 14:05 name"; owner and group may be missing, the mode may
# carry an ACL/xattr marker ("+", "@", ".").
_UNIX_RE = re.compile(
    r"^(?P<mode>[-dlbcpsD?][-rwxsStTlL?]{9})[.+@]?\s+(?P<links>\d+)\s+"
    r"(?:(?P<owner>\S+)\s+)??(?:(?P<group>\S+)\s+)??"
    r"(?P<size>\d+)\s+(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<when>\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$"
)
# "11-26-26  02:05PM       1234 name.csv" and "11-26-2026  14:05  <DIR>  dirname".
_WINDOWS_RE = re.compile(
    r"^(?P<month>\d{2})-(?P<day>\d{2})-(?P<year>\d{2}|\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AaPp][Mm])?\s+"
    r"(?:(?P<dir><DIR>)\s+|(?P<size>\d+)\s)(?P<name>.+)$"
)
_MLSX_TIME_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d+)?$")
# A file whose LIST time lies up to this far in the future still belongs to this year (clock skew,
# servers east of UTC listing local time).
_FUTURE_SLACK = timedelta(days=2)


def _timestamp(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_mdtm(text: str) -> float:
    """``20251126140512`` or ``20251126140512.123`` (UTC, RFC 3659) -> seconds since the epoch."""
    match = _MLSX_TIME_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not an RFC 3659 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3659 time: {text!r} ({exc})") from None
    fraction = float(match.group(7)) if match.group(7) else 0.0
    return _timestamp(year, month, day, hour, minute, second) + fraction


def parse_mlsx_line(line: str) -> ListEntry:
    """One MLSD line (or the fact line of an MLST reply): ``type=file;size=12;modify=...; name``."""
    text = line.rstrip("\r\n")
    if text.startswith(" "):
        text = text[1:]
    facts_text, sep, name = text.partition(" ")
    if not sep or not name or "=" not in facts_text:
        raise ValueError(f"not an MLSD line: {line!r}")
    facts: dict[str, str] = {}
    for fact in facts_text.split(";"):
        if not fact:
            continue
        key, eq, value = fact.partition("=")
        if not eq:
            raise ValueError(f"malformed fact {fact!r} in MLSD line {line!r}")
        facts[key.lower()] = value
    ftype = facts.get("type", "").lower()
    kind: Kind
    if ftype == "file":
        kind = "file"
    elif ftype == "dir":
        kind = "dir"
    elif ftype in ("cdir", "pdir"):
        kind = "other"
    elif "slink" in ftype or "symlink" in ftype:
        kind = "link"
    elif ftype:
        kind = "other"
    else:
        raise ValueError(f"MLSD line without a type fact: {line!r}")
    size: int | None = None
    if "size" in facts:
        try:
            size = int(facts["size"])
        except ValueError:
            raise ValueError(f"bad size fact in MLSD line {line!r}") from None
    elif kind == "file":
        raise ValueError(f"MLSD file line without a size fact: {line!r}")
    mtime: float | None = None
    if "modify" in facts:
        mtime = parse_mdtm(facts["modify"])
    elif kind == "file":
        raise ValueError(f"MLSD file line without a modify fact: {line!r}")
    return ListEntry(name, kind, size, mtime, 1)


def _infer_year(month: int, day: int, hour: int, minute: int, now: datetime) -> float:
    """``ls`` omits the year for recent files: take the latest year that does not lie in the future."""
    best: float | None = None
    limit = (now + _FUTURE_SLACK).timestamp()
    for year in (now.year + 1, now.year, now.year - 1, now.year - 2, now.year - 3, now.year - 4):
        try:
            datetime(year, month, day)
        except ValueError:  # 29 February outside a leap year
            continue
        ts = _timestamp(year, month, day, hour, minute)
        if ts <= limit:
            best = ts
            break
    if best is None:
        raise ValueError(f"no year fits month {month} day {day}")
    return best


def _parse_unix(line: str, now: datetime) -> ListEntry | None:
    match = _UNIX_RE.match(line)
    if match is None:
        return None
    mode = match.group("mode")
    name = match.group("name")
    kind: Kind = {"-": "file", "d": "dir", "l": "link"}.get(mode[0], "other")  # type: ignore[assignment]
    if kind == "link":
        name = name.split(" -> ", 1)[0]
    month = _MONTHS.get(match.group("month").lower())
    if month is None:
        raise ValueError(f"unknown month {match.group('month')!r} in LIST line {line!r}")
    day = int(match.group("day"))
    when = match.group("when")
    try:
        if ":" in when:
            hour, minute = (int(x) for x in when.split(":"))
            if hour > 23 or minute > 59:
                raise ValueError(f"bad time {when!r}")
            mtime = _infer_year(month, day, hour, minute, now)
            resolution = 60
        else:
            datetime(int(when), month, day)
            mtime = _timestamp(int(when), month, day)
            resolution = 86400
    except ValueError as exc:
        raise ValueError(f"bad date in LIST line {line!r}: {exc}") from None
    return ListEntry(name, kind, int(match.group("size")), mtime, resolution)


def _parse_windows(line: str) -> ListEntry | None:
    match = _WINDOWS_RE.match(line)
    if match is None:
        return None
    year = int(match.group("year"))
    if year < 100:
        year += 1900 if year >= 70 else 2000
    hour, minute = int(match.group("hour")), int(match.group("minute"))
    ampm = match.group("ampm")
    try:
        if ampm is not None:
            if not 1 <= hour <= 12:
                raise ValueError(f"bad 12-hour time {hour}")
            hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
        datetime(year, int(match.group("month")), int(match.group("day")), hour, minute)
    except ValueError as exc:
        raise ValueError(f"bad date in LIST line {line!r}: {exc}") from None
    mtime = _timestamp(year, int(match.group("month")), int(match.group("day")), hour, minute)
    if match.group("dir"):
        return ListEntry(match.group("name"), "dir", None, mtime, 60)
    return ListEntry(match.group("name"), "file", int(match.group("size")), mtime, 60)


def parse_list_line(line: str, *, now: datetime | None = None) -> ListEntry | None:
    """Parse one ``LIST`` line (Unix ``ls -l`` or Windows/IIS style).

    Returns None for lines that carry no entry (``total 12``, blank lines, ``.`` and ``..``) and raises
    ``ValueError`` for lines in an unknown format. ``now`` (UTC) fills in the year ``ls`` leaves out.
    """
    text = line.rstrip("\r\n")
    if not text.strip() or re.match(r"^total\s+\d+\s*$", text, re.IGNORECASE):
        return None
    when = now if now is not None else datetime.now(UTC)
    entry = _parse_unix(text, when) or _parse_windows(text)
    if entry is None:
        raise ValueError(f"unrecognised LIST line: {text!r}")
    if entry.name in (".", ".."):
        return None
    return entry


_NAME_CHARS = (("/", "contains '/'"), ("\0", "contains NUL"), ("\r", "contains CR"), ("\n", "contains LF"))
QUOTE_NAME_MAX = 60


def name_problem(name: str) -> str | None:
    """Why a name from a listing (any server, any protocol) cannot be one component of a relative
    path, or None when it can. Such a name never reaches an event: consumers build output paths from
    ``data.path``, and ``..`` or a ``/`` in it would lead them out of their own directories."""
    if name in ("", ".", ".."):
        return f"is {name!r}"
    for char, problem in _NAME_CHARS:
        if char in name:
            return problem
    return None


def quote_name(name: str | bytes) -> str:
    """A name for a log line: its repr, cut short (a hostile server can send a megabyte)."""
    text = repr(name)
    return text if len(text) <= QUOTE_NAME_MAX else text[: QUOTE_NAME_MAX - 1] + "…"
