"""Prometheus metrics (prefix ``ftpsource_``) and the HTTP endpoint for /metrics, /healthz, /readyz, and
the status page (``/`` and ``/status.json``, see status.py).

Labels carry source ids and event types only: never URLs with users, paths or anything secret.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .status import render_html

__all__ = ["Metrics", "MetricsServer"]


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
        # Gauges that describe a source's current state: they go when the source's stream goes, so a
        # removed source leaves no stale value behind for an alert to fire on forever.
        self._per_source_gauges = (self.files_tracked, self.files_pending, self.outbox_pending, self.last_ok_poll)

    def forget_source(self, source_id: str) -> None:
        """Drop the current-state series of a source whose stream ended (counters keep their totals)."""
        for gauge in self._per_source_gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(source_id)

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
        self._httpd = ThreadingHTTPServer((host, port), Handler)
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
