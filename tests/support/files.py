"""Putting files into a served directory the way an uploader would leave them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["put"]


def put(root: Path, rel: str, data: bytes, mtime: float | None = None) -> None:
    """Write ``data`` at ``root/rel`` (parents created, world-readable), optionally with an mtime."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.chmod(p, 0o644)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
