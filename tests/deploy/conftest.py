"""Fixtures for the deploy/ tests: kustomize-rendered trees and the Argo JSON schemas.

Tools missing on a developer's machine (kubectl, promtool, the shared schemas) skip the tests that need
them; in CI (``FTPSOURCE_REQUIRE_REAL_SERVERS=1``) they fail instead, so a missing install step shows.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import DEPLOY, MIN_KUSTOMIZE, SCHEMAS, TREES, Tree, kustomize_command, require, version_tuple


@pytest.fixture(scope="session")
def kustomize() -> Callable[[str], tuple[list[dict[str, Any]], str]]:
    """``kustomize("examples/etl")`` -> (objects, stderr) of ``kubectl kustomize deploy/examples/etl``."""
    command, version = kustomize_command()
    require(command, version)
    assert command is not None
    found = version_tuple(version)
    require(found >= MIN_KUSTOMIZE, f"kustomize {version} is older than {'.'.join(map(str, MIN_KUSTOMIZE))}")

    @functools.cache
    def render(tree: str) -> tuple[list[dict[str, Any]], str]:
        out = subprocess.run([*command, str(DEPLOY / tree)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"kustomize {tree} failed:\n{out.stderr}"
        objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]
        return objects, out.stderr

    return render


@pytest.fixture(scope="session")
def kustomize_dir() -> Callable[[Path], list[dict[str, Any]]]:
    """Render a kustomization outside deploy/ (an overlay a test writes)."""
    command, version = kustomize_command()
    require(command, version)
    assert command is not None

    def render(path: Path) -> list[dict[str, Any]]:
        out = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"kustomize {path} failed:\n{out.stderr}"
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]

    return render


@pytest.fixture(scope="session")
def trees(kustomize: Callable[[str], tuple[list[dict[str, Any]], str]]) -> dict[str, Tree]:
    return {name: Tree(name, kustomize(name)[0]) for name in TREES}


@pytest.fixture(scope="session")
def base(trees: dict[str, Tree]) -> Tree:
    return trees["base"]


@pytest.fixture(scope="session")
def monitoring(trees: dict[str, Tree]) -> Tree:
    return trees["overlays/monitoring"]


@pytest.fixture(scope="session")
def etl(trees: dict[str, Tree]) -> Tree:
    return trees["examples/etl"]


def _strict(schema: Any) -> Any:
    """Forbid unknown fields wherever a definition lists its fields, as the API server's strict
    field validation does: a misspelt key (``dependencyname``) must fail, not pass as extra data."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: _strict(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_strict(sub) for sub in out[key]]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def _load_schema(filename: str) -> dict[str, Any]:
    path = SCHEMAS / filename
    with path.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    strict: dict[str, Any] = _strict(schema)
    return strict


MONITORING_SCHEMA = Path(__file__).with_name("schemas") / "monitoring.coreos.com.schema.json"


@pytest.fixture(scope="session")
def monitoring_validator() -> Callable[[dict[str, Any]], list[str]]:
    """Validate a Prometheus Operator object (ServiceMonitor, PodMonitor, PrometheusRule) against the
    schema in tests/deploy/schemas; returns the error messages (empty when valid)."""
    import jsonschema

    definitions = _strict(json.loads(MONITORING_SCHEMA.read_text(encoding="utf-8")))["definitions"]

    def validate(obj: dict[str, Any]) -> list[str]:
        schema = {"$ref": f"#/definitions/{obj['kind']}", "definitions": definitions}
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]

    return validate


@pytest.fixture(scope="session")
def argo_validator() -> Callable[[dict[str, Any]], list[str]]:
    """Validate an Argo object against its definition; returns the error messages (empty when valid)."""
    require(SCHEMAS.is_dir(), f"Argo schemas not found at {SCHEMAS}")
    import jsonschema

    files = {
        "EventBus": ("argo-events.schema.json", "io.argoproj.events.v1alpha1.EventBus"),
        "EventSource": ("argo-events.schema.json", "io.argoproj.events.v1alpha1.EventSource"),
        "Sensor": ("argo-events.schema.json", "io.argoproj.events.v1alpha1.Sensor"),
        "Workflow": ("argo-workflows.schema.json", "io.argoproj.workflow.v1alpha1.Workflow"),
        "WorkflowTemplate": ("argo-workflows.schema.json", "io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
    }
    validators: dict[str, Any] = {}
    for kind, (filename, key) in files.items():
        definitions = _load_schema(filename)["definitions"]
        assert key in definitions, f"{filename} has no definition {key}"
        schema = {"$ref": f"#/definitions/{key}", "definitions": definitions}
        validators[kind] = jsonschema.Draft7Validator(schema)

    def validate(obj: dict[str, Any]) -> list[str]:
        validator = validators[obj["kind"]]
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]

    return validate
