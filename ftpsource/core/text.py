"""PURE: text from outside (a server's replies, a Workflow's settle message) made safe to show.

A terminal acts on control characters: a carriage return or an escape sequence in an error a hostile
FTP server sent, or in the message a Workflow settled with, could rewrite what the operator sees.
"""

from __future__ import annotations

__all__ = ["printable"]


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character that is not printable (controls, line and paragraph separators,
    format characters such as bidirectional overrides) written as a ``\\xNN``/``\\uNNNN`` escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)
