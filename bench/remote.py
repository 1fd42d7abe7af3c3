"""The FTP adapter against Debian's vsftpd on loopback (no MLSD, no HASH: LIST + MDTM, RETR).

``remote-list``: listing a 10,000-file tree (100 directories x 100 files) within 1.5x the time of
``lftp -c 'open -u USER,PASS -p PORT 127.0.0.1; find /path'`` (a subprocess, timed whole). ftpsource's
side is ``FtpAdapter.list()`` in-process, in its steady state: the second listing of an adapter, when
every file's ``(size, LIST time)`` is unchanged and its exact time comes from the memo, not MDTM. The
adapter's first listing (connect, LIST, and MDTM for every file, since ``LIST`` times are coarse) is
timed in the same rounds and reported for information. Runs alternate; best of 3.

``remote-hash``: ``FtpAdapter.digest(path, "sha256", None, size)`` on a 1 GiB file (the server has no
HASH, so it downloads: the method must be "download") at >= 0.8x the speed of
``curl ftp://USER:PASS@127.0.0.1:PORT/path -o /dev/null``. Warm page cache, alternating, best of 3.
Reported too, not judged: ``curl | openssl dgst -sha256`` (a download-and-hash made of tools) and
hashlib's SHA-256 alone over the same number of bytes in memory, the ceiling for any client that
hashes on this CPU.

``remote-unchanged``: a real in-process server (``tests.support.harness.run_server``) and a real gRPC stream
with the FTP source config against vsftpd; once all 10,000 files are ready and one more poll has
finished, two more complete polls of the unchanged tree must download nothing. Counted twice: the
``ftpsource_bytes_hashed_total`` metric, and every command the FTP clients send (``RETR`` included),
counted on the wire by wrapping ``aioftp.Client.command`` for the run. ratio = bytes downloaded / 1 byte.

vsftpd, lftp and curl must be installed and the run needs root (``tests/support/servers.py`` creates the local
user that vsftpd logs in as). All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aioftp

from ftpsource.adapters.ftp import FtpAdapter
from ftpsource.config import SourceConfig
from ftpsource.core.model import Listing
from ftpsource.credentials import Credentials, Secret
from tests.support import servers
from tests.support.harness import eventually, open_stream, run_server
from tests.support.sources import write_credentials

from .common import ROUNDS, LoopLag, Result, best_of_alternating, fmt_s
from .hashing import BLOCK, GIB, _make_file

__all__ = ["run_hash", "run_list", "run_unchanged"]

LIST_LIMIT = 1.5
HASH_LIMIT = 0.8
UNCHANGED_POLLS = 2
READY_TIMEOUT_S = 240.0
POLL_TIMEOUT_S = 60.0


# --- shared -------------------------------------------------------------------------------------------


def _require(*tools: str) -> None:
    """Fail with a plain message instead of the test suite's skip."""
    problems = [f"`{t}` is not on PATH" for t in tools if shutil.which(t) is None]
    if not os.access(shutil.which("vsftpd") or "/usr/sbin/vsftpd", os.X_OK):
        problems.append("vsftpd is not installed (apt-get install vsftpd)")
    if os.geteuid() != 0:
        problems.append("needs root: tests/support/servers.py creates the local user vsftpd logs in as")
    if problems:
        raise RuntimeError("; ".join(problems))


def _versions() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}; ", "vsftpd", "lftp", "curl"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "tool versions unknown"
    return out.strip().rstrip(";")


@contextlib.contextmanager
def _served_from(scratch: Path) -> Iterator[None]:
    """Put the server's temporary directory inside the benchmark's scratch directory (``--tmp``).

    vsftpd serves a session as the unprivileged test user, which must be able to walk down to it.
    """
    scratch.chmod(0o755)
    for parent in scratch.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(f"{parent} is not searchable by other users; vsftpd's session cannot reach the data")
    saved = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        yield
    finally:
        tempfile.tempdir = saved


@contextlib.contextmanager
def _vsftpd(runner: asyncio.Runner, scratch: Path) -> Iterator[servers.FtpServer]:
    """``tests.support.servers.vsftpd_server`` driven from synchronous code (the timing loops are synchronous)."""
    cm = servers.vsftpd_server()
    with _served_from(scratch):
        srv = runner.run(cm.__aenter__())
    try:
        yield srv
    finally:
        runner.run(cm.__aexit__(None, None, None))


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _make_tree(root: Path, count: int, dirs: int, content: Callable[[int], bytes]) -> None:
    """``count`` files spread over ``dirs`` directories, readable by the server's session user."""
    with _umask(0o022):
        for d in range(dirs):
            (root / f"d{d:03d}").mkdir()
        for i in range(count):
            with open(root / f"d{i % dirs:03d}" / f"file-{i:05d}.csv", "wb") as f:
                f.write(content(i))


def _adapter(srv: servers.FtpServer) -> FtpAdapter:
    """An adapter as the watcher builds it (default config, the config's path filter)."""
    config = SourceConfig(url=srv.url())
    creds = Credentials(username=srv.username, password=Secret(srv.password))
    return FtpAdapter(config, creds, config.policy().path_filter)


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def _runs(times: dict[str, list[float]]) -> str:
    return "all runs: " + "; ".join(f"{k} {', '.join(fmt_s(t) for t in v)}" for k, v in times.items())


# --- remote-list ----------------------------------------------------------------------------------------


def run_list(scratch: Path, quick: bool) -> Result:
    _require("lftp")
    count, dirs = (2_000, 20) if quick else (10_000, 100)
    with asyncio.Runner() as runner, _vsftpd(runner, scratch) as srv:
        _make_tree(srv.root, count, dirs, lambda i: b"x")
        return _measure_list(runner, srv, scratch, count, dirs, quick)


def _measure_list(
    runner: asyncio.Runner, srv: servers.FtpServer, scratch: Path, count: int, dirs: int, quick: bool
) -> Result:
    empty = scratch / "empty"
    empty.mkdir(mode=0o755)

    def lftp_argv(path: Path) -> list[str]:
        return ["lftp", "-c", f"open -u {srv.username},{srv.password} -p {srv.port} {srv.host}; find {path}"]

    def lftp() -> float:
        t0 = time.perf_counter()
        out = subprocess.run(lftp_argv(srv.root), check=True, capture_output=True, text=True).stdout
        elapsed = time.perf_counter() - t0
        files = sum(1 for line in out.splitlines() if line and not line.endswith("/"))
        if files != count:
            raise AssertionError(f"lftp found {files} files, expected {count}")
        return elapsed

    first: list[float] = []
    mdtm: dict[str, int] = {}
    lag = LoopLag()
    connections = SourceConfig(url=srv.url()).max_connections

    def check(listing: Listing) -> None:
        if len(listing.entries) != count or listing.warnings or listing.unlisted_dirs:
            raise AssertionError(
                f"listed {len(listing.entries)} of {count} files; warnings {listing.warnings[:3]}, "
                f"unlisted {listing.unlisted_dirs[:3]}"
            )

    async def listings() -> float:
        """A fresh adapter: the first listing (timed for information), then the steady one (the goal)."""
        async with _adapter(srv) as src:
            t0 = time.perf_counter()
            one = await src.list()
            t1 = time.perf_counter()
            after_first = src.stats["mdtm"]
            two = await src.list()
            t2 = time.perf_counter()
            check(one)
            check(two)
            if two.entries != one.entries:
                raise AssertionError("the second listing of an unchanged tree differs from the first")
            mdtm["first"], mdtm["steady"] = after_first, src.stats["mdtm"] - after_first
            exact = {e.path: e.mtime for e in one.entries[:50]}
            for path, mtime in exact.items():
                if mtime != int((srv.root / path).stat().st_mtime):
                    raise AssertionError(f"{path}: listed mtime {mtime} is not the file's exact (MDTM) time")
        first.append(t1 - t0)
        return t2 - t1

    def ftpsource() -> float:
        return runner.run(lag.over(listings()))

    lftp()  # warm the server's dentry/inode cache and lftp's binary for both sides
    ftpsource()
    first.clear()
    times = best_of_alternating([("lftp", lftp), ("ftpsource steady", ftpsource)])
    times["ftpsource first"] = first
    fixed = min(_timed(lftp_argv(empty)) for _ in range(3))
    base, ours, first_best = min(times["lftp"]), min(times["ftpsource steady"]), min(first)
    return Result(
        name="remote-list",
        goal=f"List a {count:,}-file tree on vsftpd (LIST + MDTM) within 1.5× `lftp find`",
        baseline=f"`lftp -c 'open …; find'`: {fmt_s(base)}",
        measured=f"`FtpAdapter.list`, steady state: {fmt_s(ours)}",
        ratio=ours / base,
        limit=LIST_LIMIT,
        higher_is_better=False,
        size=f"{count:,} files in {dirs} dirs",
        quick=quick,
        error=f"the second listing sent {mdtm['steady']} MDTM: not the steady state" if mdtm["steady"] else None,
        details=[
            "ratio = second listing of an adapter (MDTM answers memoised, as in every poll after the first) "
            f"/ lftp; alternating runs, best of {ROUNDS}; lftp is timed whole as a subprocess (start, connect, "
            "login, LIST of every directory), ftpsource in-process on its pooled, logged-in connection",
            f"first listing of a fresh adapter (connect, {dirs + 1} LIST, {mdtm['first']:,} MDTM on "
            f"{connections} connections; for information, not judged): "
            f"{fmt_s(first_best)} ({first_best / base:.2f}× lftp); the steady listing sent {mdtm['steady']} MDTM",
            f"lftp's fixed cost (start, connect, login, `find` of an empty directory): {fmt_s(fixed)}",
            _runs(times),
            _versions(),
            lag.line,
        ],
    )


# --- remote-hash ----------------------------------------------------------------------------------------


def run_hash(scratch: Path, quick: bool) -> Result:
    _require("curl")
    size = GIB // 4 if quick else GIB
    with asyncio.Runner() as runner, _vsftpd(runner, scratch) as srv:
        data = srv.root / "one.bin"
        with _umask(0o022):
            _make_file(data, size)
        return _measure_hash(runner, srv, data, size, quick)


def _measure_hash(runner: asyncio.Runner, srv: servers.FtpServer, data: Path, size: int, quick: bool) -> Result:
    # Reading the file once warms the page cache and gives the digest every side must produce.
    reference = hashlib.sha256()
    with open(data, "rb", buffering=0) as f:
        while chunk := f.read(BLOCK):
            reference.update(chunk)
    expected = reference.hexdigest()
    # "%2F": the path is absolute, not relative to the login directory; nocwd: RETR the full path, as ftpsource does.
    url = (
        f"ftp://{quote(srv.username, safe='')}:{quote(srv.password, safe='')}@{srv.host}:{srv.port}"
        f"/%2F{quote(str(data).lstrip('/'))}"
    )
    curl_argv = ["curl", "-sS", "--ftp-method", "nocwd", url, "-o", "/dev/null", "-w", "%{size_download}"]
    src = _adapter(srv)
    methods: set[str] = set()
    lag = LoopLag()

    def curl() -> float:
        t0 = time.perf_counter()
        out = subprocess.run(curl_argv, check=True, capture_output=True, text=True).stdout
        elapsed = time.perf_counter() - t0
        if int(out.strip() or 0) != size:
            raise AssertionError(f"curl downloaded {out.strip()} bytes, expected {size}")
        return elapsed

    async def digest() -> float:
        t0 = time.perf_counter()
        d = await src.digest(data.name, "sha256", None, size)
        elapsed = time.perf_counter() - t0
        if d.value != expected or d.size != size:
            raise AssertionError(f"digest {d.value} of {d.size} bytes, expected {expected} of {size}")
        methods.add(d.method)
        return elapsed

    def ftpsource() -> float:
        return runner.run(lag.over(digest()))

    pipeline = f"curl -sS --ftp-method nocwd {shlex.quote(url)} | openssl dgst -sha256 -r"

    def curl_openssl() -> float:
        t0 = time.perf_counter()
        out = subprocess.run(
            ["bash", "-o", "pipefail", "-c", pipeline], check=True, capture_output=True, text=True
        ).stdout
        elapsed = time.perf_counter() - t0
        if out.split()[0] != expected:
            raise AssertionError("curl | openssl produced a different digest")
        return elapsed

    block = os.urandom(1024 * 1024)

    def sha256_only() -> float:
        h = hashlib.sha256()
        t0 = time.perf_counter()
        for _ in range(size // len(block)):
            h.update(block)
        return time.perf_counter() - t0

    tiny = data.with_name("tiny.bin")
    with _umask(0o022):
        tiny.write_bytes(b"x")
    tiny_argv = [*curl_argv[:4], url.removesuffix(quote(data.name)) + "tiny.bin", "-o", "/dev/null"]

    try:
        curl()
        ftpsource()  # connects (kept in the pool, as a running watcher's adapter is) and warms up
        candidates: list[tuple[str, Callable[[], float]]] = [("curl", curl), ("ftpsource", ftpsource)]
        if shutil.which("openssl"):
            candidates.append(("curl | openssl dgst", curl_openssl))
        candidates.append(("sha256 alone", sha256_only))
        times = best_of_alternating(candidates)
        curl_fixed = min(_timed(tiny_argv) for _ in range(3))
        stats = dict(src.stats)
    finally:
        runner.run(src.close())
    if methods != {"download"} or stats.get("server_hash"):
        raise AssertionError(f"digest method {methods}, server hashes {stats.get('server_hash', 0)}; expected download")
    curl_only, ours, floor = min(times["curl"]), min(times["ftpsource"]), min(times["sha256 alone"])
    if "curl | openssl dgst" not in times:
        raise AssertionError("openssl is needed for the baseline (`curl … | openssl dgst -sha256`)")
    base = min(times["curl | openssl dgst"])
    mb = size / 1e6
    return Result(
        name="remote-hash",
        goal=(
            f"Download and sha256 a {size / GIB:g} GiB file from vsftpd at ≥ 0.8× the speed of "
            "`curl … | openssl dgst -sha256`"
        ),
        baseline=f"`curl … | openssl dgst -sha256`: {fmt_s(base)} ({mb / base:.0f} MB/s)",
        measured=f"`FtpAdapter.digest` (download): {fmt_s(ours)} ({mb / ours:.0f} MB/s)",
        ratio=base / ours,  # speed ratio: ours / the pipeline's
        limit=HASH_LIMIT,
        higher_is_better=True,
        size=f"{size / GIB:g} GiB",
        quick=quick,
        details=[
            "why this baseline and not `curl -o /dev/null` (the obvious yardstick): on loopback curl downloads "
            f"at {mb / curl_only:.0f} MB/s ({fmt_s(curl_only)}), faster than SHA-256 itself runs on this CPU "
            f"({mb / floor:.0f} MB/s, {fmt_s(floor)} in memory), so no client that hashes could reach 0.8× of "
            f"it (the ceiling is {curl_only / floor:.2f}×; ftpsource reaches {curl_only / ours:.2f}×). The "
            "fair yardstick is the same download *and* hash done by curl and openssl in two processes",
            f"ratio = ftpsource speed / the pipeline's; vsftpd (no HASH, so `digest` downloads: method "
            f'"download", {stats.get("connect", 0)} connection, reused as a running watcher reuses it); warm '
            f"page cache, alternating runs, best of {ROUNDS}; curl's time includes its start, connect and login "
            f"({fmt_s(curl_fixed)} for a 1-byte file); ftpsource reaches {floor / ours:.2f} of the SHA-256 ceiling",
            _runs(times),
            _versions(),
            lag.line,
        ],
    )


# --- remote-unchanged -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _count_commands() -> Iterator[collections.Counter[str]]:
    """Count every FTP command the in-process aioftp clients send, by verb (RETR, LIST, MDTM, ...)."""
    counts: collections.Counter[str] = collections.Counter()
    inherited = "command" not in aioftp.Client.__dict__
    original = aioftp.Client.command

    async def command(self: aioftp.Client, command: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if command:
            counts[command.split(" ", 1)[0].upper()] += 1
        return await original(self, command, *args, **kwargs)

    aioftp.Client.command = command  # type: ignore[method-assign,assignment]
    try:
        yield counts
    finally:
        if inherited:
            del aioftp.Client.command
        else:
            aioftp.Client.command = original  # type: ignore[method-assign]


def run_unchanged(scratch: Path, quick: bool) -> Result:
    _require()
    count, dirs = (2_000, 20) if quick else (10_000, 100)
    lag = LoopLag()
    with _count_commands() as commands, asyncio.Runner() as runner:
        result = runner.run(_unchanged(scratch, count, dirs, commands, quick, lag))
    result.details.append(lag.line)
    return result


async def _unchanged(
    scratch: Path, count: int, dirs: int, commands: collections.Counter[str], quick: bool, lag: LoopLag
) -> Result:
    with _served_from(scratch):
        server_cm = servers.vsftpd_server()
        ftp = await server_cm.__aenter__()
    try:
        _make_tree(ftp.root, count, dirs, lambda i: b"id,value\n%d,%d\n" % (i, i * i))
        creds = write_credentials(scratch, "ftp", username=ftp.username, password=ftp.password)
        config = {"url": ftp.url(), "credentials": "ftp", "stable_for": "1s", "poll_interval": "2s"}
        state = scratch / "server"
        state.mkdir()
        async with run_server(state, credentials_dir=creds) as srv:
            stream = await open_stream(srv.port, config, name="bench")
            try:
                return await lag.over(_observe(srv, stream, count, dirs, commands, quick))
            finally:
                await stream.close()
                # Let the session notice the client left and close its FTP connections before the
                # server stops (its 1 s grace would otherwise cancel the handler mid-cleanup).
                with contextlib.suppress(AssertionError):
                    await eventually(lambda: not srv.app.sessions.all(), 10.0, what="the session to end")
    finally:
        await server_cm.__aexit__(None, None, None)


async def _observe(
    srv: Any, stream: Any, count: int, dirs: int, commands: collections.Counter[str], quick: bool
) -> Result:
    t0 = time.perf_counter()
    ready: set[str] = set()
    duplicates = 0
    while len(ready) < count:
        remaining = t0 + READY_TIMEOUT_S - time.perf_counter()
        if remaining <= 0:
            break
        try:
            event = await asyncio.wait_for(stream.events.get(), remaining)
        except TimeoutError:
            break
        if event["type"] == "ftpsource.file.ready":
            duplicates += event["subject"] in ready
            ready.add(event["subject"])
    setup_s = time.perf_counter() - t0
    if len(ready) < count:
        raise AssertionError(f"only {len(ready):,} of {count:,} files ready within {READY_TIMEOUT_S:.0f} s")
    watcher = next(s.watcher for s in srv.app.sessions.all() if s.watcher is not None)
    sid = watcher.source_id
    registry = srv.app.metrics.registry

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"source": sid, **labels}) or 0.0

    def snapshot() -> dict[str, Any]:
        return {
            "bytes": metric("ftpsource_bytes_hashed_total"),
            "ok": metric("ftpsource_polls_total", outcome="ok"),
            "error": metric("ftpsource_polls_total", outcome="error"),
            "seconds": metric("ftpsource_poll_duration_seconds_sum"),
            "commands": collections.Counter(commands),
            "events": len(stream.received),
        }

    async def next_poll() -> None:
        watcher.polled.clear()
        await asyncio.wait_for(watcher.polled.wait(), POLL_TIMEOUT_S)

    await next_poll()  # the poll in progress (it may have verified the last files) ends
    setup = snapshot()
    for _ in range(UNCHANGED_POLLS):
        await next_poll()
    after = snapshot()

    hashed = after["bytes"] - setup["bytes"]
    polls = int(after["ok"] - setup["ok"])
    sent = after["commands"] - setup["commands"]
    events = after["events"] - setup["events"]
    retr = sent["RETR"]
    problems = []
    if retr:
        problems.append(f"{retr} RETR sent during the unchanged polls")
    if after["error"] > setup["error"]:
        problems.append(f"{int(after['error'] - setup['error'])} polls failed")
    if events:
        problems.append(f"{events} events emitted for an unchanged tree")
    if duplicates:
        problems.append(f"{duplicates} files reported ready more than once")
    per_poll = ", ".join(f"{verb} {n / polls:,.0f}" for verb, n in sorted(sent.items())) if polls else "none"
    setup_cmds = setup["commands"]
    return Result(
        name="remote-unchanged",
        goal=f"An unchanged poll of the {count:,}-file vsftpd tree downloads nothing",
        baseline="budget: 0 bytes (ratio = bytes downloaded / 1 byte)",
        measured=f"{polls} unchanged polls: {hashed:,.0f} bytes hashed, {retr} RETR",
        ratio=hashed / 1.0,
        limit=0.0,
        higher_is_better=False,
        size=f"{count:,} files in {dirs} dirs",
        quick=quick,
        error="; ".join(problems) or None,
        details=[
            "a real in-process server and gRPC stream (`tests.support.harness`), source config "
            "`stable_for: 1s, poll_interval: 2s`, default `max_connections: 2`; bytes from "
            "`ftpsource_bytes_hashed_total`, commands counted on the wire (every command the FTP clients sent)",
            f"set-up: all {count:,} ready events in {fmt_s(setup_s)} ({setup['bytes']:,.0f} bytes hashed); "
            f"commands until then: {', '.join(f'{v} {n:,}' for v, n in sorted(setup_cmds.items()))}",
            f"per unchanged poll, commands sent: {per_poll}; listing + decisions "
            f"{fmt_s((after['seconds'] - setup['seconds']) / max(polls, 1))} (`ftpsource_poll_duration_seconds`)",
            f"events during the unchanged polls: {events}",
        ],
    )
