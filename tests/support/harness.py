"""Test harness: a real ftpsource gRPC server (in-process or as a subprocess) and a real gRPC client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from ftpsource._proto import generic_pb2, generic_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from ftpsource.config import ServerSettings
from ftpsource.metrics import Metrics
from ftpsource.server import RunningServer, start_server
from ftpsource.store import VersionRow, open_store_read_only

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def run_server(
    tmp: Path,
    clock: Callable[[], float] = time.time,
    *,
    allow_roots: Sequence[Path] | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """An in-process server on a free loopback port with its own state file.

    Streams may read local directories under ``allow_roots`` only, ``[tmp]`` unless given (``[]``: none),
    as ``serve --allow-root`` would allow them.
    """
    # A short keepalive keeps delivery confirmation (keepalive + ping timeout + slack) to ~3 s.
    overrides.setdefault("keepalive_s", 1.0)
    settings = ServerSettings(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        state=overrides.pop("state", tmp / "state.db"),
        allow_roots=tuple(allow_roots if allow_roots is not None else [tmp]),
        **overrides,
    )
    running = await start_server(settings, Metrics(), clock=clock)
    try:
        yield running
    finally:
        await running.stop(1.0)


@dataclass
class Stream:
    """One StartEventSource call; events are parsed CloudEvent dicts, in arrival order."""

    call: Any
    channel: grpc.aio.Channel
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    received: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    status: grpc.StatusCode | None = None
    details: str | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def _pump(self) -> None:
        try:
            async for msg in self.call:
                event = json.loads(msg.payload)
                event["_name"] = msg.name
                self.received.append(event)
                await self.events.put(event)
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.status, self.details = exc.code(), exc.details()
        except asyncio.CancelledError:
            self.status = grpc.StatusCode.CANCELLED
        finally:
            self.ended.set()

    async def next(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next event; fails the test if none arrives in ``timeout`` or the stream ends."""
        get = asyncio.ensure_future(self.events.get())
        end = asyncio.ensure_future(self.ended.wait())
        done, _ = await asyncio.wait({get, end}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            end.cancel()
            return get.result()
        get.cancel()
        end.cancel()
        if self.ended.is_set() and self.events.empty():
            raise AssertionError(f"stream ended ({self.status}: {self.details}) while waiting for an event")
        raise AssertionError(f"no event within {timeout}s; received so far: {[e['subject'] for e in self.received]}")

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """Events up to and including the first matching ``predicate``; returns that one."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            if predicate(event):
                return event

    async def until_all(self, *predicates: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> None:
        """Until every predicate has matched some event of this stream, in any order (events received
        before the call count too): for events whose relative order the server does not promise."""
        deadline = time.monotonic() + timeout
        while not all(any(p(e) for e in self.received) for p in predicates):
            await self.next(max(0.01, deadline - time.monotonic()))

    async def wait_end(self, timeout: float = 20.0) -> grpc.StatusCode | None:
        await asyncio.wait_for(self.ended.wait(), timeout)
        return self.status

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.channel.close()


async def open_stream(
    port: int,
    config: dict[str, Any] | str | bytes,
    name: str = "files",
    token: str | None = None,
    own_connection: bool = False,
) -> Stream:
    """Open a StartEventSource stream as Argo's client does (optionally with a bearer token).

    ``own_connection``: a new TCP connection even while another channel of this process has one open
    to the same address (gRPC shares them), as a new client pod behind a Service would have."""
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else None
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    stub = generic_pb2_grpc.EventingStub(channel)
    if isinstance(config, dict):
        config = yaml.safe_dump(config)
    raw = config.encode() if isinstance(config, str) else config
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    call = stub.StartEventSource(generic_pb2.EventSource(name=name, config=raw), metadata=metadata)
    stream = Stream(call, channel)
    stream.task = asyncio.create_task(stream._pump())
    return stream


@contextlib.asynccontextmanager
async def stream_to(port: int, config: dict[str, Any] | str, **kw: Any) -> AsyncIterator[Stream]:
    stream = await open_stream(port, config, **kw)
    try:
        yield stream
    finally:
        await stream.close()


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a condition that has no event of its own to await."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class ServerProcess:
    """``ftpsource serve`` as a real subprocess, for kill -9 and SIGTERM tests.

    Streams may read local directories under ``allow_roots`` (``--allow-root``), the log file's
    directory (the test's tmp_path) unless given.
    """

    def __init__(
        self,
        state: Path | str,
        log_path: Path,
        extra: list[str] | None = None,
        allow_roots: Sequence[Path] | None = None,
    ) -> None:
        self.state, self.log_path, self.extra = state, log_path, extra or []
        roots = allow_roots if allow_roots is not None else [Path(log_path).parent]
        self.extra += [arg for root in roots for arg in ("--allow-root", str(root))]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> int:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        start_at = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ftpsource.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "",
                "--state",
                str(self.state),
                "--log-format",
                "json",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(start_at)
                text = f.read().decode("utf-8", "replace")
            m = re.search(r"serving gRPC on port (\d+)", text)
            if m:
                self.port = int(m.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early: {text}")
            time.sleep(0.05)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc


async def all_delivered(srv: RunningServer, timeout: float = 20.0) -> None:
    """Wait until every decided event is confirmed delivered (the stream stayed open long enough)."""

    def done() -> bool:
        settings = srv.app.settings
        store = open_store_read_only(settings.state, settings.state_password_file)
        try:
            return all(s.undelivered == 0 for s in store.list_sources())
        finally:
            store.close()

    await eventually(done, timeout, what="outbox to drain")


async def settle(
    port: int, event_id: str, outcome: str, *, token: str | None = None, message: str = ""
) -> settlement_pb2.SettleResponse:
    """``ftpsource.v1.Settlement/Settle`` through a real gRPC client; raises ``grpc.aio.AioRpcError``."""
    outcomes = {
        "succeeded": settlement_pb2.SUCCEEDED,
        "failed": settlement_pb2.FAILED,
        "unspecified": settlement_pb2.OUTCOME_UNSPECIFIED,
    }
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = settlement_pb2_grpc.SettlementStub(channel)
        request = settlement_pb2.SettleRequest(event_id=event_id, outcome=outcomes[outcome], message=message)
        reply: settlement_pb2.SettleResponse = await stub.Settle(request, metadata=metadata, timeout=20)
        return reply


def versions(srv: RunningServer, source_id: str, path: str) -> list[VersionRow]:
    """The state's record of each reported version of ``path`` (read-only, like `state show`)."""
    settings = srv.app.settings
    store = open_store_read_only(settings.state, settings.state_password_file)
    try:
        return store.versions(source_id, path)
    finally:
        store.close()


async def ready_events(stream: Stream, *paths: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The ready events of ``paths``, whatever order they arrive in (returned in the order asked)."""
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while set(paths) - set(got):
        event = await stream.next(max(0.01, deadline - time.monotonic()))
        if event["type"] == "ftpsource.file.ready":
            got[event["subject"]] = event
    return [got[p] for p in paths]


def ready(path: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate for ``Stream.until``: the ready event of ``path``."""
    return lambda e: e["type"] == "ftpsource.file.ready" and e["data"].get("path") == path


class Proxy:
    """A TCP proxy that can refuse and drop connections (``cut``), silently stop relaying (``freeze``), or
    turn the connections open now into dead network paths (``blackhole``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.target_port = host, port
        self.down = False
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.conns: set[asyncio.StreamWriter] = set()
        self.dead: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    @classmethod
    async def start(cls, host: str, port: int) -> Proxy:
        p = cls(host, port)
        p.server = await asyncio.start_server(p._handle, "127.0.0.1", 0)
        p.port = p.server.sockets[0].getsockname()[1]
        return p

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)
            writer.close()  # never left for the garbage collector (a ResourceWarning in a later test)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            return
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            return
        if self.down or self._closing.is_set():  # cut or closed while connecting
            up_w.close()
            return
        pair = {writer, up_w}
        self.conns.update(pair)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    await self.flowing.wait()  # frozen: bytes stop here, as on a dead network path
                    if w in self.dead:
                        # Blackholed: these bytes never arrive, nothing more is read (the peers' buffers
                        # fill as on a partitioned network) and neither side sees a FIN or a RST.
                        await self._closing.wait()
                        return
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:
            up_w.close()
            self.conns.difference_update(pair)
            self.dead.difference_update(pair)

    async def cut(self) -> None:
        self.down = True
        for w in list(self.conns):
            w.close()

    def restore(self) -> None:
        self.down = False
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def blackhole(self) -> None:
        """The connections open now go dead in both directions, without closing; new ones work."""
        self.dead.update(self.conns)

    async def close(self) -> None:
        for w in list(self.dead):
            w.transport.abort()  # a dead path's bytes must not be flushed on the way out
        self._closing.set()
        self.flowing.set()
        await self.cut()
        assert self.server is not None
        self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()
