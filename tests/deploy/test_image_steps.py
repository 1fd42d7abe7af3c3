"""The image's install and start steps, run the same way in a fresh venv (no Docker engine here)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _dockerfile_healthcheck() -> list[str]:
    text = (REPO / "Dockerfile").read_text()
    m = re.search(r'HEALTHCHECK .*?CMD \["python", "-c", "(.*?)"\]', text, flags=re.S)
    assert m, "HEALTHCHECK CMD not found"
    return ["-c", m.group(1)]


@pytest.mark.slow
def test_fresh_venv_install_starts_and_answers_health_checks(tmp_path: Path) -> None:
    venv = tmp_path / "opt-ftpsource"
    # Without the test run's PYTHONPATH (the source tree), pip would see ftpsource as installed already.
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    # The builder stage: the dependencies at their pinned versions, then a wheel of the tree installed
    # without dependencies, checked, then bytecode compiled.
    requirements = tmp_path / "requirements.txt"
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements.write_text("\n".join(dependencies) + "\n")
    constraints = str(REPO / "constraints.txt")
    subprocess.run(
        [*pip, "install", "-c", constraints, "-r", str(requirements)], check=True, timeout=600, env=clean_env
    )
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(REPO)],
        check=True,
        timeout=300,
        env=clean_env,
    )
    (wheel,) = (tmp_path / "wheels").glob("ftpsource-*.whl")
    subprocess.run([*pip, "install", "--no-deps", str(wheel)], check=True, timeout=600, env=clean_env)
    subprocess.run([*pip, "check"], check=True, timeout=60, env=clean_env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "ftpsource"), "--help"], check=True, capture_output=True, env=clean_env)

    # The final stage's CMD, with its paths under tmp and free loopback ports.
    state, creds, auth = tmp_path / "var-lib", tmp_path / "credentials", tmp_path / "auth"
    for d in (state, creds, auth):
        d.mkdir()
    (auth / "token").write_text("t0ken")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = {
        **clean_env,
        "PYTHONDONTWRITEBYTECODE": "1",
        "FTPSOURCE_LOG_FORMAT": "json",
        "FTPSOURCE_METRICS_LISTEN": f"127.0.0.1:{ports[1]}",
        "FTPSOURCE_LISTEN": f"127.0.0.1:{ports[0]}",
    }
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "ftpsource"),
            "serve",
            "--state",
            str(state / "ftpsource.db"),
            "--credentials-dir",
            str(creds),
            "--auth-token-file",
            str(auth / "token"),
            "--log-format",
            "json",
        ],
        env=env,
        cwd=state,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("server did not become ready") from None
                time.sleep(0.1)
        healthcheck = _dockerfile_healthcheck()
        healthcheck[1] = healthcheck[1].replace("127.0.0.1:9090", f"127.0.0.1:{ports[1]}")
        assert subprocess.run([str(venv / "bin" / "python"), *healthcheck], timeout=10).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"t0ken" not in err
    assert not list(state.glob("**/*.pyc")), "the running server wrote bytecode (read-only root would fail)"


@pytest.mark.slow
def test_test_ftp_image_install_step_verifies_its_hash(tmp_path: Path) -> None:
    """The example FTP server image's RUN step: pyftpdlib by version and hash, then its entry point."""
    dockerfile = (REPO / "deploy" / "examples" / "etl" / "test-ftp" / "Dockerfile").read_text()
    assert "pip install --require-hashes -r /tmp/requirements.txt" in dockerfile
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    requirements = REPO / "deploy" / "examples" / "etl" / "test-ftp" / "requirements.txt"
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--require-hashes", "-r", str(requirements)], check=True, timeout=300, env=clean_env
    )
    entrypoint = re.search(r'^ENTRYPOINT \["python", "-m", "(\w+)"\]$', dockerfile, flags=re.M)
    assert entrypoint is not None
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", entrypoint.group(1), "--help"],
        capture_output=True,
        text=True,
        env=clean_env,
    )
    assert result.returncode == 0 and "--range" in result.stdout, result.stderr
