"""Settling through a real gRPC client and the `ftpsource settle` CLI: archive, quarantine, delete,
the changed-since-reported guard, settles that wait for the next stream, auth and refusals."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from ftpsource.adapters.local import LocalAdapter
from ftpsource.errors import TransientSourceError
from tests.support.files import put
from tests.support.harness import (
    REPO,
    all_delivered,
    eventually,
    ready,
    run_server,
    settle,
    stream_to,
    versions,
)

TIMING = {"stable_for": "300ms", "poll_interval": "300ms"}
ACTIONS = {
    "on_success": {"action": "move", "to": "archive/%Y/{name}"},
    "on_failure": {"action": "move", "to": "failed/{name}"},
}


def _config(root: Path, **kw: Any) -> dict[str, Any]:
    return {"url": f"file://{root}", "id": "drop", **TIMING, **ACTIONS, **kw}


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ftpsource.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _ready(stream: Any, *paths: str) -> list[dict[str, Any]]:
    """The ready events of ``paths``, in any arrival order."""
    got: dict[str, dict[str, Any]] = {}
    while set(paths) - set(got):
        event = await stream.next()
        got[event["subject"]] = event
    return [got[p] for p in paths]


def _sample(srv: Any, name: str, **labels: str) -> float:
    return srv.app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_archive_on_success_quarantine_on_failure_and_refusals(tmp_path: Path, root: Path) -> None:
    year = time.strftime("%Y", time.gmtime())
    async with run_server(tmp_path) as srv, stream_to(srv.port, _config(root)) as stream:
        put(root, "in/a.csv", b"a\n")
        put(root, "b.csv", b"b\n")
        a, b = await _ready(stream, "in/a.csv", "b.csv")
        await all_delivered(srv)
        await eventually(lambda: _sample(srv, "ftpsource_unsettled_versions", source="drop") == 2, what="gauge")

        reply = await settle(srv.port, a["id"], "succeeded", message="wf-1 Succeeded")
        assert (reply.already_settled, reply.action) == (False, "move")
        await settle(srv.port, b["id"], "failed", message="wf-2 Failed")
        await eventually(lambda: (root / "archive" / year / "a.csv").exists(), what="archived")
        await eventually(lambda: (root / "failed" / "b.csv").exists(), what="quarantined")
        assert not (root / "in" / "a.csv").exists() and not (root / "b.csv").exists()
        assert (root / "archive" / year / "a.csv").read_bytes() == b"a\n"

        # The same outcome again changes nothing; another outcome, or an unknown id, is refused.
        assert (await settle(srv.port, a["id"], "succeeded")).already_settled
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await settle(srv.port, a["id"], "failed")
        assert conflict.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "already settled as succeeded" in (conflict.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await settle(srv.port, "0" * 32, "succeeded")
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await settle(srv.port, a["id"], "unspecified")
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        # Moved files are never reported as new files, nor as deleted ones.
        put(root, "sentinel.csv", b"s")
        await stream.until(ready("sentinel.csv"))
        assert sorted(e["subject"] for e in stream.received) == ["b.csv", "in/a.csv", "sentinel.csv"]

        assert _sample(srv, "ftpsource_settlements_total", source="drop", outcome="succeeded") == 1
        assert _sample(srv, "ftpsource_settlements_total", source="drop", outcome="failed") == 1
        assert _sample(srv, "ftpsource_post_actions_total", source="drop", action="move", result="ok") == 2
        await eventually(lambda: _sample(srv, "ftpsource_unsettled_versions", source="drop") == 1, what="gauge")

    code, out, err = await _cli("state", "show", "--state", str(tmp_path / "state.db"), "drop", "in/a.csv")
    assert code == 0, err
    for step in ("seen", "ready", "delivered", "settled", "moved"):
        assert step in out
    assert "succeeded: wf-1 Succeeded" in out and f"to archive/{year}/a.csv" in out


async def test_delete_applies_to_the_settled_version_only(tmp_path: Path, root: Path) -> None:
    config = _config(root, on_success={"action": "delete"})
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        put(root, "gone.csv", b"1")
        put(root, "kept.csv", b"v1")
        gone, kept = await _ready(stream, "gone.csv", "kept.csv")
        put(root, "kept.csv", b"v2 with more bytes")  # changed after it was reported
        await stream.until(lambda e: e["subject"] == "kept.csv" and e["data"]["generation"] == 2)
        await settle(srv.port, gone["id"], "succeeded")
        await settle(srv.port, kept["id"], "succeeded")
        await eventually(lambda: not (root / "gone.csv").exists(), what="delete")

        def guarded() -> bool:
            (first, _) = versions(srv, "drop", "kept.csv")
            return first.action_state == "changed"

        await eventually(guarded, what="changed-since-reported")
        assert (root / "kept.csv").read_bytes() == b"v2 with more bytes"
        first, second = versions(srv, "drop", "kept.csv")
        assert (first.action_detail or "").startswith("changed since reported")
        assert second.outcome is None
        assert _sample(srv, "ftpsource_post_actions_total", source="drop", action="delete", result="changed") == 1


async def _archive_one(tmp_path: Path, root: Path) -> Any:
    """Report a.csv, settle it succeeded, wait until it is moved: its one version, as recorded."""
    async with run_server(tmp_path) as srv, stream_to(srv.port, _config(root)) as stream:
        put(root, "a.csv", b"v1\n")
        (a,) = await _ready(stream, "a.csv")
        await settle(srv.port, a["id"], "succeeded")
        await eventually(lambda: versions(srv, "drop", "a.csv")[0].action_state == "done", what="moved")
    (version,) = versions(srv, "drop", "a.csv")
    return version


async def test_a_write_between_check_and_move_is_named_in_the_outcome(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No protocol renames conditionally: bytes landing after the check move with the file, and the
    recorded outcome says so instead of claiming the settled version was archived."""
    real_rename = LocalAdapter.rename

    async def racing_rename(self: LocalAdapter, path: str, target: str) -> None:
        put(root, path, b"v2, written during the move\n", mtime=time.time() + 5)
        await real_rename(self, path, target)

    monkeypatch.setattr(LocalAdapter, "rename", racing_rename)
    year = time.strftime("%Y", time.gmtime())
    version = await _archive_one(tmp_path, root)
    assert (root / "archive" / year / "a.csv").read_bytes() == b"v2, written during the move\n"
    assert (version.action_detail or "").startswith("moved, but the file changed during the move"), version


async def test_a_target_that_cannot_be_looked_at_after_the_move_claims_nothing(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = LocalAdapter.stat

    async def flaky_stat(self: LocalAdapter, path: str) -> Any:
        if path.startswith("archive/"):
            raise TransientSourceError("the target could not be looked at", kind="io")
        return await real_stat(self, path)

    monkeypatch.setattr(LocalAdapter, "stat", flaky_stat)
    version = await _archive_one(tmp_path, root)
    assert version.action_detail is None, version


async def test_settles_wait_for_the_next_stream_across_a_restart(tmp_path: Path, root: Path) -> None:
    config = _config(root)
    put(root, "a.csv", b"a")
    put(root, "b.csv", b"b")
    async with run_server(tmp_path) as srv, stream_to(srv.port, config) as stream:
        ids = {e["subject"]: e["id"] for e in await _ready(stream, "a.csv", "b.csv")}
        await all_delivered(srv)
    async with run_server(tmp_path) as srv:
        # No stream is live: the settle is recorded and its move waits for the source to run.
        await settle(srv.port, ids["a.csv"], "succeeded")
        await asyncio.sleep(0.5)
        assert (root / "a.csv").exists()
        (pending,) = versions(srv, "drop", "a.csv")
        assert pending.action_state == "pending"
        async with stream_to(srv.port, config) as stream:
            await eventually(lambda: not (root / "a.csv").exists(), what="move on the next stream")
            await settle(srv.port, ids["b.csv"], "failed")  # and after the restart, with a live stream
            await eventually(lambda: (root / "failed" / "b.csv").exists(), what="quarantine")
            put(root, "sentinel.csv", b"s")
            await stream.until(ready("sentinel.csv"))
            assert [e["subject"] for e in stream.received] == ["sentinel.csv"]


async def test_token_and_cli(tmp_path: Path, root: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    async with (
        run_server(tmp_path, auth_token_file=token_file) as srv,
        stream_to(srv.port, _config(root), token="s3cret-token") as stream,
    ):
        put(root, "a.csv", b"a")
        put(root, "b.csv", b"b")
        a, b = await _ready(stream, "a.csv", "b.csv")
        for token in (None, "wrong"):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await settle(srv.port, a["id"], "succeeded", token=token)
            assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert (root / "a.csv").exists()

        server = f"127.0.0.1:{srv.port}"
        code, out, err = await _cli("settle", "--server", server, a["id"], "succeeded")
        assert code == 1 and err.count("\n") == 1 and "UNAUTHENTICATED" in err
        args = ("settle", "--server", server, "--token-file", str(token_file))
        code, out, err = await _cli(*args, a["id"], "succeeded", "--message", "wf-a")
        assert code == 0, err
        assert "settled event" in out and "action: move" in out
        code, out, err = await _cli(*args, a["id"], "succeeded")
        assert code == 0 and "already settled" in out
        code, out, err = await _cli(*args, a["id"], "failed")
        assert code == 1 and "FAILED_PRECONDITION" in err and err.count("\n") == 1
        code, out, err = await _cli(*args, "f" * 32, "failed")
        assert code == 1 and "NOT_FOUND" in err
        assert "s3cret-token" not in out + err
        code, out, err = await _cli(*args, b["id"], "failed")
        assert code == 0, err
        await eventually(lambda: (root / "failed" / "b.csv").exists() and not (root / "a.csv").exists(), what="moves")
