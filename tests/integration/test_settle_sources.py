"""Archive, delete and quarantine through every kind of adapter that can do it: the local directory,
pyftpdlib (FTP), Debian's vsftpd (FTP, LIST/MDTM/SIZE only) and OpenSSH (SFTP)."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import servers
from tests.support.files import put
from tests.support.harness import eventually, run_server, settle, stream_to, versions
from tests.support.sources import SourceUnderTest, source_under_test

KINDS = ["local", "ftp-pyftpdlib", "ftp-vsftpd", "sftp-openssh"]
TIMING = {"stable_for": "300ms", "poll_interval": "300ms"}


@pytest.fixture(params=KINDS)
async def src(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SourceUnderTest]:
    async with source_under_test(request.param, tmp_path) as s:
        yield s


def _hand_over(src: SourceUnderTest) -> None:
    """Real servers act as the unprivileged test user, who must own the tree to move files in it."""
    if src.kind not in ("ftp-vsftpd", "sftp-openssh"):
        return
    user = pwd.getpwnam(servers.ensure_test_user()[0])
    for directory, dirs, files in os.walk(src.root):
        for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


async def _ready_all(stream: Any, paths: set[str]) -> dict[str, dict[str, Any]]:
    got: dict[str, dict[str, Any]] = {}
    while paths - set(got):
        event = await stream.next()
        got[event["subject"]] = event
    return got


async def test_archive_delete_and_quarantine(tmp_path: Path, src: SourceUnderTest) -> None:
    day = time.strftime("%Y%m%d", time.gmtime())
    for sub in ("move", "delete"):
        put(src.root, f"{sub}/ok.csv", b"fine\n")
        put(src.root, f"{sub}/bad.csv", b"broken\n")
        put(src.root, f"{sub}/changed.csv", b"v1\n")
    _hand_over(src)
    moving = src.config(
        url=f"{src.url.rstrip('/')}/move",
        id="move",
        on_success={"action": "move", "to": "archive/%Y%m%d/{name}"},
        on_failure={"action": "move", "to": "failed/{name}"},
        **TIMING,
    )
    deleting = src.config(url=f"{src.url.rstrip('/')}/delete", id="delete", on_success={"action": "delete"}, **TIMING)
    names = {"ok.csv", "bad.csv", "changed.csv"}
    async with (
        run_server(tmp_path, credentials_dir=src.credentials_dir) as srv,
        stream_to(srv.port, moving) as move_stream,
        stream_to(srv.port, deleting) as delete_stream,
    ):
        moved = await _ready_all(move_stream, names)
        deleted = await _ready_all(delete_stream, names)
        for sub in ("move", "delete"):
            put(src.root, f"{sub}/changed.csv", b"v2, longer\n", mtime=time.time() + 5)
        _hand_over(src)
        await settle(srv.port, moved["ok.csv"]["id"], "succeeded")
        await settle(srv.port, moved["bad.csv"]["id"], "failed", message="transform failed")
        await settle(srv.port, moved["changed.csv"]["id"], "succeeded")
        await settle(srv.port, deleted["ok.csv"]["id"], "succeeded")
        await settle(srv.port, deleted["bad.csv"]["id"], "failed")  # on_failure none: stays
        await settle(srv.port, deleted["changed.csv"]["id"], "succeeded")

        move, delete = src.root / "move", src.root / "delete"
        await eventually(lambda: (move / "archive" / day / "ok.csv").exists(), 30, "archive")
        await eventually(lambda: (move / "failed" / "bad.csv").exists(), 30, "quarantine")
        await eventually(lambda: not (delete / "ok.csv").exists(), 30, "delete")
        assert (move / "archive" / day / "ok.csv").read_bytes() == b"fine\n"
        assert (move / "failed" / "bad.csv").read_bytes() == b"broken\n"
        assert not (move / "ok.csv").exists() and not (move / "bad.csv").exists()

        def guarded(source_id: str) -> bool:
            first = versions(srv, source_id, "changed.csv")[0]
            return first.action_state == "changed"

        await eventually(lambda: guarded("move") and guarded("delete"), 30, "changed-since-reported")
        assert (move / "changed.csv").read_bytes() == b"v2, longer\n"
        assert (delete / "changed.csv").read_bytes() == b"v2, longer\n"
        assert (delete / "bad.csv").exists()
        # Neither the moves nor the deletes come back as events: only the changed files' new versions.
        put(src.root, "move/sentinel.csv", b"s")
        _hand_over(src)
        await move_stream.until(lambda e: e["subject"] == "sentinel.csv")
        if not any(e["data"]["generation"] == 2 for e in move_stream.received):
            await move_stream.until(lambda e: e["subject"] == "changed.csv")
        assert sorted(e["subject"] for e in move_stream.received) == sorted([*names, "changed.csv", "sentinel.csv"])
        assert src.secret is None or all(
            src.secret not in (v.action_detail or "") for p in names for v in versions(srv, "move", p)
        )
