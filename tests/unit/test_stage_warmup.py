"""The S3 client's weight is paid only by servers that stage, and before their first stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftpsource import stage
from tests.support.harness import REPO


def test_a_server_that_does_not_stage_does_not_import_the_s3_client() -> None:
    code = "import json, sys, ftpsource.cli, ftpsource.server, ftpsource.watcher\n"
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert [m for m in json.loads(out) if m.split(".")[0] in ("aiobotocore", "aiohttp")] == []


def test_warm_up_only_with_a_credential_set_that_can_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[bool] = []
    monkeypatch.setattr(stage, "_session", lambda: loaded.append(True))
    (tmp_path / "ftp").mkdir()
    (tmp_path / "ftp" / "password").write_text("pw")
    assert not stage.warm_up(None) and not stage.warm_up(tmp_path / "missing") and not stage.warm_up(tmp_path)
    assert loaded == []
    (tmp_path / "minio").mkdir()
    (tmp_path / "minio" / "access_key").write_text("key")
    assert stage.warm_up(tmp_path) and loaded == [True]
