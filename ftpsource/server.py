"""The gRPC layer: Argo's ``generic.Eventing/StartEventSource``, ``ftpsource.v1.Settlement/Settle``,
auth, supersede, health, shutdown.

Thin on purpose: it parses the request, authorises it, and hands the stream to a ``Watcher`` (or the
settle to the store, waking the source's watcher to act on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from . import stage
from ._proto import generic_pb2, generic_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from .config import ServerSettings, SourceConfig, parse_source_config, quote_short
from .core.settle import Outcome
from .core.text import printable
from .credentials import Credentials, load_credentials
from .errors import ConfigError, LeaseLost, PermanentSourceError, PolicyError, StateError
from .loopmon import LoopMonitor
from .metrics import Metrics, MetricsServer
from .policy import authorize, check_exposure
from .stage import load_stage_credentials
from .status import collect
from .store import AsyncStore, OutboxRow
from .watcher import Watcher, freeze_long_lived, refresh_unsettled, run_session

__all__ = ["App", "EventingServicer", "Sessions", "SettlementServicer", "Superseded", "serve", "start_server"]

log = logging.getLogger(__name__)

# One thread admits streams (parses configs, reads credential sets), one at a time: Python code in a
# thread still takes turns with the event loop for the GIL, and a burst of large configs parsed on
# many threads at once would leave the loop one turn in many.
_ADMISSION = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftpsource-admit")

SERVICE_NAME = "generic.Eventing"
SETTLEMENT_SERVICE = "ftpsource.v1.Settlement"
#: A settle message is kept for `state show`; longer text is cut, not refused.
MAX_MESSAGE = 2000
_OUTCOMES: dict[int, Outcome] = {settlement_pb2.SUCCEEDED: "succeeded", settlement_pb2.FAILED: "failed"}
#: How long the status page waits for the event loop before answering 503.
STATUS_TIMEOUT_S = 5.0


#: How much longer than the confirmation time a stream whose source failed waits for its last events
#: to be confirmed before it ends anyway (they then stay in the outbox for the next stream).
SETTLE_EXTRA_S = 5.0
#: Added to keepalive + ping timeout before a written event counts as delivered: timer granularity and
#: the time grpc takes to tell a handler its connection was dropped.
CONFIRM_SLACK_S = 1.0


def ping_timeout_s(keepalive_s: float) -> float:
    return max(1.0, keepalive_s / 3)


def confirm_after_s(keepalive_s: float) -> float:
    """How long an event must stay written on a live stream to count as delivered: a whole keepalive
    cycle (the client silent for ``keepalive_s`` gets a ping, unanswered for the ping timeout it is
    dropped) plus slack. See ``Watcher.deliver`` and docs/decisions.md."""
    return keepalive_s + ping_timeout_s(keepalive_s) + CONFIRM_SLACK_S


def keepalive_options(keepalive_s: float) -> list[tuple[str, int]]:
    """Ping a client that has been silent for ``keepalive_s`` and drop it when it does not answer within
    the ping timeout, so a stream whose Argo pod vanished without closing it (node loss, network
    partition) ends, and so a stream that stays up proves its client is reading (delivery evidence)."""
    ms = int(keepalive_s * 1000)
    timeout_ms = int(ping_timeout_s(keepalive_s) * 1000)
    return [
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Without these, pings on a stream that carries no data are throttled to one a minute or less.
        ("grpc.http2.min_sent_ping_interval_without_data_ms", ms),
        ("grpc.http2.min_time_between_pings_ms", ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


#: How often a replica re-checks its streams' leases and pings the store (notifications make a
#: takeover known sooner; this catches one missed while the notification connection was down).
LEASE_CHECK_S = 3.0


class Superseded(Exception):
    """A newer stream for the same source arrived while this one was still waiting to start."""


@dataclass(eq=False)
class _Session:
    source_id: str
    superseded: bool = False
    elsewhere: bool = False  # superseded by a stream on another replica
    epoch: int | None = None
    task: asyncio.Task[None] | None = None
    watcher: Watcher | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    #: set on shutdown: stop detecting, confirm what was written, then end the stream
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: the session this one waited for, while that wait is not over; a successor waits for it too
    predecessor: _Session | None = None

    def supersede(self) -> None:
        self.superseded = True
        if self.task is not None:
            self.task.cancel()

    async def stopped(self) -> None:
        """Until this session and every one it was still waiting for have stopped."""
        session: _Session | None = self
        while session is not None:
            await session.finished.wait()
            session = session.predecessor


class Sessions:
    """At most one live stream per source id; the newest always wins.

    A stream waits for its predecessor to stop before it reads state. A stream superseded while it
    waits never starts (``open`` raises ``Superseded``), and one whose caller goes away while it waits
    still makes its successor wait for the predecessor, so two watchers of one source never overlap.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, _Session] = {}

    async def open(self, source_id: str) -> _Session:
        new = _Session(source_id)
        old = self._by_id.get(source_id)
        self._by_id[source_id] = new
        if old is not None:
            old.supersede()
            new.predecessor = old
            try:
                await old.stopped()  # the old watcher must stop before the new one reads state
            except BaseException:
                self.close(new)  # this caller went away too: leave nothing behind for the next one
                raise
            new.predecessor = None
        if new.superseded:
            self.close(new)
            raise Superseded(source_id)
        return new

    def current(self, source_id: str) -> _Session | None:
        return self._by_id.get(source_id)

    def supersede_elsewhere(self, session: _Session) -> None:
        """End a stream whose source a newer stream on another replica took over."""
        session.elsewhere = True
        session.supersede()

    def close(self, session: _Session) -> None:
        if self._by_id.get(session.source_id) is session:
            del self._by_id[session.source_id]
        session.finished.set()

    def all(self) -> list[_Session]:
        return list(self._by_id.values())

    def get(self, source_id: str) -> _Session | None:
        return self._by_id.get(source_id)


class App:
    """Process-wide state shared by every stream."""

    def __init__(
        self, settings: ServerSettings, store: AsyncStore, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.sessions = Sessions()
        self.serving = False
        #: Written into the store with each lease, so an operator can tell which replica owns a source.
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._epochs_seen: dict[str, int] = {}
        self._tokens: dict[str, str] = {}
        for flag, path in self._token_files():
            self._tokens[flag] = self._read_token(flag, path)

    def _token_files(self) -> list[tuple[str, Path]]:
        files = [
            ("--auth-token-file", self.settings.auth_token_file),
            ("--settle-token-file", self.settings.settle_token_file),
        ]
        return [(flag, path) for flag, path in files if path is not None]

    @staticmethod
    def _read_token(flag: str, path: Path) -> str:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([f"{flag}: cannot read {path} ({exc.strerror})"]) from None
        if not token:
            raise ConfigError([f"{flag}: {path} is empty"])
        return token

    def admit(self, raw: bytes) -> tuple[SourceConfig, Credentials]:
        """Parse a stream's config and apply the operator's policy; raises ``ConfigError``/``PolicyError``
        before anything is read or any connection made."""
        config = parse_source_config(raw)
        credentials = load_credentials(self.settings.credentials_dir, config.credentials)
        authorize(config, credentials, self.settings.allow_roots)
        return config, credentials

    def lease_taken(self, source_id: str, epoch: int) -> None:
        """A lease was taken (announced by the store): end our stream of that source if it is older."""
        if epoch > self._epochs_seen.get(source_id, 0):
            self._epochs_seen[source_id] = epoch
        session = self.sessions.current(source_id)
        if session is not None and session.epoch is not None and session.epoch < epoch:
            log.info("source taken over by a newer stream (epoch %d)", epoch, extra={"source": source_id})
            self.sessions.supersede_elsewhere(session)

    def lease_seen(self, source_id: str) -> int:
        return self._epochs_seen.get(source_id, 0)

    async def guard_leases(self) -> None:
        """Forever: follow lease announcements, and every ``LEASE_CHECK_S`` compare each stream's epoch
        with the store's (which also tells readiness whether the store answers)."""
        store = self.store
        listener = asyncio.create_task(store.sync.listen_leases(self.lease_taken), name="lease listener")
        try:
            while True:
                await asyncio.sleep(LEASE_CHECK_S)
                try:
                    await store.run(store.sync.ping)
                    for session in self.sessions.all():
                        if session.epoch is not None:
                            current = await store.run(store.sync.epoch, session.source_id)
                            if current is not None:
                                self.lease_taken(session.source_id, current)
                except StateError as exc:
                    log.warning("state store check failed: %s", exc)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def ready(self) -> bool:
        return self.serving and self.store.healthy

    def wake_all(self) -> None:
        """Make every source re-evaluate now (after an injected clock jumped)."""
        for session in self.sessions.all():
            if session.watcher is not None:
                session.watcher.wake()

    async def status(self) -> dict[str, Any]:
        """The status page's snapshot, built on the loop from the live watchers and the store."""
        watchers = [s.watcher for s in self.sessions.all() if s.watcher is not None]
        return await collect(watchers, self.store, self.clock())

    def status_reader(self) -> Callable[[], dict[str, Any]]:
        """For the metrics thread: ask the loop for a snapshot and wait a bounded time for it."""
        loop = asyncio.get_running_loop()

        def read() -> dict[str, Any]:
            future = asyncio.run_coroutine_threadsafe(self.status(), loop)
            try:
                return future.result(timeout=STATUS_TIMEOUT_S)
            except TimeoutError:
                future.cancel()
                raise

        return read

    def current_tokens(self) -> dict[str, str]:
        """The token files are re-read on each call so a rotated Secret applies without a restart."""
        for flag, path in self._token_files():
            with contextlib.suppress(ConfigError):
                self._tokens[flag] = self._read_token(flag, path)
        return self._tokens

    def authorized(self, metadata: Any, *, settle: bool = False) -> bool:
        """Whether the call carries the stream token, or for ``settle`` also the settle token. The
        settle token opens no stream: a Workflow holding it cannot read what a stream could."""
        tokens = self.current_tokens()
        flags = ("--auth-token-file", "--settle-token-file") if settle else ("--auth-token-file",)
        accepted = [tokens[flag] for flag in flags if flag in tokens]
        if not accepted:
            return True
        presented = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                presented = value if isinstance(value, str) else value.decode("utf-8", "replace")
        # Every token is compared, so the time taken does not say which one came close.
        matches = [hmac.compare_digest(presented.encode(), f"Bearer {t}".encode()) for t in accepted]
        return any(matches)


class EventingServicer(generic_pb2_grpc.EventingServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def StartEventSource(
        self, request: generic_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        try:
            await self._stream(request, context)
        except asyncio.CancelledError:
            # grpc cancels a handler whose client went away or whose server is stopping; the session
            # has been cleaned up by then, and grpc would otherwise print the CancelledError as a traceback.
            return

    async def _stream(self, request: generic_pb2.EventSource, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        app = self.app
        if not app.authorized(context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        try:
            # Off the loop: parsing takes milliseconds and the policy reads files; other streams wait for neither.
            loop = asyncio.get_running_loop()
            config, credentials = await loop.run_in_executor(_ADMISSION, app.admit, request.config)
            stage_credentials = await loop.run_in_executor(
                _ADMISSION, load_stage_credentials, app.settings.credentials_dir, config
            )
        except PolicyError as exc:
            log.warning("refused stream %s: %s", quote_short(request.name), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except ConfigError as exc:
            log.warning("rejected config for %s: %s", quote_short(request.name), exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        source_id = config.source_id(request.name)
        extra = {"source": source_id}
        try:
            session = await app.sessions.open(source_id)
        except Superseded:
            await context.abort(grpc.StatusCode.ABORTED, f"source {source_id}: superseded by a newer stream")
        store = app.store
        try:
            epoch = await store.run(store.sync.take_lease, source_id, config.display_url, app.owner, app.clock())
        except StateError as exc:
            app.sessions.close(session)
            log.error("cannot take the source's lease: %s", exc, extra=extra)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except BaseException:
            app.sessions.close(session)
            raise
        session.epoch = epoch
        if app.lease_seen(source_id) > epoch:  # announced while our own take was on its way back
            session.superseded = session.elsewhere = True
        confirm_s = confirm_after_s(app.settings.keepalive_s)
        watcher = Watcher(
            config,
            source_id,
            store,
            credentials,
            app.metrics,
            clock=app.clock,
            epoch=epoch,
            stage_credentials=stage_credentials,
            confirm_after_s=confirm_s,
            retention_s=app.settings.retention_s,
        )
        session.watcher = watcher
        name = request.name

        async def write(row: OutboxRow) -> None:
            await context.write(generic_pb2.Event(name=name, payload=row.payload))

        app.metrics.streams_active.inc()
        log.info("stream opened for %s", config.display_url, extra=extra)
        session_run = run_session(
            watcher,
            write,
            lambda: not context.done(),
            stop=session.stop,
            settle_timeout_s=confirm_s + SETTLE_EXTRA_S,
        )
        task = asyncio.create_task(session_run, name=f"session {source_id}")
        session.task = task
        if session.superseded:
            task.cancel()
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():  # the client went away: our own task was cancelled
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            app.metrics.streams_active.dec()
            # A superseding stream in this process owns the source's gauges now; one elsewhere does not.
            if not session.superseded or session.elsewhere:
                app.metrics.forget_source(source_id)
            app.sessions.close(session)
            log.info("stream closed", extra=extra)
        failure = None if task.cancelled() else task.exception()
        if session.superseded or isinstance(failure, LeaseLost):
            await context.abort(grpc.StatusCode.ABORTED, f"source {source_id}: superseded by a newer stream")
        if task.cancelled() or session.stop.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
        if isinstance(failure, PermanentSourceError):
            log.error("source failed: %s", failure, extra=extra)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"source {source_id}: {failure}")
        if isinstance(failure, StateError):
            log.error("state store failed: %s", failure, extra=extra)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(failure))
        if failure is not None:
            log.error("stream failed", exc_info=failure, extra=extra)
            await context.abort(grpc.StatusCode.INTERNAL, f"source {source_id}: internal error: {failure!r}")


class SettlementServicer(settlement_pb2_grpc.SettlementServicer):
    """Records how a version's Workflow ended; the source's watcher then moves or deletes the file."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def Settle(
        self, request: settlement_pb2.SettleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> settlement_pb2.SettleResponse:
        answer = await self._settle(request, context)
        if isinstance(answer, settlement_pb2.SettleResponse):
            return answer
        code, details = answer
        await context.abort(code, details)
        raise AssertionError("abort returned")  # pragma: no cover - abort always raises

    async def _settle(
        self, request: settlement_pb2.SettleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> settlement_pb2.SettleResponse | tuple[grpc.StatusCode, str]:
        app = self.app
        if not app.authorized(context.invocation_metadata(), settle=True):
            return grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"
        outcome = _OUTCOMES.get(request.outcome)
        if outcome is None:
            return grpc.StatusCode.INVALID_ARGUMENT, "outcome: must be SUCCEEDED or FAILED"
        event_id = request.event_id.strip()
        if not event_id or len(event_id) > 128:
            return grpc.StatusCode.INVALID_ARGUMENT, "event_id: required, the id of a ready event"
        store = app.store
        try:
            result = await store.run(
                store.sync.settle, event_id, outcome, printable(request.message[:MAX_MESSAGE]), app.clock()
            )
        except StateError as exc:
            return grpc.StatusCode.UNAVAILABLE, str(exc)
        row = result.row
        if row is None:
            return grpc.StatusCode.NOT_FOUND, f"no ready event with id {event_id!r}"
        if result.status == "conflict":
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                f"event {event_id} was already settled as {row.outcome}; it cannot become {outcome}",
            )
        action = row.version.action_for(row.outcome or outcome).action
        if result.status == "accepted":
            app.metrics.settlements.labels(row.source_id, outcome).inc()
            log.info(
                "settled %s (action %s)", outcome, action, extra={"source": row.source_id, "path": row.version.path}
            )
            await refresh_unsettled(store, app.metrics, row.source_id)
            session = app.sessions.get(row.source_id)
            if session is not None and session.watcher is not None:
                session.watcher.wake()  # act now; without a live stream it waits for the source's next run
        return settlement_pb2.SettleResponse(already_settled=result.status == "same", action=action)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    app: App
    health: health.aio.HealthServicer
    metrics_server: MetricsServer | None
    loop_monitor: LoopMonitor
    lease_guard: asyncio.Task[None] | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.port if self.metrics_server else None

    async def stop(self, grace: float) -> None:
        """Stop detecting, confirm what the streams were sent, end them; all within ``grace``.

        Every source stops polling at once and each stream waits until the events written to it are
        confirmed (``confirm_after_s``), then ends with ``UNAVAILABLE``, so a graceful restart repeats
        nothing. New streams are refused meanwhile; whatever is still open after ``grace`` is cancelled
        and its unconfirmed events are sent again by the next server.
        """
        self.app.serving = False
        await self.health.enter_graceful_shutdown()
        for session in self.app.sessions.all():
            session.stop.set()
        await self.server.stop(grace)
        if self.lease_guard is not None:
            self.lease_guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lease_guard
        if self.metrics_server is not None:
            self.metrics_server.stop()
        await self.loop_monitor.stop()
        self.app.store.close()


def _split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_server(
    settings: ServerSettings, metrics: Metrics | None = None, clock: Callable[[], float] = time.time
) -> RunningServer:
    """Open the store and start gRPC (and metrics) listeners. Raises ``StateError``/``ConfigError``.

    ``clock`` is injectable: every time rule reads it instead of the wall clock.
    """
    check_exposure(settings)
    metrics = metrics or Metrics()
    # Before any stream: loading the S3 client's data holds the GIL for a fraction of a second.
    await asyncio.to_thread(stage.warm_up, settings.credentials_dir)
    # What is loaded by now (modules, the S3 client's model) lives as long as the process: out of the
    # cyclic collector's reach, so no full collection walks it again (tens of milliseconds each).
    freeze_long_lived()
    store = AsyncStore.open(settings.state, settings.state_password_file)
    app = App(settings, store, metrics, clock)
    server = grpc.aio.server(options=keepalive_options(settings.keepalive_s))
    generic_pb2_grpc.add_EventingServicer_to_server(EventingServicer(app), server)  # type: ignore[no-untyped-call]
    settlement_pb2_grpc.add_SettlementServicer_to_server(SettlementServicer(app), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.tls_cert and settings.tls_key:
        creds = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
        port = server.add_secure_port(settings.listen, creds)
    else:
        port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise ConfigError([f"--listen: cannot listen on {settings.listen}"])
    await server.start()
    for name in ("", SERVICE_NAME, SETTLEMENT_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    app.serving = True
    loop_monitor = LoopMonitor(metrics, stall_s=settings.loop_stall_s)
    loop_monitor.start()
    metrics_server = None
    if settings.metrics_listen:
        host, mport = _split_hostport(settings.metrics_listen)
        try:
            metrics_server = MetricsServer(
                host, mport, metrics, ready=app.ready, alive=loop_monitor.alive, status=app.status_reader()
            )
        except OSError as exc:
            await loop_monitor.stop()
            await server.stop(None)
            problem = f"--metrics-listen: cannot listen on {settings.metrics_listen} ({exc.strerror})"
            raise ConfigError([problem]) from None
        metrics_server.start()
    log.info("serving gRPC on port %d", port)
    guard = asyncio.create_task(app.guard_leases(), name="lease guard")
    return RunningServer(server, port, app, health_servicer, metrics_server, loop_monitor, guard)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM/SIGINT, then shut down within ``settings.grace_s``."""
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.0fs)", settings.grace_s)
    t0 = time.monotonic()
    await running.stop(settings.grace_s)
    log.info("stopped in %.1fs", time.monotonic() - t0)
