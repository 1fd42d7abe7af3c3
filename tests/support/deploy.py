"""Paths, the skip-or-fail rule and small helpers shared by the deploy tests."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REQUIRE_REAL_SERVERS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# CI lays shared/ beside the clone, as it is beside the work tree here; FTPSOURCE_SCHEMAS overrides
# that for a checkout that lives elsewhere.
SCHEMAS = Path(os.environ.get("FTPSOURCE_SCHEMAS") or Path(__file__).resolve().parents[2].parent / "shared" / "schemas")
REQUIRE_TOOLS = REQUIRE_REAL_SERVERS

# Components (kustomize 3.7) and `labels[].includeTemplates` (kustomize 5.0) are used by deploy/.
MIN_KUSTOMIZE = (5, 0)


def require(condition: object, reason: str) -> None:
    """Skip when ``condition`` is false, or fail when CI says every tool must be there."""
    if condition:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason} (required: FTPSOURCE_REQUIRE_REAL_SERVERS=1)")
    pytest.skip(reason)


def version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups(default="0")) if match else ()


@functools.cache
def kustomize_command() -> tuple[list[str] | None, str]:
    """The command that renders a kustomization, and its kustomize version (or why there is none)."""
    # A kubectl wheel installed into the virtualenv lands beside the interpreter, maybe not on PATH.
    beside_python = Path(sys.executable).with_name("kubectl")
    kubectl = shutil.which("kubectl") or (str(beside_python) if beside_python.exists() else None)
    if kubectl:
        out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            version = json.loads(out.stdout).get("kustomizeVersion", "")
            if version:
                return [kubectl, "kustomize"], version
    standalone = shutil.which("kustomize")
    if standalone:
        out = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return [standalone, "build"], out.stdout.strip()
    return None, "neither kubectl (with built-in kustomize) nor kustomize is on PATH"


class Tree:
    """The objects of one rendered kustomization, with look-ups by kind and name."""

    def __init__(self, name: str, objects: list[dict[str, Any]]) -> None:
        self.name = name
        self.objects = objects

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj.get("kind") == kind]

    def names(self, kind: str) -> set[str]:
        return {obj["metadata"]["name"] for obj in self.of_kind(kind)}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found[0] if found else None


TREES = ("base", "overlays/monitoring", "examples/etl")


class ClusterIPForwarder:
    """What a ClusterIP Service does to traffic, on loopback: it answers on ``cluster_ip`` only at the
    ports the Service declares, and relays each to its target port on ``pod_ip``. A port the Service
    does not declare is refused, as it is in a cluster.

    ``ports`` maps a Service port to the pod's port. A privileged Service port (below 1024) listens on
    a free port instead when the tests do not run as root; ``listening[port]`` tells where.
    """

    def __init__(self, cluster_ip: str, pod_ip: str, ports: dict[int, int]) -> None:
        self.cluster_ip, self.pod_ip, self.ports = cluster_ip, pod_ip, ports
        self.listening: dict[int, int] = {}
        self._servers: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> ClusterIPForwarder:
        for port, target in self.ports.items():
            try:
                server = socket.create_server((self.cluster_ip, port))
            except PermissionError:
                if port >= 1024:
                    raise
                server = socket.create_server((self.cluster_ip, 0))
            self.listening[port] = server.getsockname()[1]
            self._servers.append(server)
            threading.Thread(target=self._accept, args=(server, target), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            # A thread blocked in accept() keeps a merely closed socket listening; shutdown wakes it.
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            for conn in self._conns:
                conn.close()

    def _accept(self, server: socket.socket, target: int) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((self.pod_ip, target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update({client, upstream})
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end of a transfer on: FTP data ends with EOF
        except OSError:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
