"""Hostile inputs the tests share: configs built to exhaust a parser, names built to escape a root."""

from __future__ import annotations

__all__ = ["BAD_NAMES", "alias_bomb", "assert_not_leaked"]


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" config: each level is a list of nine aliases of the previous one, so
    ``levels`` levels expand into 9**levels strings. Nine levels fit in about 440 bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"url: *a{levels - 1}")
    return "\n".join(lines) + "\n"


#: Names a hostile server may return in a listing; none may ever reach an event.
BAD_NAMES = ["", ".", "..", "../escape", "a/b", "x\x00y", "cr\rname", "lf\nname"]


def assert_not_leaked(secret: str, **places: object) -> None:
    """``secret`` appears in none of the named texts (events, log records, metrics, error details)."""
    for where, text in places.items():
        assert secret not in str(text), f"the secret leaked into {where}"
