"""The SFTP adapter against real servers: asyncssh in-process and OpenSSH's sshd."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from ftpsource.adapters import adapter_for, sftp
from ftpsource.adapters.base import CHUNK_SIZE
from ftpsource.adapters.sftp import SftpAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.model import Entry
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials, Secret
from ftpsource.errors import FileVanished, PermanentSourceError, TransientSourceError
from tests.support import servers
from tests.support.adapters import Recorder, assert_no_secret, by_path
from tests.support.servers import SftpServer

Factory = Callable[[], contextlib.AbstractAsyncContextManager[SftpServer]]
FACTORIES: dict[str, Factory] = {
    "asyncssh": lambda: servers.asyncssh_server(),
    "openssh": lambda: servers.openssh_server(),
}
REAL = {"openssh"}


def params(names: list[str]) -> list[Any]:
    return [pytest.param(n, id=n, marks=[pytest.mark.real_server] if n in REAL else []) for n in names]


@pytest.fixture(params=params(list(FACTORIES)))
async def sftp_server(request: pytest.FixtureRequest) -> AsyncIterator[SftpServer]:
    async with FACTORIES[request.param]() as server:
        yield server


def make_adapter(
    server: SftpServer,
    extra: str = "",
    *,
    url: str | None = None,
    password: str | None = None,
    use_password: bool = True,
    use_key: bool = False,
    private_key: str | None = None,
    known_hosts: Path | bool | None = True,
    timeout_s: float = 10.0,
) -> SftpAdapter:
    config = parse_source_config(f"url: '{url or server.url()}'\n{extra}")
    hosts = server.known_hosts if known_hosts is True else (known_hosts or None)
    credentials = Credentials(
        name="test",
        password=Secret(password if password is not None else server.password) if use_password else None,
        private_key=Secret(private_key or server.private_key) if use_key else None,
        known_hosts=hosts,
    )
    src = adapter_for(config, credentials, PathFilter(config.include, config.exclude, config.recursive))
    assert isinstance(src, SftpAdapter)
    src.timeout_s = timeout_s
    return src


T_EXACT = 1764165912
TREE: dict[str, bytes] = {
    "top.csv": b"a,b\n1,2\n",
    ".marker": b"",
    "name with spaces.csv": b"spaces",
    "ünïcödé – naïve.txt": "unicode ✓".encode(),
    "brackets [1] (2) {3}.dat": b"brackets",
    "nested/level1.txt": b"1",
    "nested/deeper/level2.txt": b"22",
    "nested/deeper/deepest dir/level3 [x].txt": b"333",
}


def build_tree(root: Path) -> list[Entry]:
    expected = []
    for i, (rel, data) in enumerate(sorted(TREE.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (T_EXACT + i, T_EXACT + i))
        expected.append(Entry(rel, len(data), float(T_EXACT + i)))
        if rel == "top.csv":
            # A link to a file counts as the file (as in the local adapter); a link to a dir is not walked.
            expected.append(Entry("link to top.csv", len(data), float(T_EXACT + i)))
    (root / "empty dir").mkdir()
    (root / "link to top.csv").symlink_to("top.csv")
    (root / "link to nested").symlink_to("nested")
    (root / "dangling link").symlink_to("nowhere")
    return sorted(expected, key=lambda e: e.path)


# --- listing --------------------------------------------------------------------------------------


async def test_listing_walks_nested_dirs_with_odd_names(sftp_server: SftpServer) -> None:
    expected = build_tree(sftp_server.root)
    async with make_adapter(sftp_server) as src:
        listing = await src.list()
        assert by_path(listing.entries) == expected
        assert by_path((await src.list()).entries) == expected
        assert listing.warnings == [] and listing.unlisted_dirs == []
        for entry in expected:
            assert await src.stat(entry.path) == entry
        assert await src.stat("missing.csv") is None
        assert await src.stat("nested") is None
        assert await src.stat("dangling link") is None


async def test_excluded_directories_are_not_descended(sftp_server: SftpServer) -> None:
    build_tree(sftp_server.root)
    async with make_adapter(sftp_server, "exclude: ['nested/deeper']") as src:
        paths = {e.path for e in (await src.list()).entries}
    assert "nested/level1.txt" in paths
    assert not any(p.startswith("nested/deeper/") for p in paths)
    async with make_adapter(sftp_server, "recursive: false") as src:
        paths = {e.path for e in (await src.list()).entries}
    assert paths == {p for p in TREE if "/" not in p} | {"link to top.csv"}


async def test_pruned_directories_are_never_listed() -> None:
    listed: list[bytes] = []
    async with servers.asyncssh_server(scandir_hook=lambda sftp, path: listed.append(path)) as server:
        build_tree(server.root)
        async with make_adapter(server, "exclude: ['nested/deeper']") as src:
            await src.list()
    assert listed and not any(b"deeper" in p for p in listed)


@pytest.mark.real_server
async def test_unreadable_subdirectory_is_reported_not_dropped() -> None:
    async with servers.openssh_server() as server:
        build_tree(server.root)
        (server.root / "nested").chmod(0o000)  # sshd serves as the unprivileged test user
        try:
            async with make_adapter(server) as src:
                listing = await src.list()
        finally:
            (server.root / "nested").chmod(0o755)
    assert listing.unlisted_dirs == ["nested"]
    assert {e.path for e in listing.entries} == {p for p in TREE if not p.startswith("nested/")} | {"link to top.csv"}


async def test_connection_dropped_mid_listing_raises_then_recovers() -> None:
    armed = True

    def drop(sftp: asyncssh.SFTPServer, path: bytes) -> None:
        if armed and path.endswith(b"d05"):
            sftp.connection.abort()

    async with servers.asyncssh_server(scandir_hook=drop) as server:
        for i in range(10):
            (server.root / f"d{i:02}").mkdir()
            (server.root / f"d{i:02}" / "f.txt").write_text(str(i))
        async with make_adapter(server, timeout_s=5.0) as src:
            with pytest.raises(TransientSourceError):
                await src.list()
            armed = False
            listing = await src.list()
            assert src.stats["connect"] == 2
    assert len(listing.entries) == 10 and listing.unlisted_dirs == []


# --- authentication and host keys ------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["password", "key"])
async def test_password_and_key_auth(sftp_server: SftpServer, auth: str) -> None:
    (sftp_server.root / "a.txt").write_bytes(b"abc")
    src = make_adapter(sftp_server, use_password=auth == "password", use_key=auth == "key")
    async with src:
        assert [e.path for e in (await src.list()).entries] == ["a.txt"]


async def test_encrypted_key_uses_the_password_as_passphrase() -> None:
    async with servers.asyncssh_server() as server:
        passphrase = "pp-" + secrets.token_urlsafe(8)
        key = asyncssh.import_private_key(server.private_key)
        encrypted = key.export_private_key("pkcs8-pem", passphrase).decode()  # openssh format needs bcrypt
        src = make_adapter(server, password=passphrase, use_key=True, private_key=encrypted)
        async with src:
            assert (await src.list()).entries == []


async def test_wrong_password_is_a_permanent_auth_error(sftp_server: SftpServer) -> None:
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    async with make_adapter(sftp_server, password=wrong) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "auth"
    assert sftp_server.username in str(info.value)
    assert_no_secret(info.value, wrong)


async def test_unusable_private_key_is_an_auth_error_without_the_key(sftp_server: SftpServer) -> None:
    garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key-" + secrets.token_hex(8) + "\n"
    async with make_adapter(sftp_server, use_password=False, use_key=True, private_key=garbage) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "auth"
    assert_no_secret(info.value, garbage.strip())


async def test_wrong_host_key_is_refused(sftp_server: SftpServer, tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sftp_server.host}]:{sftp_server.port} {other}\n")
    async with make_adapter(sftp_server, known_hosts=known_hosts) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "hostkey"
    assert sftp_server.fingerprint in str(info.value)
    assert sftp_server.host in str(info.value)
    assert_no_secret(info.value, sftp_server.password)


async def test_pinned_fingerprint(sftp_server: SftpServer) -> None:
    (sftp_server.root / "a.txt").write_bytes(b"abc")
    src = make_adapter(sftp_server, f"host_key: '{sftp_server.fingerprint}'", known_hosts=None)
    async with src:
        assert [e.path for e in (await src.list()).entries] == ["a.txt"]
    wrong = "SHA256:" + "A" * 43
    async with make_adapter(sftp_server, f"host_key: '{wrong}'", known_hosts=None) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "hostkey"
    assert sftp_server.fingerprint in str(info.value) and wrong in str(info.value)


async def test_no_way_to_verify_the_host_key_is_refused(sftp_server: SftpServer) -> None:
    async with make_adapter(sftp_server, known_hosts=None) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "hostkey"
    message = str(info.value)
    assert "known_hosts" in message and "host_key" in message and "insecure_skip_host_key_check" in message
    assert sftp_server.fingerprint in message
    async with make_adapter(sftp_server, "insecure_skip_host_key_check: true", known_hosts=None) as src:
        assert (await src.list()).entries == []


# --- content ---------------------------------------------------------------------------------------


async def test_digest_matches_hashlib(sftp_server: SftpServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (sftp_server.root / "big file [1].bin").write_bytes(data)
    async with make_adapter(sftp_server) as src:
        for algorithm in ("sha256", "md5"):
            digest = await src.digest("big file [1].bin", algorithm, None, len(data))
            assert digest.value == hashlib.new(algorithm, data).hexdigest()
            assert (digest.method, digest.size) == ("download", len(data))
        assert await src.server_digest("big file [1].bin", "sha256") is None


async def test_file_deleted_before_download_vanishes(sftp_server: SftpServer) -> None:
    (sftp_server.root / "gone.csv").write_bytes(b"x" * 100)
    async with make_adapter(sftp_server) as src:
        (entry,) = (await src.list()).entries
        (sftp_server.root / "gone.csv").unlink()
        with pytest.raises(FileVanished):
            await src.digest(entry.path, "sha256", None, entry.size)
        with pytest.raises(FileVanished):
            await src.read_small(entry.path)
        assert (await src.list()).entries == []


async def test_file_truncated_and_deleted_mid_download_vanishes(sftp_server: SftpServer) -> None:
    path = sftp_server.root / "growing.bin"
    size = 24 * 1024 * 1024
    path.write_bytes(os.urandom(size))

    def rewrite() -> None:
        os.truncate(path, 0)
        path.unlink()

    async with make_adapter(sftp_server) as src:
        with pytest.raises(FileVanished):
            await src.digest("growing.bin", "sha256", Recorder(on_first=rewrite), size)
        assert (await src.list()).entries == []


async def test_connection_lost_mid_download_vanishes() -> None:
    async with servers.asyncssh_server() as server:
        (server.root / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
        conns: list[Any] = []
        async with make_adapter(server, timeout_s=3.0) as src:
            stream = src.read("big.bin")
            async with contextlib.aclosing(stream):
                await anext(stream)
                assert src._conn is not None
                conns.append(src._conn)
                # Cut the TCP connection under the transfer.
                transport = src._conn._transport
                assert transport is not None
                transport.abort()
                with pytest.raises(FileVanished):
                    async for _ in stream:
                        pass
            assert (await src.list()).entries[0].path == "big.bin"


async def test_downloads_with_reads_ahead_are_whole_and_in_order(sftp_server: SftpServer) -> None:
    """Pieces are requested ahead; sizes at and around piece boundaries come out whole, in order,
    and the reads past the end leave nothing behind (the next download on the connection works)."""
    piece = CHUNK_SIZE
    sizes = [0, 1, piece - 1, piece, piece + 1, piece * sftp.READS_IN_FLIGHT, piece * (sftp.READS_IN_FLIGHT + 1) + 5]
    blobs = {f"s{size}.bin": os.urandom(size) for size in sizes}
    for name, data in blobs.items():
        (sftp_server.root / name).write_bytes(data)
    async with make_adapter(sftp_server) as src:
        for name, data in blobs.items():
            digest = await src.digest(name, "sha256", None, len(data))
            assert (digest.value, digest.size) == (hashlib.sha256(data).hexdigest(), len(data)), name
        assert src.stats["connect"] == 1


async def test_abandoned_download_leaves_the_adapter_usable(sftp_server: SftpServer) -> None:
    data = os.urandom(8 * 1024 * 1024)
    (sftp_server.root / "big.bin").write_bytes(data)
    async with make_adapter(sftp_server) as src:
        stream = src.read("big.bin")
        assert await anext(stream)
        await stream.aclose()
        assert {e.path for e in (await src.list()).entries} == {"big.bin"}
        digest = await src.digest("big.bin", "sha256", None, len(data))
        assert digest.value == hashlib.sha256(data).hexdigest()


async def test_concurrent_reads_share_one_connection(sftp_server: SftpServer) -> None:
    blobs = {f"f{i}.bin": os.urandom(256 * 1024 + i) for i in range(6)}
    for name, data in blobs.items():
        (sftp_server.root / name).write_bytes(data)
    async with make_adapter(sftp_server, "max_connections: 3") as src:
        digests = await asyncio.gather(*(src.digest(name, "sha256", None, len(d)) for name, d in blobs.items()))
        assert [d.value for d in digests] == [hashlib.sha256(d).hexdigest() for d in blobs.values()]
        assert src.stats["connect"] == 1


# --- failures ---------------------------------------------------------------------------------------


async def test_missing_root_is_a_permanent_root_error(sftp_server: SftpServer) -> None:
    async with make_adapter(sftp_server, url=sftp_server.url("does/not exist")) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "root"
