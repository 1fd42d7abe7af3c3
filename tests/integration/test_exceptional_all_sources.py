"""Exceptional situations for every adapter: markers, sidecars, truncated archives, old mtimes, deadlines.
Through a real gRPC client; files land in the directory the (real) server serves."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ftpsource.clock import ShiftedClock
from tests.support.files import put
from tests.support.harness import ready, run_server, stream_to
from tests.support.sources import SourceUnderTest

TIMING = {"stable_for": "400ms", "poll_interval": "400ms"}
# One server of each kind is enough for these; the scenarios file covers all of them.
pytestmark = pytest.mark.parametrize(
    "src", ["local", "ftp-pyftpdlib", "sftp-asyncssh", "ftp-vsftpd", "sftp-openssh"], indirect=True
)


def no_event_for(stream: Any, path: str) -> bool:
    return all(e["data"].get("path") != path for e in stream.received)


async def test_marker_after_its_file(tmp_path: Path, src: SourceUnderTest) -> None:
    cfg = src.config(**TIMING, marker="{path}.done")
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, cfg) as s:
        put(src.root, "data.csv", b"a,b\n")
        put(src.root, "other.csv", b"o")
        put(src.root, "other.csv.done", b"")
        await s.until(ready("other.csv"))
        assert no_event_for(s, "data.csv")
        put(src.root, "data.csv.done", b"")
        await s.until(ready("data.csv"))
        assert all(not e["data"]["path"].endswith(".done") for e in s.received)


async def test_sidecar_mismatch_then_corrected_upload(tmp_path: Path, src: SourceUnderTest) -> None:
    good = b"id,amount\n1,10\n2,20\n"
    cfg = src.config(**TIMING, sidecar="{path}.sha256")
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, cfg) as s:
        put(src.root, "t.csv", good[:10])
        put(src.root, "t.csv.sha256", f"{hashlib.sha256(good).hexdigest()}  t.csv\n".encode())
        put(src.root, "z.csv", b"z")
        put(src.root, "z.csv.sha256", f"{hashlib.sha256(b'z').hexdigest()}  z.csv\n".encode())
        await s.until(ready("z.csv"))
        assert no_event_for(s, "t.csv")
        put(src.root, "t.csv", good, mtime=time.time() + 2)
        ev = await s.until(ready("t.csv"))
        assert ev["data"]["checksum"]["value"] == hashlib.sha256(good).hexdigest()


async def test_truncated_gzip_then_the_full_one(tmp_path: Path, src: SourceUnderTest) -> None:
    full = gzip.compress(os.urandom(40_000))
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, src.config(**TIMING)) as s,
    ):
        put(src.root, "data.gz", full[: len(full) // 2])
        put(src.root, "later.txt", b"l", mtime=time.time() + 1)
        await s.until(ready("later.txt"))
        put(src.root, "data.gz", full, mtime=time.time() + 3)
        ev = await s.until(ready("data.gz"))
        assert (ev["data"]["reason"], ev["data"]["generation"], ev["data"]["size"]) == ("new", 1, len(full))
        assert [e["data"]["path"] for e in s.received].count("data.gz") == 1


async def test_old_mtime_file_added_after_newer_ones(tmp_path: Path, src: SourceUnderTest) -> None:
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, src.config(**TIMING)) as s,
    ):
        put(src.root, "new.csv", b"n")
        await s.until(ready("new.csv"))
        put(src.root, "old.csv", b"o", mtime=time.time() - 86400 * 400)
        ev = await s.until(ready("old.csv"))
        assert ev["data"]["mtime"] < datetime.now(UTC).replace(year=datetime.now(UTC).year - 1).isoformat()


async def test_missing_then_late(tmp_path: Path, src: SourceUnderTest) -> None:
    clock = ShiftedClock()
    now = clock()
    deadline = datetime.fromtimestamp(now - now % 600 + 600, UTC)
    name = deadline.strftime("exp_%H%M.csv")
    cfg = src.config(**TIMING, expect=[{"path": "exp_%H%M.csv", "schedule": "*/10 * * * *"}])
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir, clock=clock) as srv,
        stream_to(srv.port, cfg) as s,
    ):
        put(src.root, "warm", b"w")
        await s.until(ready("warm"))
        clock.advance(deadline.timestamp() - clock() + 5)
        srv.app.wake_all()
        missing = await s.until(lambda e: e["type"] == "ftpsource.file.missing")
        assert missing["data"]["expected_path"] == name
        put(src.root, name, b"late data")
        late = await s.until(ready(name))
        assert late["data"]["late"] is True and late["data"]["deadline"] == missing["data"]["deadline"]
