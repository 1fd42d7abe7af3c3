"""A slow upload by a real FTP client (lftp, rate-limited) yields exactly one event, after it completes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support import REQUIRE_REAL_SERVERS
from tests.support.harness import run_server, stream_to
from tests.support.sources import source_under_test


@pytest.mark.parametrize("kind", ["ftp-pyftpdlib", "ftp-vsftpd"])
async def test_rate_limited_lftp_upload_is_reported_once_when_complete(tmp_path: Path, kind: str) -> None:
    lftp = shutil.which("lftp")
    if lftp is None:
        if REQUIRE_REAL_SERVERS:
            pytest.fail("lftp (Debian package lftp) is required in CI")
        pytest.skip("lftp not installed")
    payload = os.urandom(160_000)
    local = tmp_path / "upload.bin"
    local.write_bytes(payload)
    async with source_under_test(kind, tmp_path) as src:
        srv_info = src.server
        script = (
            "set net:limit-rate 40000; set ftp:passive-mode true; set ssl:verify-certificate false; "
            f"open -u {srv_info.username},{srv_info.password} -p {srv_info.port} {srv_info.host}; "
            f"cd {srv_info.url_path or '/'}; put {local} -o slow.bin"
        )
        # stable_for must outlast the uploader's longest pause; lftp's rate limiter pauses over a second.
        cfg = src.config(stable_for="4s", poll_interval="300ms")
        async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, cfg) as s:
            proc = await asyncio.create_subprocess_exec(
                lftp, "-c", script, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            finished = time.time()
            assert proc.returncode == 0, err.decode()
            ev = await s.until(lambda e: e["data"].get("path") == "slow.bin", timeout=30)
            assert ev["data"]["size"] == len(payload)
            assert ev["data"]["checksum"]["value"] == hashlib.sha256(payload).hexdigest()
            emitted = time.time()
            assert emitted >= finished  # never before the upload finished
            (src.root / "sentinel").write_bytes(b"s")
            await s.until(lambda e: e["data"].get("path") == "sentinel")
            assert [e["data"]["path"] for e in s.received].count("slow.bin") == 1
