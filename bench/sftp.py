"""The SFTP adapter against Debian's OpenSSH (``internal-sftp``) on loopback, judged against rclone.

``sftp-hash``: ``SftpAdapter.digest(path, "sha256", None, size)`` on a 500 MB file at >= 0.9x the speed
of ``rclone cat :sftp,...:path | openssl dgst -sha256`` (a shell pipeline, timed whole as processes).
The adapter's connection is reused as a watcher reuses it. Warm page cache, alternating, best of 3.
Reported too, not judged: ``rclone cat > /dev/null`` (the download alone).

``sftp-list``: a steady listing of a 10,000-file tree (100 directories x 100 files) within 1.5x the time
of ``rclone lsjson -R`` (a subprocess, timed whole). ftpsource's side is ``SftpAdapter.list()`` on a
connected adapter, as every poll after the first. The adapter's first listing (connect included) is
reported for information. Alternating, best of 3.

Both log in with a key as the local test user that ``tests/support/servers.py`` creates, so they need
root, ``sshd``, ``rclone`` and ``openssl``. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from ftpsource.adapters.sftp import SftpAdapter
from ftpsource.config import SourceConfig
from ftpsource.credentials import Credentials, Secret
from tests.support import servers

from .common import ROUNDS, LoopLag, Result, best_of_alternating, fmt_s
from .hashing import BLOCK, _make_file
from .remote import _make_tree, _served_from, _umask

__all__ = ["run_hash", "run_list"]

HASH_LIMIT = 0.9
LIST_LIMIT = 1.5
MB = 1000 * 1000


def _require() -> None:
    problems = [f"`{t}` is not on PATH" for t in ("rclone", "openssl") if shutil.which(t) is None]
    if not os.access("/usr/sbin/sshd", os.X_OK):
        problems.append("sshd is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        problems.append("needs root: tests/support/servers.py creates the local user sshd logs in as")
    if problems:
        raise RuntimeError("; ".join(problems))


def _versions() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}; ", "openssh-server", "rclone"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "tool versions unknown"
    return out.strip().rstrip(";")


@contextlib.contextmanager
def _openssh(runner: asyncio.Runner, scratch: Path) -> Iterator[servers.SftpServer]:
    cm = servers.openssh_server()
    with _served_from(scratch):
        srv = runner.run(cm.__aenter__())
    try:
        yield srv
    finally:
        runner.run(cm.__aexit__(None, None, None))


def _adapter(srv: servers.SftpServer) -> SftpAdapter:
    """An adapter as the watcher builds it, logging in with the key and pinning the host key."""
    config = SourceConfig(url=srv.url(), host_key=srv.fingerprint)
    creds = Credentials(username=srv.username, private_key=Secret(srv.private_key))
    return SftpAdapter(config, creds, config.policy().path_filter)


def _rclone(srv: servers.SftpServer, scratch: Path) -> tuple[str, dict[str, str]]:
    """An on-the-fly rclone remote for the server (same key, same known_hosts) and its environment."""
    key = scratch / "rclone.key"
    key.write_text(srv.private_key)
    key.chmod(0o600)
    config = scratch / "rclone.conf"
    config.touch()
    remote = (
        f":sftp,host={srv.host},port={srv.port},user={srv.username},key_file={key},known_hosts_file={srv.known_hosts}:"
    )
    return remote, {**os.environ, "RCLONE_CONFIG": str(config)}


def _runs(times: dict[str, list[float]]) -> str:
    return "all runs: " + "; ".join(f"{k} {', '.join(fmt_s(t) for t in v)}" for k, v in times.items())


# --- sftp-hash ------------------------------------------------------------------------------------------


def run_hash(scratch: Path, quick: bool) -> Result:
    _require()
    size = (128 if quick else 500) * MB // BLOCK * BLOCK
    with asyncio.Runner() as runner, _openssh(runner, scratch) as srv:
        data = srv.root / "one.bin"
        with _umask(0o022):
            _make_file(data, size)
        reference = hashlib.sha256()
        with open(data, "rb", buffering=0) as f:  # also warms the page cache
            while chunk := f.read(BLOCK):
                reference.update(chunk)
        expected = reference.hexdigest()
        remote, env = _rclone(srv, scratch)
        source = shlex.quote(f"{remote}{data}")
        src = _adapter(srv)
        lag = LoopLag()

        def pipeline(command: str) -> float:
            t0 = time.perf_counter()
            out = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command], check=True, capture_output=True, text=True, env=env
            ).stdout
            elapsed = time.perf_counter() - t0
            if "openssl" in command and out.split()[0] != expected:
                raise AssertionError("rclone | openssl produced a different digest")
            return elapsed

        async def digest() -> float:
            t0 = time.perf_counter()
            d = await src.digest(data.name, "sha256", None, size)
            elapsed = time.perf_counter() - t0
            if (d.value, d.size, d.method) != (expected, size, "download"):
                raise AssertionError(f"digest {d.value} of {d.size} bytes by {d.method}, expected {expected}")
            return elapsed

        try:
            runner.run(src.digest(data.name, "sha256", None, size))  # connect; as a watcher's pooled connection
            times = best_of_alternating(
                [
                    ("rclone | openssl", lambda: pipeline(f"rclone cat {source} | openssl dgst -sha256 -r")),
                    ("ftpsource", lambda: runner.run(lag.over(digest()))),
                    ("rclone cat", lambda: pipeline(f"rclone cat {source} > /dev/null")),
                ],
                ROUNDS,
            )
        finally:
            runner.run(src.close())
    base, ours, raw = min(times["rclone | openssl"]), min(times["ftpsource"]), min(times["rclone cat"])
    return Result(
        name="sftp-hash",
        goal=f"download + sha256 of {size // MB} MB from OpenSSH at ≥ {HASH_LIMIT}× "
        "`rclone cat | openssl dgst -sha256`",
        baseline=f"rclone cat | openssl dgst -sha256: {fmt_s(base)} ({size / base / MB:.0f} MB/s)",
        measured=f"SftpAdapter.digest: {fmt_s(ours)} ({size / ours / MB:.0f} MB/s)",
        ratio=base / ours,
        limit=HASH_LIMIT,
        higher_is_better=True,
        size=f"{size // MB} MB",
        quick=quick,
        details=[
            f"rclone cat > /dev/null alone: {fmt_s(raw)} ({size / raw / MB:.0f} MB/s), not judged",
            "the baseline is timed whole as processes (start, connect, login included); ftpsource's side runs "
            "on its connected adapter, as a watcher's downloads do",
            _versions(),
            _runs(times),
            lag.line,
        ],
    )


# --- sftp-list ------------------------------------------------------------------------------------------


def run_list(scratch: Path, quick: bool) -> Result:
    _require()
    count, dirs = (2_000, 20) if quick else (10_000, 100)
    with asyncio.Runner() as runner, _openssh(runner, scratch) as srv:
        _make_tree(srv.root, count, dirs, lambda i: b"x")
        remote, env = _rclone(srv, scratch)
        argv = ["rclone", "lsjson", "-R", "--files-only", f"{remote}{srv.root}"]
        steady = _adapter(srv)
        lag = LoopLag()

        def rclone() -> float:
            t0 = time.perf_counter()
            out = subprocess.run(argv, check=True, capture_output=True, env=env).stdout
            elapsed = time.perf_counter() - t0
            listed = out.count(b'"Path"')
            if listed != count:
                raise AssertionError(f"rclone listed {listed} files, expected {count}")
            return elapsed

        async def listing(src: SftpAdapter) -> float:
            t0 = time.perf_counter()
            found = await src.list()
            elapsed = time.perf_counter() - t0
            if len(found.entries) != count:
                raise AssertionError(f"listed {len(found.entries)} files, expected {count}")
            return elapsed

        async def first() -> float:
            src = _adapter(srv)
            try:
                return await listing(src)
            finally:
                await src.close()

        try:
            runner.run(listing(steady))
            times = best_of_alternating(
                [
                    ("rclone lsjson -R", rclone),
                    ("ftpsource", lambda: runner.run(lag.over(listing(steady)))),
                    ("first listing", lambda: runner.run(lag.over(first()))),
                ],
                ROUNDS,
            )
        finally:
            runner.run(steady.close())
    base, ours, cold = min(times["rclone lsjson -R"]), min(times["ftpsource"]), min(times["first listing"])
    return Result(
        name="sftp-list",
        goal=f"steady listing of {count:,} files on OpenSSH within {LIST_LIMIT}× `rclone lsjson -R`",
        baseline=f"rclone lsjson -R: {fmt_s(base)}",
        measured=f"SftpAdapter.list (connected): {fmt_s(ours)}",
        ratio=ours / base,
        limit=LIST_LIMIT,
        higher_is_better=False,
        size=f"{count:,} files in {dirs} dirs",
        quick=quick,
        details=[
            f"first listing of a new adapter (connect and login included): {fmt_s(cold)}, not judged",
            _versions(),
            _runs(times),
            lag.line,
        ],
    )
