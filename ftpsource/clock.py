"""Time as the server sees it: real time plus an offset that can be moved forward.

Moving it forward reaches a deadline at once while time keeps flowing (the demo does this).
"""

from __future__ import annotations

import time

__all__ = ["ShiftedClock"]


class ShiftedClock:
    """A callable clock: ``time.time()`` plus ``offset`` seconds."""

    def __init__(self, start: float | None = None) -> None:
        self.offset = 0.0 if start is None else start - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
