"""Terminal output shared by the commands: tables, times, JSON, progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from ..config import format_duration
from ..core.text import printable

__all__ = ["PROGRESS_EVERY", "Progress", "age", "dump", "json_line", "short", "table", "when"]

#: Non-TTY progress lines are written every this many files.
PROGRESS_EVERY = 10_000


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    if ts < 0:
        return "dropped"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def age(seconds: float) -> str:
    return "future" if seconds < 0 else format_duration(int(seconds))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Iterable[int] = ()) -> list[str]:
    """Plain aligned columns; ``right`` names the columns (indexes) aligned right."""
    # Cells hold text from outside (server replies, settle messages): shown, never acted on by a terminal.
    cells = [[str(c) for c in headers]] + [[("-" if c is None else printable(str(c))) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_set = set(right)
    out = []
    for r in cells:
        parts = [
            c.rjust(widths[i]) if i in right_set else (c if i == len(r) - 1 else c.ljust(widths[i]))
            for i, c in enumerate(r)
        ]
        out.append("  ".join(parts).rstrip())
    return out


def short(checksum: str | None) -> str | None:
    return checksum[:16] + "…" if checksum and len(checksum) > 17 else checksum


def dump(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


class Progress:
    """Progress on stderr: a live line on a terminal, else one line per ``PROGRESS_EVERY`` items."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._live = False
        self._reported: dict[str, int] = {}  # per counter: multiples of PROGRESS_EVERY already written

    def count(self, what: str, n: int, total: int | None = None) -> None:
        text = f"{what} {n}" + (f" of {total}" if total is not None else "") + " files…"
        if self.tty:
            now = time.monotonic()
            if now - self._last >= 0.1 or n == total:
                self._last = now
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
                self._live = True
        elif n // PROGRESS_EVERY > self._reported.get(what, 0):
            self._reported[what] = n // PROGRESS_EVERY
            self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        """A live status line; terminals only."""
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._live = True

    def line(self, text: str, *, only_tty: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + "\n")
            self._live = False
        elif not only_tty:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._live = False


def json_line(obj: object) -> str:
    """One JSON object on one line, keys sorted."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
