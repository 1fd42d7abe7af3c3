"""The FTP/FTPS adapter against real servers: pyftpdlib in-process, Debian's vsftpd and proftpd."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ftpsource.adapters import adapter_for
from ftpsource.adapters.ftp import FtpAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.listing import ListEntry
from ftpsource.core.model import Entry
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials, Secret
from ftpsource.errors import FileVanished, PermanentSourceError, TransientSourceError
from tests.support import servers
from tests.support.adapters import Recorder, assert_no_secret, by_path
from tests.support.servers import FtpServer

Factory = Callable[[], contextlib.AbstractAsyncContextManager[FtpServer]]

NO_MLSD = frozenset({"MLSD", "MLST"})
FACTORIES: dict[str, Factory] = {
    "pyftpdlib": lambda: servers.pyftpdlib_server(),
    "pyftpdlib-list": lambda: servers.pyftpdlib_server(without=NO_MLSD),
    "vsftpd": lambda: servers.vsftpd_server(),
    "proftpd": lambda: servers.proftpd_server(),
    "pyftpdlib-tls": lambda: servers.pyftpdlib_server(tls=True),
    "vsftpd-tls": lambda: servers.vsftpd_server(tls=True),
}
PLAIN = ["pyftpdlib", "pyftpdlib-list", "vsftpd", "proftpd"]
TLS = ["pyftpdlib-tls", "vsftpd-tls"]
REAL = {"vsftpd", "proftpd", "vsftpd-tls"}


def params(names: list[str]) -> list[Any]:
    return [pytest.param(n, id=n, marks=[pytest.mark.real_server] if n in REAL else []) for n in names]


async def _serve(request: pytest.FixtureRequest) -> AsyncIterator[FtpServer]:
    async with FACTORIES[request.param]() as server:
        yield server


@pytest.fixture(params=params(PLAIN))
async def ftp_server(request: pytest.FixtureRequest) -> AsyncIterator[FtpServer]:
    async for server in _serve(request):
        yield server


@pytest.fixture(params=params(PLAIN + TLS))
async def any_ftp_server(request: pytest.FixtureRequest) -> AsyncIterator[FtpServer]:
    async for server in _serve(request):
        yield server


@pytest.fixture(params=params(TLS))
async def ftps_server(request: pytest.FixtureRequest) -> AsyncIterator[FtpServer]:
    async for server in _serve(request):
        yield server


def make_adapter(
    server: FtpServer,
    extra: str = "",
    *,
    url: str | None = None,
    password: str | None = None,
    ca: bool = True,
    timeout_s: float = 10.0,
) -> FtpAdapter:
    config = parse_source_config(f"url: '{url or server.url()}'\n{extra}")
    credentials = Credentials(
        name="test",
        password=Secret(server.password if password is None else password),
        ca_file=server.ca_file if ca else None,
    )
    src = adapter_for(config, credentials, PathFilter(config.include, config.exclude, config.recursive))
    assert isinstance(src, FtpAdapter)
    src.timeout_s = timeout_s
    return src


T_EXACT = 1764165912  # 2025-11-26 14:05:12 UTC: seconds that LIST cannot show
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


def build_tree(root: Path, tree: dict[str, bytes] = TREE) -> list[Entry]:
    for i, (rel, data) in enumerate(sorted(tree.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (T_EXACT + i, T_EXACT + i))
    (root / "empty dir").mkdir()
    (root / "link to top.csv").symlink_to("top.csv")
    return sorted(
        (Entry(rel, len(data), float(T_EXACT + i)) for i, (rel, data) in enumerate(sorted(tree.items()))),
        key=lambda e: e.path,
    )


# --- listing --------------------------------------------------------------------------------------


async def test_listing_walks_nested_dirs_with_odd_names(any_ftp_server: FtpServer) -> None:
    server = any_ftp_server
    expected = build_tree(server.root)
    async with make_adapter(server) as src:
        listing = await src.list()
        again = await src.list()
        # LIST shows the symlink as a link (skipped); pyftpdlib's MLSD resolves it to its target.
        links = [e for e in listing.entries if e.path == "link to top.csv"]
        assert all(e.size == len(TREE["top.csv"]) for e in links)
        assert by_path([e for e in listing.entries if not links or e not in links]) == expected
        assert by_path(again.entries) == by_path(listing.entries)
        assert listing.warnings == [] and listing.unlisted_dirs == []
        for entry in expected:
            assert await src.stat(entry.path) == entry
        assert await src.stat("missing.csv") is None
        assert await src.stat("nested") is None


async def test_excluded_directories_are_not_descended(ftp_server: FtpServer) -> None:
    build_tree(ftp_server.root)
    async with make_adapter(ftp_server, "exclude: ['nested/deeper', '**/.*']") as src:
        paths = {e.path for e in (await src.list()).entries}
    assert "nested/level1.txt" in paths
    assert not any(p.startswith("nested/deeper/") for p in paths)
    async with make_adapter(ftp_server, "recursive: false") as src:
        paths = {e.path for e in (await src.list()).entries} - {"link to top.csv"}
    assert paths == {p for p in TREE if "/" not in p}


async def test_pruned_directories_are_never_listed() -> None:
    listed: list[str] = []
    async with servers.pyftpdlib_server(listdir_hook=lambda fs, path: listed.append(path)) as server:
        build_tree(server.root)
        async with make_adapter(server, "exclude: ['nested/deeper']") as src:
            await src.list()
    assert listed and not any("deeper" in p for p in listed)


@pytest.mark.real_server
@pytest.mark.parametrize("factory", ["vsftpd", "proftpd"])
async def test_unreadable_subdirectory_is_reported_not_dropped(factory: str) -> None:
    async with FACTORIES[factory]() as server:
        build_tree(server.root)
        (server.root / "nested").chmod(0o000)  # the servers run sessions as an unprivileged user
        try:
            async with make_adapter(server) as src:
                listing = await src.list()
        finally:
            (server.root / "nested").chmod(0o755)
    assert listing.unlisted_dirs == ["nested"]
    assert "nested" in listing.warnings[0]
    assert {e.path for e in listing.entries} == {p for p in TREE if not p.startswith("nested/")}


@pytest.mark.parametrize(
    "factory",
    [pytest.param("vsftpd", marks=pytest.mark.real_server), "pyftpdlib-list"],
)
async def test_list_times_are_exact_and_stable_without_mlsd(factory: str) -> None:
    async with FACTORIES[factory]() as server:
        recent = int(time.time()) - 3600 + 7
        (server.root / "recent.csv").write_bytes(b"r" * 10)
        os.utime(server.root / "recent.csv", (recent, recent))
        (server.root / "old.csv").write_bytes(b"o" * 20)
        os.utime(server.root / "old.csv", (1577923207, 1577923207))  # year form in LIST
        async with make_adapter(server) as src:
            first = by_path((await src.list()).entries)
            assert first == [Entry("old.csv", 20, 1577923207.0), Entry("recent.csv", 10, float(recent))]
            asked = src.stats["mdtm"]
            assert asked == 2
            for _ in range(2):
                assert by_path((await src.list()).entries) == first
            assert src.stats["mdtm"] == asked, "an unchanged file must not cost an MDTM per poll"
            (server.root / "recent.csv").write_bytes(b"r" * 11)
            os.utime(server.root / "recent.csv", (recent + 1, recent + 1))
            third = by_path((await src.list()).entries)
            assert third[1] == Entry("recent.csv", 11, float(recent + 1))
            assert src.stats["mdtm"] == asked + 1


async def test_list_times_without_mdtm_are_stable() -> None:
    async with servers.pyftpdlib_server(without=NO_MLSD | {"MDTM"}) as server:
        recent = int(time.time()) - 3600 + 7
        (server.root / "a.csv").write_bytes(b"abc")
        os.utime(server.root / "a.csv", (recent, recent))
        async with make_adapter(server) as src:
            first = (await src.list()).entries
            second = (await src.list()).entries
            assert first == second == [Entry("a.csv", 3, float(recent - recent % 60))]
            assert await src.stat("a.csv") == first[0]
            assert src.stats["mdtm"] == 0


def test_coarser_list_time_of_the_same_file_keeps_its_mtime() -> None:
    config = parse_source_config("url: ftp://example.invalid/data")
    src = FtpAdapter(config, Credentials(), PathFilter([], [], True))
    minute = ListEntry("f", "file", 5, 1764165900.0, 60)  # Nov 26 14:05
    assert src._settle("f", minute, None) == Entry("f", 5, 1764165900.0)
    day = ListEntry("f", "file", 5, 1764115200.0, 86400)  # Nov 26  2025: six months later
    assert src._settle("f", day, None) == Entry("f", 5, 1764165900.0)
    assert src._settle("f", day, None) == Entry("f", 5, 1764165900.0)
    grown = ListEntry("f", "file", 6, 1764115200.0, 86400)
    assert src._settle("f", grown, None) == Entry("f", 6, 1764115200.0)
    exact = ListEntry("g", "file", 1, 1764165900.0, 60)
    assert src._settle("g", exact, 1764165912.0) == Entry("g", 1, 1764165912.0)
    assert src._settle("g", exact, None) == Entry("g", 1, 1764165912.0)


async def test_server_dropping_mid_listing_raises_then_recovers() -> None:
    armed = True

    def drop(fs: Any, path: str) -> None:
        if armed and path.endswith("d05"):
            fs.cmd_channel.close()  # the server goes away in the middle of the walk

    async with servers.pyftpdlib_server(listdir_hook=drop) as server:
        for i in range(10):
            (server.root / f"d{i:02}").mkdir()
            (server.root / f"d{i:02}" / "f.txt").write_text(str(i))
        async with make_adapter(server, timeout_s=5.0) as src:
            with pytest.raises(TransientSourceError):
                await src.list()
            armed = False
            listing = await src.list()
    assert len(listing.entries) == 10 and listing.unlisted_dirs == []


# --- content ---------------------------------------------------------------------------------------


async def test_digest_matches_hashlib(ftp_server: FtpServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (ftp_server.root / "big file [1].bin").write_bytes(data)
    method = "server" if "hash" in ftp_server.features else "download"
    async with make_adapter(ftp_server) as src:
        for algorithm in ("sha256", "md5"):
            digest = await src.digest("big file [1].bin", algorithm, None, len(data))
            assert digest.value == hashlib.new(algorithm, data).hexdigest()
            assert (digest.method, digest.size, digest.algorithm) == (method, len(data), algorithm)
        recorder = Recorder()
        digest = await src.digest("big file [1].bin", "sha256", recorder, len(data))
        assert digest.method == "download" and recorder.size == len(data)
        assert digest.value == hashlib.sha256(data).hexdigest()


@pytest.mark.real_server
async def test_proftpd_hashes_on_the_server() -> None:
    async with servers.proftpd_server() as server:
        data = b"hash me\n" * 1000
        (server.root / "sub dir").mkdir()
        (server.root / "sub dir" / "a b.csv").write_bytes(data)
        async with make_adapter(server) as src:
            digest = await src.digest("sub dir/a b.csv", "sha256", None, len(data))
            assert digest.method == "server" and digest.value == hashlib.sha256(data).hexdigest()
            assert await src.server_digest("sub dir/a b.csv", "md5") == hashlib.md5(data).hexdigest()
            assert await src.server_digest("missing.csv", "sha256") is None
            assert src.stats["server_hash"] == 2


async def test_file_deleted_before_download_vanishes(any_ftp_server: FtpServer) -> None:
    ftp_server = any_ftp_server
    (ftp_server.root / "gone.csv").write_bytes(b"x" * 100)
    async with make_adapter(ftp_server) as src:
        (entry,) = (await src.list()).entries
        (ftp_server.root / "gone.csv").unlink()
        with pytest.raises(FileVanished):
            await src.digest(entry.path, "sha256", None, entry.size)
        assert (await src.list()).entries == []  # the connection is still usable


async def test_file_truncated_and_deleted_mid_download_vanishes(ftp_server: FtpServer) -> None:
    path = ftp_server.root / "growing.bin"
    size = 24 * 1024 * 1024
    path.write_bytes(os.urandom(size))

    def rewrite() -> None:
        os.truncate(path, 0)
        path.unlink()

    async with make_adapter(ftp_server) as src:
        with pytest.raises(FileVanished):
            await src.digest("growing.bin", "sha256", Recorder(on_first=rewrite), size)
        assert (await src.list()).entries == []


async def test_server_gone_mid_download_vanishes() -> None:
    async with servers.pyftpdlib_server() as server:
        (server.root / "big.bin").write_bytes(os.urandom(16 * 1024 * 1024))
        async with make_adapter(server, timeout_s=3.0) as src:
            stream = src.read("big.bin")
            async with contextlib.aclosing(stream):
                await anext(stream)
                assert server.stop is not None
                await server.stop()
                with pytest.raises(FileVanished):
                    async for _ in stream:
                        pass


async def test_abandoned_download_discards_the_connection(any_ftp_server: FtpServer) -> None:
    ftp_server = any_ftp_server
    data = os.urandom(8 * 1024 * 1024)
    (ftp_server.root / "big.bin").write_bytes(data)
    (ftp_server.root / "small.txt").write_bytes(b"small")
    async with make_adapter(ftp_server) as src:
        stream = src.read("big.bin")
        assert await anext(stream)
        await stream.aclose()
        assert src.stats["connect"] == 1
        listing = await src.list()
        assert {e.path for e in listing.entries} == {"big.bin", "small.txt"}
        assert src.stats["connect"] == 2, "the abandoned connection must not be reused"
        assert await src.read_small("small.txt") == b"small"
        digest = await src.digest("big.bin", "sha256", Recorder(), len(data))
        assert digest.value == hashlib.sha256(data).hexdigest()


async def test_pool_never_exceeds_max_connections() -> None:
    async with servers.pyftpdlib_server() as server:
        blobs = {f"f{i}.bin": os.urandom(256 * 1024 + i) for i in range(6)}
        for name, data in blobs.items():
            (server.root / name).write_bytes(data)
        async with make_adapter(server, "max_connections: 2") as src:
            digests = await asyncio.gather(
                *(src.digest(name, "sha256", None, len(data)) for name, data in blobs.items())
            )
            assert [d.value for d in digests] == [hashlib.sha256(d).hexdigest() for d in blobs.values()]
            assert src.stats["connect"] == 2


# --- failures ---------------------------------------------------------------------------------------


async def test_wrong_password_is_a_permanent_auth_error(ftp_server: FtpServer) -> None:
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    async with make_adapter(ftp_server, password=wrong) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "auth"
    assert ftp_server.username in str(info.value)
    assert_no_secret(info.value, wrong)


async def test_missing_root_is_a_permanent_root_error(ftp_server: FtpServer) -> None:
    async with make_adapter(ftp_server, url=ftp_server.url("does/not exist")) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "root"


# --- FTPS ------------------------------------------------------------------------------------------


async def test_ftps_with_the_ca_file(ftps_server: FtpServer) -> None:
    expected = build_tree(ftps_server.root)
    async with make_adapter(ftps_server) as src:
        entries = [e for e in (await src.list()).entries if e.path != "link to top.csv"]
        assert by_path(entries) == expected
        data = TREE["nested/deeper/level2.txt"]
        digest = await src.digest("nested/deeper/level2.txt", "sha256", None, len(data))
        assert digest.value == hashlib.sha256(data).hexdigest()


async def test_ftps_untrusted_certificate_is_refused(ftps_server: FtpServer) -> None:
    async with make_adapter(ftps_server, ca=False) as src:
        with pytest.raises(PermanentSourceError) as info:
            await src.list()
    assert info.value.kind == "tls"
    assert "ca.pem" in str(info.value)


async def test_ftps_certificate_for_another_host_is_refused() -> None:
    async with servers.pyftpdlib_server(tls=True, tls_hostnames=("ftp.example.test",)) as server:
        src = make_adapter(server)
        with pytest.raises(PermanentSourceError) as info:
            async with src:
                await src.list()
    assert info.value.kind == "tls"
    assert "mismatch" in str(info.value)


async def test_ftps_without_verification_when_configured(ftps_server: FtpServer) -> None:
    (ftps_server.root / "a.txt").write_bytes(b"abc")
    async with make_adapter(ftps_server, "tls_verify: false", ca=False) as src:
        assert [e.path for e in (await src.list()).entries] == ["a.txt"]
        assert await src.read_small("a.txt") == b"abc"


async def test_ftps_against_a_server_without_tls_is_refused() -> None:
    async with servers.pyftpdlib_server() as server:
        src = make_adapter(server, url=server.url().replace("ftp://", "ftps://"))
        with pytest.raises(PermanentSourceError) as info:
            async with src:
                await src.list()
    assert info.value.kind == "tls"


async def test_plain_ftp_against_a_tls_only_server_is_refused() -> None:
    async with servers.pyftpdlib_server(tls=True) as server:
        src = make_adapter(server, url=server.url().replace("ftps://", "ftp://"))
        with pytest.raises(PermanentSourceError) as info:
            async with src:
                await src.list()
    assert info.value.kind == "auth"


async def test_unparseable_list_lines_are_skipped_with_a_warning_and_the_rest_processed() -> None:
    """A LIST reply with a line no parser understands: that line is skipped, named in a warning."""

    def inject(fs: object, path: str) -> None:
        original = type(fs).format_list  # type: ignore[attr-defined]

        def format_list(self: object, basedir: str, listing: object, ignore_err: bool = True) -> object:
            yield b"this line is not a directory listing\r\n"
            yield from original(self, basedir, listing, ignore_err)

        fs.format_list = format_list.__get__(fs)  # type: ignore[attr-defined]

    async with servers.pyftpdlib_server(without=frozenset({"MLSD", "MLST"}), listdir_hook=inject) as server:
        (server.root / "good.csv").write_bytes(b"1")
        async with make_adapter(server) as src:
            listing = await src.list()
    assert [e.path for e in listing.entries] == ["good.csv"]
    assert any("could not be parsed" in w for w in listing.warnings)
