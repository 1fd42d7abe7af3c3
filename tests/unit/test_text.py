"""Text from outside is shown without control characters: the helper, the text log format, and the
operator's `state` output."""

from __future__ import annotations

import logging

from ftpsource.core.text import printable
from ftpsource.logging import TextFormatter

HOSTILE = "550 no\r\n12:00:00 INFO    all good\x1b[2J\x1b]0;pwned\x07 \u202egnp.exe\x00"


def test_printable_escapes_every_control_and_keeps_the_rest() -> None:
    out = printable(HOSTILE)
    assert out.isprintable()
    assert out == ("550 no\\x0d\\x0a12:00:00 INFO    all good\\x1b[2J\\x1b]0;pwned\\x07 \\u202egnp.exe\\x00")
    assert printable("plain ü 😀 text") == "plain ü 😀 text"


def test_text_log_lines_stay_one_line_without_escape_sequences() -> None:
    record = logging.LogRecord("ftpsource.x", logging.WARNING, __file__, 1, "refused: %s", (HOSTILE,), None)
    record.path = "a\nb"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert "refused: 550 no\\x0d\\x0a" in line and "path=a\\x0ab" in line
