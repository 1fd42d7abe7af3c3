"""The FTP adapter on big and hostile directory listings: parsed as they arrive, within limits."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ftpsource.adapters import adapter_for
from ftpsource.adapters.ftp import _MDTM_WINDOW, MAX_LINE_BYTES, FtpAdapter
from ftpsource.config import parse_source_config
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials, Secret
from ftpsource.errors import TransientSourceError
from tests.support import servers
from tests.support.servers import FtpServer

# vsftpd serves from its own processes; pyftpdlib shares this process's GIL, so it gets fewer.
SIZES = {"vsftpd": 20_000, "pyftpdlib": 5_000, "pyftpdlib-list": 5_000}
T0 = 1764165912  # seconds that LIST cannot show

Factory = Callable[[], contextlib.AbstractAsyncContextManager[FtpServer]]
FACTORIES: dict[str, Factory] = {
    "pyftpdlib": lambda: servers.pyftpdlib_server(),
    "pyftpdlib-list": lambda: servers.pyftpdlib_server(without=frozenset({"MLSD", "MLST"})),
    "vsftpd": lambda: servers.vsftpd_server(),
}


def adapter(url: str, password: str, timeout_s: float = 10.0) -> FtpAdapter:
    config = parse_source_config(f"url: '{url}'\n")
    src = adapter_for(config, Credentials(name="t", password=Secret(password)), PathFilter([], [], True))
    assert isinstance(src, FtpAdapter)
    src.timeout_s = timeout_s
    return src


async def count_turns(counter: list[int]) -> None:
    """Counts the turns the loop gives other tasks."""
    while True:
        await asyncio.sleep(0)
        counter[0] += 1


@pytest.mark.parametrize(
    "factory", ["pyftpdlib", "pyftpdlib-list", pytest.param("vsftpd", marks=pytest.mark.real_server)]
)
async def test_a_big_directory_is_parsed_as_it_arrives_and_the_loop_runs_between_chunks(factory: str) -> None:
    big = SIZES[factory]
    async with FACTORIES[factory]() as server:
        for i in range(big):
            path = server.root / f"file-{i:05d}.csv"
            path.write_bytes(b"x" * (i % 7))
            if i % 1000 == 0:
                os.utime(path, (T0 + i, T0 + i))
        async with adapter(server.url(), server.password) as src:
            turns = [0]
            ticker = asyncio.create_task(count_turns(turns))
            try:
                listing = await src.list()
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            entries = {e.path: e for e in listing.entries}
            assert len(entries) == big and not listing.warnings and not listing.unlisted_dirs
            for i in range(0, big, 1000):
                assert entries[f"file-{i:05d}.csv"].mtime == T0 + i  # exact, whether from MLSD or MDTM
            chunks = src.stats["list_chunks"]
            assert chunks > 3, "the listing was not parsed as it arrived"
            assert turns[0] >= chunks, "other tasks did not run between the listing's chunks"
            if "mlsd" in server.features and factory != "pyftpdlib-list":
                assert src.stats["mdtm"] == 0, "MLSD gives exact times: no MDTM is needed"
            else:
                # Every file needs its exact time once, sent _MDTM_WINDOW at a time, not one by one.
                assert src.stats["mdtm"] == big
                assert src.stats["mdtm_round_trips"] <= math.ceil(big / _MDTM_WINDOW) + 2
            again = await src.list()
            assert again.entries == listing.entries
            # An unchanged file is the very same object: a steady listing makes no new entries.
            assert all(a is b for a, b in zip(again.entries, listing.entries, strict=True))


# --- hostile servers ---------------------------------------------------------------------------------


def lines(directory: str, n: int) -> bytes:
    return b"".join(b"-rw-r--r--    1 0 0 %d Jan 01  2025 f%06d.csv\r\n" % (i, i) for i in range(n))


async def endless_subdir(directory: str) -> AsyncIterator[bytes]:
    """The root holds one file and ``sub``, whose listing never ends."""
    if directory == "/":
        yield b"drwxr-xr-x    2 0 0 4096 Jan 01  2025 sub\r\n" + lines(directory, 1)
        return
    i = 0
    while True:
        yield b"".join(b"-rw-r--r--    1 0 0 1 Jan 01  2025 endless-%09d\r\n" % (i + k) for k in range(500))
        i += 500


async def endless_line(directory: str) -> AsyncIterator[bytes]:
    while True:
        yield b"x" * 65536


async def garbage(directory: str) -> AsyncIterator[bytes]:
    yield b"".join(b"garbage line %d\r\n" % i for i in range(1000)) + lines(directory, 1)


async def traced(src: FtpAdapter) -> tuple[Any, int]:
    """(the listing or the error it raised, tracemalloc's peak above the start in bytes)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        try:
            result: Any = await src.list()
        except TransientSourceError as exc:
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


async def test_an_endless_subdirectory_listing_is_refused_by_name_and_the_rest_listed() -> None:
    async with servers.hostile_ftp_server(endless_subdir) as server, adapter(server.url(), "pw") as src:
        src.max_dir_entries = 5_000
        listing, peak = await traced(src)
        assert [e.path for e in listing.entries] == ["f000000.csv"]
        assert listing.unlisted_dirs == ["sub"]
        assert listing.warnings == ["cannot list directory 'sub': more than 5,000 entries"]
        assert peak < 8 * 1024 * 1024, f"an endless listing used {peak:,} bytes"
        # The server confirmed the abort (426): the session stayed in step and is reused.
        assert "aborted" in server.transfers
        await src.list()
        assert server.logins == 1


async def test_a_line_that_never_ends_fails_the_root_listing_with_a_clear_error() -> None:
    async with servers.hostile_ftp_server(endless_line) as server, adapter(server.url(), "pw") as src:
        error, peak = await traced(src)
        assert isinstance(error, TransientSourceError)
        assert f"cannot list the root directory: a line is longer than {MAX_LINE_BYTES:,} bytes" in str(error)
        assert error.kind == "list"
        assert peak < 4 * 1024 * 1024, f"a never-ending line used {peak:,} bytes"


async def test_garbage_lines_are_skipped_and_described_a_bounded_number_of_times() -> None:
    async with servers.hostile_ftp_server(garbage) as server, adapter(server.url(), "pw") as src:
        listing = await src.list()
    assert [e.path for e in listing.entries] == ["f000000.csv"]
    assert len(listing.warnings) == 21
    assert all("could not be parsed" in w for w in listing.warnings[:20])
    assert "skipped 980 more lines" in listing.warnings[-1]


async def test_a_server_that_drops_commands_sent_back_to_back_gets_them_one_at_a_time() -> None:
    async def three(directory: str) -> AsyncIterator[bytes]:
        yield lines(directory, 3)

    async with (
        servers.hostile_ftp_server(three, flush_input=True) as server,
        adapter(server.url(), "pw", timeout_s=1.0) as src,
    ):
        listing = await src.list()
        assert sorted(e.mtime for e in listing.entries) == [1735734896.0] * 3  # MDTM's time, not LIST's
        # The batch sent back to back went unanswered after its first MDTM; then one at a time, on a
        # new connection.
        assert [c for c in server.commands if c.startswith("MDTM")] == ["MDTM /f000000.csv"] + [
            f"MDTM /f{i:06d}.csv" for i in range(3)
        ]
        assert server.logins == 2
        await src.list()  # the connection it ended on is still in step
        assert server.logins == 2


async def test_a_listing_past_its_byte_limit_is_refused_by_name() -> None:
    async with servers.hostile_ftp_server(endless_subdir) as server, adapter(server.url(), "pw") as src:
        src.max_dir_bytes = 200_000
        listing = await src.list()
    assert listing.unlisted_dirs == ["sub"]
    assert listing.warnings == ["cannot list directory 'sub': the listing is longer than 200,000 bytes"]
