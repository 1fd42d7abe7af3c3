"""Failures every remote adapter (FTP, SFTP) reports the same way, before any login."""

from __future__ import annotations

import time

import pytest

from ftpsource.adapters.base import Adapter
from ftpsource.adapters.ftp import FtpAdapter
from ftpsource.adapters.sftp import SftpAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials, Secret
from ftpsource.errors import TransientSourceError
from tests.support import servers

# The URL and the host-key settings each protocol needs to get as far as connecting.
PROTOCOLS = {
    "ftp": (FtpAdapter, "url: ftp://user@127.0.0.1:{port}/"),
    "sftp": (SftpAdapter, "url: sftp://user@127.0.0.1:{port}/\nhost_key: 'SHA256:" + "A" * 43 + "'"),
}


def adapter(protocol: str, port: int, timeout_s: float | None = None) -> Adapter:
    cls, template = PROTOCOLS[protocol]
    config = parse_source_config(template.format(port=port))
    extra = {} if timeout_s is None else {"timeout_s": timeout_s}
    return cls(config, Credentials(password=Secret("pw")), PathFilter([], [], True), **extra)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_connection_refused_is_transient(protocol: str) -> None:
    async with adapter(protocol, servers.free_port()) as src:
        with pytest.raises(TransientSourceError) as info:
            await src.list()
    assert info.value.kind == "connect"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_silent_server_times_out(protocol: str) -> None:
    async with servers.silent_server() as port, adapter(protocol, port, timeout_s=0.5) as src:
        started = time.monotonic()
        with pytest.raises(TransientSourceError) as info:
            await src.list()
        elapsed = time.monotonic() - started
    assert info.value.kind == "timeout"
    assert 0.4 < elapsed < 3.0
