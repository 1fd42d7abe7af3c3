"""Settling as an attacker would use it: a malicious uploader who plants symlinks where a move or a
delete will go, through a real gRPC client and against the local adapter directly (for the links
swapped in after the watcher's own checks)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import pytest

from ftpsource.adapters import adapter_for
from ftpsource.adapters.base import Adapter
from ftpsource.config import parse_source_config
from ftpsource.core.text import printable
from ftpsource.credentials import Credentials
from ftpsource.errors import ActionRefused
from tests.support.files import put
from tests.support.harness import REPO, eventually, run_server, settle, stream_to, versions

TIMING = {"stable_for": "300ms", "poll_interval": "300ms"}


async def test_a_move_into_a_directory_linked_out_of_the_root_creates_and_moves_nothing_outside(
    tmp_path: Path, root: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "archive").symlink_to(outside)  # planted by whoever can write into the root
    config = {
        "url": f"file://{root}",
        "id": "drop",
        "on_success": {"action": "move", "to": "archive/%Y/{name}"},
        **TIMING,
    }
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        put(root, "a.csv", b"a\n")
        event = await stream.next()
        assert event["subject"] == "a.csv"
        await settle(srv.port, event["id"], "succeeded")

        def finished() -> bool:
            rows = versions(srv, "drop", "a.csv")
            return bool(rows) and rows[-1].action_state not in (None, "pending")

        await eventually(finished, what="the move to end")
        row = versions(srv, "drop", "a.csv")[-1]
        assert row.action_state == "failed" and "outside the source root" in (row.action_detail or "")
    assert list(outside.iterdir()) == []  # not even the year's directory
    assert (root / "a.csv").read_bytes() == b"a\n"


def _local(root: Path) -> Adapter:
    config = parse_source_config(f"url: file://{root}")
    return adapter_for(config, Credentials(), config.policy().path_filter)


async def test_links_swapped_in_after_the_watchers_checks_lead_nowhere_outside(tmp_path: Path, root: Path) -> None:
    """The watcher stats the file before acting; a link planted after that must still be refused by
    the adapter itself, for the directory moved into, the directory moved from and a delete."""
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "victim.csv").write_bytes(b"not yours")
    put(root, "in/a.csv", b"a")
    async with _local(root) as src:
        (root / "archive").symlink_to(outside)
        with pytest.raises(ActionRefused, match="outside the source root"):
            await src.makedirs("archive/2026/x")
        assert sorted(p.name for p in outside.iterdir()) == ["deep", "victim.csv"]
        with pytest.raises(ActionRefused, match="outside the source root"):
            await src.rename("in/a.csv", "archive/deep/a.csv")
        assert not (outside / "deep" / "a.csv").exists() and (root / "in" / "a.csv").exists()

        (root / "in" / "a.csv").unlink()
        (root / "in").rmdir()
        (root / "in").symlink_to(outside)  # the reported file's directory now leads out of the root
        with pytest.raises(ActionRefused, match="outside the source root"):
            await src.remove("in/victim.csv")
        with pytest.raises(ActionRefused, match="outside the source root"):
            await src.rename("in/victim.csv", "moved.csv")
        assert (outside / "victim.csv").read_bytes() == b"not yours"
        assert not (root / "moved.csv").exists()


async def test_links_inside_the_root_still_work_and_a_target_is_never_overwritten(root: Path) -> None:
    put(root, "a.csv", b"a")
    put(root, "b.csv", b"b")
    put(root, "real/b.csv", b"older")
    (root / "archive").symlink_to(root / "real")
    async with _local(root) as src:
        await src.makedirs("archive/new/dir")
        assert (root / "real" / "new" / "dir").is_dir()
        await src.rename("a.csv", "archive/a.csv")
        assert (root / "real" / "a.csv").read_bytes() == b"a"
        with pytest.raises(ActionRefused, match="the target exists"):
            await src.rename("b.csv", "archive/b.csv")
        assert (root / "real" / "b.csv").read_bytes() == b"older"
        await src.remove("archive/a.csv")
        assert not (root / "real" / "a.csv").exists()
        assert os.path.islink(root / "archive")


async def test_a_settle_message_cannot_drive_the_operators_terminal(tmp_path: Path, root: Path) -> None:
    """The message a Workflow settles with is kept for `state show`; control characters in it (a
    screen clear, a carriage return over the previous line, a fake line) are kept as escapes."""
    hostile = "wf-1\x1b[2J\r\n  moved    2026-01-01  to archive/fake.csv\x1b]0;pwned\x07"
    config = {"url": f"file://{root}", "id": "drop", "on_success": {"action": "delete"}, **TIMING}
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        put(root, "a.csv", b"a\n")
        event = await stream.next()
        await settle(srv.port, event["id"], "succeeded", message=hostile)
        await eventually(lambda: not (root / "a.csv").exists(), what="the delete")
        assert versions(srv, "drop", "a.csv")[-1].message == printable(hostile)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ftpsource.cli",
        "state",
        "show",
        "--state",
        str(tmp_path / "state.db"),
        "drop",
        "a.csv",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "fake.csv" not in [line.split()[-1] for line in text.splitlines() if line.strip()]
    assert "succeeded: wf-1\\x1b[2J\\x0d\\x0a  moved" in text


async def test_a_settle_token_settles_but_opens_no_stream(tmp_path: Path, root: Path) -> None:
    """A Workflow's exit handler needs to settle, not to read: with `--settle-token-file` it holds a
    token that the Settlement service accepts and the event stream refuses."""
    stream_token, settle_token = tmp_path / "token", tmp_path / "settle-token"
    stream_token.write_text("stream-s3cret\n")
    settle_token.write_text("settle-s3cret\n")
    config = {"url": f"file://{root}", "id": "drop", "on_success": {"action": "delete"}, **TIMING}
    async with run_server(tmp_path, auth_token_file=stream_token, settle_token_file=settle_token) as srv:
        async with stream_to(srv.port, config, token="settle-s3cret") as refused:
            assert await refused.wait_end() is grpc.StatusCode.UNAUTHENTICATED
        async with stream_to(srv.port, config, token="stream-s3cret") as stream:
            put(root, "a.csv", b"a")
            put(root, "b.csv", b"b")
            got = {e["subject"]: e for e in [await stream.next(), await stream.next()]}
            for token in (None, "wrong", "settle-s3cret-and-more"):
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await settle(srv.port, got["a.csv"]["id"], "succeeded", token=token)
                assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
            await settle(srv.port, got["a.csv"]["id"], "succeeded", token="settle-s3cret")
            await settle(srv.port, got["b.csv"]["id"], "succeeded", token="stream-s3cret")
            await eventually(lambda: not (root / "a.csv").exists() and not (root / "b.csv").exists(), what="deletes")
