from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory to serve as a local source's root."""
    d = tmp_path / "in"
    d.mkdir()
    return d
