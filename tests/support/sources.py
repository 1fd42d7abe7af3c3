"""Every kind of source as a fixture: what a scenario needs to drop files and to point ftpsource at it.

The remote servers serve a local directory (``root``), so a scenario writes files there the way an
upload would land them, and ftpsource sees them only through the protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import servers


@dataclass
class SourceUnderTest:
    kind: str
    root: Path
    url: str
    credentials_dir: Path | None = None
    secret: str | None = None  # the password, to prove it never leaks
    extra: dict[str, Any] = field(default_factory=dict)
    server: Any = None

    def config(self, **kw: Any) -> dict[str, Any]:
        return {"url": self.url, **self.extra, **kw}


def write_credentials(base: Path, name: str, hosts: str | None = servers.HOST, **files: str | None) -> Path:
    """A credential set ``name`` under ``base/creds``; ``hosts`` is its hosts file (the loopback address the
    test servers listen on unless given; None: no hosts file). Returns the credentials directory."""
    files = {"hosts": hosts, **files}
    d = base / "creds" / name
    d.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        if value is not None:
            (d / key).write_text(value)
    return base / "creds"


KINDS = ["local", "ftp-pyftpdlib", "ftps-pyftpdlib", "sftp-asyncssh", "ftp-vsftpd", "ftp-proftpd", "sftp-openssh"]
FAST_KINDS = ["local", "ftp-pyftpdlib", "sftp-asyncssh"]


@contextlib.asynccontextmanager
async def source_under_test(kind: str, tmp: Path) -> AsyncIterator[SourceUnderTest]:
    if kind == "local":
        root = tmp / "local-root"
        root.mkdir()
        yield SourceUnderTest(kind, root, f"file://{root}")
        return
    if kind.startswith("ftp"):
        starter = {
            "ftp-pyftpdlib": lambda: servers.pyftpdlib_server(),
            "ftps-pyftpdlib": lambda: servers.pyftpdlib_server(tls=True),
            "ftp-vsftpd": lambda: servers.vsftpd_server(),
            "ftp-proftpd": lambda: servers.proftpd_server(),
        }[kind]
        async with starter() as srv:
            ca = srv.ca_file.read_text() if srv.ca_file else None
            creds = write_credentials(tmp, "ftp", username=srv.username, password=srv.password, **{"ca.pem": ca})
            yield SourceUnderTest(kind, srv.root, srv.url(), creds, srv.password, {"credentials": "ftp"}, srv)
        return
    ssh_starter = {"sftp-asyncssh": servers.asyncssh_server, "sftp-openssh": servers.openssh_server}[kind]
    async with ssh_starter() as ssh:
        creds = write_credentials(
            tmp, "sftp", username=ssh.username, password=ssh.password, known_hosts=ssh.known_hosts.read_text()
        )
        yield SourceUnderTest(kind, ssh.root, ssh.url(), creds, ssh.password, {"credentials": "sftp"}, ssh)
