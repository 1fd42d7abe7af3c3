"""Deadlines for tests that drive an expect schedule with a shifted clock."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["next_boundary"]


def next_boundary(now: float, every_s: int = 600) -> datetime:
    """The next ``*/10``-minute deadline after ``now``. Read the clock once and pass it: two reads
    (``clock() - clock() % 600``) land a hair before the boundary and name the wrong minute."""
    return datetime.fromtimestamp(now - now % every_s + every_s, UTC)
