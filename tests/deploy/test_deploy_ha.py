"""deploy/overlays/ha: several replicas on PostgreSQL, checked as rendered, then run for real.

The base's checks (tests/deploy/test_deploy_manifests.py) assume one SQLite replica; this overlay is
the other shape, so it has its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import PgDatabase
from tests.support.servers import free_port

TREE = "overlays/ha"
K8S_VERSION = "1.32.0"
POD_LABELS_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/component")


@pytest.fixture(scope="module")
def ha(kustomize: Any) -> list[dict[str, Any]]:
    objects, stderr = kustomize(TREE)
    assert "warning" not in stderr.lower(), stderr
    return list(objects)


def one(objects: list[dict[str, Any]], kind: str, name: str = "ftpsource") -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "ftpsource")


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_objects_match_the_kubernetes_schema(ha: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    latest = kubernetes_validate.latest_version()
    version = K8S_VERSION if tuple(map(int, latest.split(".")))[:2] >= (1, 32) else latest
    names = [(o["kind"], o["metadata"]["name"]) for o in ha]
    assert len(names) == len(set(names))
    for obj in ha:
        kubernetes_validate.validate(obj, version, strict=True)


def test_replicas_roll_without_a_gap_and_spread_over_nodes(ha: list[dict[str, Any]]) -> None:
    deployment = one(ha, "Deployment")
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spread = {c["topologyKey"]: c for c in spec["template"]["spec"]["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert "topology.kubernetes.io/zone" in spread
    for constraint in spread.values():
        assert matches(constraint["labelSelector"], labels) and constraint["maxSkew"] == 1

    pdb = one(ha, "PodDisruptionBudget")
    assert matches(pdb["spec"]["selector"], labels)
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]  # a drain can proceed, one pod stays


def test_no_volume_state_comes_from_the_secret(ha: list[dict[str, Any]]) -> None:
    assert not [o for o in ha if o["kind"] == "PersistentVolumeClaim"]
    pod = one(ha, "Deployment")["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    c = container(ha)
    assert not [a for a in c["args"] if a.startswith("--state=")]
    (state,) = [e for e in c["env"] if e["name"] == "FTPSOURCE_STATE"]
    assert state["valueFrom"]["secretKeyRef"] == {"name": "ftpsource-state", "key": "url"}
    (password_flag,) = [a for a in c["args"] if a.startswith("--state-password-file=")]
    password_path = Path(password_flag.partition("=")[2])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(password_path.parent)]
    assert mount.get("readOnly") is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert vol["secret"]["secretName"] == "ftpsource-state"
    assert {"key": "password", "path": password_path.name} in vol["secret"]["items"]
    # The Secret holds a password, so the overlay does not ship one: it is created out of band.
    assert not [o for o in ha if o["kind"] == "Secret" and o["metadata"]["name"] == "ftpsource-state"]
    mounted = {m["name"] for m in c["volumeMounts"]}
    assert mounted <= {v["name"] for v in pod["volumes"]}


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_two_pods_with_the_overlay_args_serve_from_one_database(
    ha: list[dict[str, Any]], pg_db: PgDatabase, tmp_path: Path
) -> None:
    """Run the container's args and env twice against a real PostgreSQL (paths moved under a temp dir,
    the Secret's values from the test database): both replicas come up ready on the shared state."""
    c = container(ha)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    (tmp_path / "credentials").mkdir()
    moved = {
        "--state-password-file": str(pg_db.password_file),
        "--auth-token-file": str(token),
        "--credentials-dir": str(tmp_path / "credentials"),
    }
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    env["FTPSOURCE_STATE"] = pg_db.url  # what the Secret's `url` key holds
    procs, ports = [], []
    try:
        for i in range(2):
            grpc_port, metrics_port = free_port(), free_port()
            args = []
            for arg in c["args"]:
                key, eq, value = arg.partition("=")
                if key == "--listen":
                    value = f"127.0.0.1:{grpc_port}"
                elif key == "--metrics-listen":
                    value = f"127.0.0.1:{metrics_port}"
                args.append(f"{key}={moved.get(key, value)}" if eq else arg)
            with (tmp_path / f"pod{i}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "ftpsource.cli", *args],
                        env={**os.environ, **env},
                        stdout=log,
                        stderr=log,
                    )
                )
            ports.append(metrics_port)
        deadline = time.monotonic() + 30
        waiting = set(ports)
        while waiting and time.monotonic() < deadline:
            for proc in procs:
                assert proc.poll() is None, (tmp_path / "pod0.log").read_text() + (tmp_path / "pod1.log").read_text()
            for port in list(waiting):
                try:
                    if _status(f"http://127.0.0.1:{port}/readyz") == 200:
                        waiting.discard(port)
                except OSError:
                    pass
            time.sleep(0.1)
        assert not waiting, "a replica never became ready"
        with pg_db.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        assert row is not None  # the replicas created the schema in the Secret's database
        logs = "".join((tmp_path / f"pod{i}.log").read_text() for i in range(2))
        assert pg_db.password not in logs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
