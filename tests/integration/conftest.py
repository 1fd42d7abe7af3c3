from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.sources import KINDS, SourceUnderTest, source_under_test


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory to serve as a local source's root."""
    d = tmp_path / "in"
    d.mkdir()
    return d


@pytest.fixture(params=KINDS)
async def src(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SourceUnderTest]:
    """A source of every kind: local, FTP/FTPS (pyftpdlib, vsftpd, proftpd), SFTP (asyncssh, OpenSSH)."""
    async with source_under_test(request.param, tmp_path) as s:
        yield s


@pytest.fixture(params=[k for k in KINDS if k != "local"])
async def remote(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SourceUnderTest]:
    """Sources behind a server: they have a password to leak and a server to lose."""
    async with source_under_test(request.param, tmp_path) as s:
        yield s
