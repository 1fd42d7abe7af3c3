"""The foundation scenarios, unchanged, for every adapter: local, FTP, FTPS and SFTP (in-process and
Debian's vsftpd, proftpd and OpenSSH). Through a real gRPC client; files land in the served directory."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.support.files import put
from tests.support.harness import Proxy, all_delivered, open_stream, ready, run_server, stream_to
from tests.support.sources import SourceUnderTest

TIMING = {"stable_for": "500ms", "poll_interval": "500ms"}


async def test_new_identical_touch_and_reupload(tmp_path: Path, src: SourceUnderTest) -> None:
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, src.config(**TIMING)) as stream,
    ):
        put(src.root, "a.csv", b"v1\n", mtime=time.time() - 300)
        first = await stream.until(ready("a.csv"))
        assert (first["data"]["reason"], first["data"]["generation"]) == ("new", 1)
        assert first["data"]["url"].endswith("/a.csv") and first["data"]["url"].startswith(first["source"])
        put(src.root, "a.csv", b"v1\n", mtime=time.time() - 120)  # identical bytes, new mtime (a touch)
        put(src.root, "sentinel", b"s")
        await stream.until(ready("sentinel"))
        put(src.root, "a.csv", b"v2 corrected\n", mtime=time.time() - 60)
        second = await stream.until(lambda e: e["data"].get("path") == "a.csv")
        assert (second["data"]["reason"], second["data"]["generation"]) == ("reupload", 2)
        assert second["data"]["previous"]["size"] == 3
        assert [e["data"]["path"] for e in stream.received].count("a.csv") == 2


async def test_restart_reports_exactly_the_files_added_while_down(tmp_path: Path, src: SourceUnderTest) -> None:
    config = src.config(**TIMING)
    put(src.root, "before.csv", b"b")
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, config) as s:
        await s.until(ready("before.csv"))
        await all_delivered(srv)
    for i in range(3):
        put(src.root, f"down/while_down_{i}.csv", b"d%d" % i)
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, config) as s:
        got = {(await s.next())["data"]["path"] for _ in range(3)}
        assert got == {f"down/while_down_{i}.csv" for i in range(3)}
        put(src.root, "sentinel", b"s")
        await s.until(ready("sentinel"))
        assert sorted(e["data"]["path"] for e in s.received) == sorted([*got, "sentinel"])


async def test_awkward_names(tmp_path: Path, src: SourceUnderTest) -> None:
    names = ["with space.csv", "ünïcødé_データ.csv", "brackets [1] (2) {3}.csv", "sub dir/a b.csv"]
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, src.config(**TIMING)) as stream,
    ):
        for n in names:
            put(src.root, n, n.encode())
        got = {(await stream.next())["data"]["path"] for _ in names}
        assert got == set(names)
        for e in stream.received:
            assert " " not in e["data"]["url"]  # URLs are percent-encoded; `path` keeps the real name


async def test_disconnect_mid_stream_loses_nothing(tmp_path: Path, src: SourceUnderTest) -> None:
    names = {f"f{i:02d}" for i in range(20)}
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv:
        first = await open_stream(srv.port, src.config(**TIMING))
        for n in names:
            put(src.root, n, n.encode())
        await first.next()
        await first.close()
        got = {e["data"]["path"] for e in first.received}
        async with stream_to(srv.port, src.config(**TIMING)) as second:
            while got != names:
                got.add((await second.next())["data"]["path"])


async def test_checksum_method(tmp_path: Path, src: SourceUnderTest) -> None:
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, src.config(**TIMING)) as stream,
    ):
        put(src.root, "x.bin", os.urandom(300_000))
        ev = await stream.until(ready("x.bin"))
        import hashlib

        assert ev["data"]["checksum"]["value"] == hashlib.sha256((src.root / "x.bin").read_bytes()).hexdigest()
        expected = {"local": "local", "ftp-proftpd": "server"}.get(src.kind, "download")
        assert ev["data"]["checksum"]["method"] == expected


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_secret_never_leaks(tmp_path: Path, remote: SourceUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    src = remote
    assert src.secret is not None
    caplog.set_level("DEBUG", logger="ftpsource")
    async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv:
        async with stream_to(srv.port, src.config(**TIMING)) as stream:
            put(src.root, "a.csv", b"1")
            await stream.until(ready("a.csv"))
            payloads = [str(e) for e in stream.received]
        # and with a wrong password, whose error text must not echo either password
        bad = tmp_path / "creds" / "bad"
        bad.mkdir()
        for f in (tmp_path / "creds").glob("*/*"):
            if f.parent.name != "bad":
                (bad / f.name).write_text(f.read_text())
        (bad / "password").write_text("wrong-" + src.secret)
        failing = await open_stream(srv.port, src.config(**TIMING, credentials="bad"), name="bad")
        status = await failing.wait_end(60)
        assert status == grpc.StatusCode.FAILED_PRECONDITION, (status, failing.details)
        assert "auth" in (failing.details or "").lower() or "login" in (failing.details or "").lower()
        await failing.close()
        metrics = srv.app.metrics.render().decode()
        # The status page lists recent errors too (read off the loop: the page is collected on it).
        status_url = f"http://127.0.0.1:{srv.metrics_port}/status.json"
        status_page = await asyncio.to_thread(_fetch, status_url)
    everything = "\n".join([*payloads, caplog.text, metrics, status_page, failing.details or ""])
    assert src.secret not in everything


async def test_outage_then_catch_up(tmp_path: Path, remote: SourceUnderTest) -> None:
    """The server goes away mid-stream; files that land meanwhile are reported once it is back."""
    src = remote
    proxy = await Proxy.start(src.server.host, src.server.port)
    url = src.url.replace(f":{src.server.port}", f":{proxy.port}", 1)
    config = {**src.config(**TIMING), "url": url}
    if src.kind.startswith("sftp"):
        # known_hosts names the server's own port; through the proxy, pin the key instead.
        assert src.credentials_dir is not None
        pinned = src.credentials_dir / "pinned"
        pinned.mkdir()
        for f in ("username", "password", "hosts"):
            (pinned / f).write_text((src.credentials_dir / "sftp" / f).read_text())
        config.update(credentials="pinned", host_key=src.server.fingerprint)
    try:
        async with run_server(tmp_path, credentials_dir=src.credentials_dir) as srv, stream_to(srv.port, config) as s:
            put(src.root, "before", b"b")
            await s.until(ready("before"))
            await proxy.cut()
            put(src.root, "during_1", b"1")
            put(src.root, "during_2", b"2")
            errors = srv.app.metrics.source_errors

            def failed() -> float:
                return sum(m.value for metric in errors.collect() for m in metric.samples if m.name.endswith("_total"))

            from tests.support.harness import eventually

            await eventually(lambda: failed() > 0, what="a failed poll")
            proxy.restore()
            got = {(await s.next(30))["data"]["path"] for _ in range(2)}
            assert got == {"during_1", "during_2"}
            assert s.status is None  # the stream stayed open through the outage
    finally:
        await proxy.close()
