"""Prometheus metrics (prefix ``ftpsource_``) and the HTTP endpoint for /metrics, /healthz, /readyz, and
the status page (``/`` and ``/status.json``, see status.py).

Labels carry source ids and event types only: never URLs with users, paths or anything secret.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .status import render_html

__all__ = ["EXPECTED_SERIES", "Metrics", "MetricsServer", "bind_http"]

#: The (kind, status) label pairs of ``ftpsource_expected``: every one is set, zeros included, so a
#: panel or an alert sees a status go back to 0.
EXPECTED_SERIES = tuple(
    [("file", s) for s in ("waiting", "at_risk", "on_time", "late", "missing")]
    + [("set", s) for s in ("waiting", "at_risk", "complete", "late", "missing", "amended")]
)


class _DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # `::` then takes IPv4 too (as ::ffff:a.b.c.d), whatever the host's bindv6only default says.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def bind_http(host: str, port: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """An HTTP server on ``host``: an IPv6 literal binds IPv6, ``::`` every address of both families,
    falling back to 0.0.0.0 on a host without IPv6. Raises ``OSError`` when it cannot listen."""
    if ":" not in host:
        return ThreadingHTTPServer((host, port), handler)
    try:
        return _DualStackHTTPServer((host, port), handler)
    except OSError as exc:
        if host != "::" or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
            raise
    return ThreadingHTTPServer(("0.0.0.0", port), handler)


class Metrics:
    """Every metric ftpsource exports, on its own registry, so several servers in one process never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "ftpsource_events_total", "Events committed to the outbox.", ["source", "type", "reason"], registry=r
        )
        self.polls = Counter("ftpsource_polls_total", "Polls by outcome.", ["source", "outcome"], registry=r)
        self.poll_duration = Histogram(
            "ftpsource_poll_duration_seconds",
            "Time to list and decide one poll.",
            ["source"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.files_tracked = Gauge("ftpsource_files_tracked", "Files currently tracked.", ["source"], registry=r)
        self.files_pending = Gauge(
            "ftpsource_files_pending", "Files seen but not yet complete.", ["source"], registry=r
        )
        self.bytes_hashed = Counter(
            "ftpsource_bytes_hashed_total", "Bytes read to hash or verify.", ["source"], registry=r
        )
        self.detection_latency = Histogram(
            "ftpsource_detection_latency_seconds",
            "From first seen to ready event committed.",
            ["source"],
            registry=r,
            buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
        )
        self.outbox_pending = Gauge(
            "ftpsource_outbox_pending", "Events decided but not yet written to a stream.", ["source"], registry=r
        )
        self.source_errors = Counter(
            "ftpsource_source_errors_total", "Adapter and state errors by kind.", ["source", "kind"], registry=r
        )
        self.streams_active = Gauge("ftpsource_streams_active", "Open StartEventSource streams.", registry=r)
        self.last_ok_poll = Gauge(
            "ftpsource_last_successful_poll_timestamp_seconds",
            "Unix time of the last complete poll.",
            ["source"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "ftpsource_event_loop_lag_seconds",
            "How late the event loop ran a timer at its last wake-up (or is late now).",
            registry=r,
        )
        self.loop_lag_worst = Gauge(
            "ftpsource_event_loop_lag_max_seconds",
            "The worst event-loop lag over the last minute.",
            registry=r,
        )
        self.expected = Gauge(
            "ftpsource_expected",
            "Today's expected files and sets (deadline within the last day, ahead, or still waiting) by status:"
            " waiting, at_risk, on_time, late, missing, complete, amended.",
            ["source", "kind", "status"],
            registry=r,
        )
        self.settlements = Counter(
            "ftpsource_settlements_total",
            "Settle calls that recorded an outcome, by outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.post_actions = Counter(
            "ftpsource_post_actions_total",
            "Moves and deletes of settled files, by result (ok, changed, failed, retry).",
            ["source", "action", "result"],
            registry=r,
        )
        self.unsettled = Gauge(
            "ftpsource_unsettled_versions",
            "Delivered versions whose source has on_success/on_failure actions and that are not settled yet.",
            ["source"],
            registry=r,
        )
        self.unsettled_oldest = Gauge(
            "ftpsource_unsettled_oldest_delivered_timestamp_seconds",
            "Unix time the oldest unsettled version was delivered (0 when none).",
            ["source"],
            registry=r,
        )
        # Gauges that describe a source's current state: they go when the source's stream goes, so a
        # removed source leaves no stale value behind for an alert to fire on forever. Not the unsettled
        # ones: versions stay unsettled without a stream, and that is what their alert is about.
        self._per_source_gauges = (self.files_tracked, self.files_pending, self.outbox_pending, self.last_ok_poll)

    def forget_source(self, source_id: str) -> None:
        """Drop the current-state series of a source whose stream ended (counters keep their totals)."""
        for gauge in self._per_source_gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(source_id)
        for kind, status in EXPECTED_SERIES:
            with contextlib.suppress(KeyError):
                self.expected.remove(source_id, kind, status)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """A small threaded HTTP server: /metrics, /healthz (``alive()`` true), /readyz (``ready()`` true).

    It runs on its own thread, so it answers even while the event loop is stuck; ``alive`` is what
    tells the two apart.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = self.path.split("?")[0]
                if route in ("/", "/status.json") and outer.status is not None:
                    self._status(route, outer.status)
                elif route == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = outer.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"event loop stalled\n")
                elif self.path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _status(self, route: str, status: Callable[[], dict[str, Any]]) -> None:
                try:
                    doc = status()
                except TimeoutError:
                    self._send(503, b"event loop busy, try again\n")
                    return
                if route == "/":
                    self._send(200, render_html(doc), "text/html; charset=utf-8")
                else:
                    self._send(200, json.dumps(doc, indent=1).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                # The status page needs nothing but its own inline styles: no scripts, frames or fetches.
                self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.metrics = metrics
        self.ready = ready
        self.alive = alive
        self.status = status
        self._httpd = bind_http(host, port, Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ftpsource-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
