"""A grpc-go client of the Eventing service (``goclient/main.go``), built once per test run.

Argo's generic EventSource is a grpc-go client; this one streams the same way, so delivery is also
tested against grpc-go's HTTP/2 stack (its flow control, its answers to keepalive pings). Built in
GOPATH mode against Debian's ``golang-google-grpc-dev``; without Go or that package the tests skip
(or fail under ``FTPSOURCE_REQUIRE_REAL_SERVERS=1``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import unavailable

__all__ = ["GoStream", "build_go_client"]

SOURCE = Path(__file__).resolve().parent / "goclient" / "main.go"
GOPATH = Path("/usr/share/gocode")


def build_go_client(out_dir: Path) -> Path:
    """Build the client into ``out_dir`` (skips the test when Go or grpc-go is missing)."""
    go = shutil.which("go")
    if go is None:
        unavailable("go is not installed (Debian: golang-go)")
    if not (GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        unavailable("grpc-go is not installed (Debian: golang-google-grpc-dev)")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "goclient"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(out_dir),
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOCACHE": str(out_dir / "cache"),
        "GOFLAGS": "",
    }
    done = subprocess.run(
        [go, "build", "-o", str(binary), str(SOURCE)], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise AssertionError(f"building the grpc-go client failed:\n{done.stderr}")
    return binary


@dataclass
class GoStream:
    """One run of the Go client: payload lines as they arrive, and how the stream ended."""

    proc: asyncio.subprocess.Process
    lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    received: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, binary: Path, port: int, name: str, config: str) -> GoStream:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            f"127.0.0.1:{port}",
            name,
            config,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stream = cls(proc)
        stream.task = asyncio.create_task(stream._pump())
        return stream

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode().rstrip("\n")
            self.received.append(text)
            await self.lines.put(text)

    async def next(self, timeout: float = 20.0) -> str:
        return await asyncio.wait_for(self.lines.get(), timeout)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self.task is not None:
            await self.task
