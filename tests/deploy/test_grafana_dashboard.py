"""deploy/components/grafana: the dashboard ConfigMap Grafana's sidecar loads. Every PromQL expression
parses (promtool) and names only metrics ftpsource exports; the panels an on-call person needs are there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ftpsource.metrics import Metrics
from tests.support.deploy import Tree, require

# Grafana's template variables, replaced by what they stand for before PromQL sees them.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$source": ".*", "${source}": ".*"}


def dashboard(tree: Tree) -> dict[str, Any]:
    (cm,) = [c for c in tree.of_kind("ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert cm["metadata"]["name"] == "ftpsource-grafana-dashboard"
    (text,) = cm["data"].values()
    doc: dict[str, Any] = json.loads(text)
    return doc


def expressions(doc: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return exprs


def promql(expr: str) -> str:
    label_values = re.fullmatch(r"label_values\((\w+), *\w+\)", expr)
    if label_values:  # a Grafana query function: the metric it reads is what must exist
        return f"count by (source) ({label_values.group(1)})"
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def exported() -> set[str]:
    """Every series name ftpsource's registry can expose, from each family's type."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def test_the_monitoring_overlay_ships_the_dashboard(monitoring: Tree) -> None:
    doc = dashboard(monitoring)
    assert doc["uid"] == "ftpsource" and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in doc["panels"])
    for wanted in ("events by type", "missing", "late", "at risk", "pending", "outbox", "poll errors"):
        assert wanted in titles, wanted
    assert "detection latency" in titles and "since last good poll" in titles
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_expression_parses(monitoring: Tree, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require(promtool, "promtool (Debian package prometheus) is not on PATH")
    assert promtool is not None
    exprs = expressions(dashboard(monitoring))
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"panel:{i}", "expr": promql(e)} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(exprs)} rules found" in out.stdout + out.stderr


def test_a_broken_expression_would_be_caught(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require(promtool, "promtool (Debian package prometheus) is not on PATH")
    assert promtool is not None
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum by (x (up)"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=60).returncode != 0


def test_every_metric_is_one_ftpsource_exports(monitoring: Tree) -> None:
    used = {m for e in expressions(dashboard(monitoring)) for m in re.findall(r"\bftpsource_\w+", e)}
    known = exported()
    assert used and used <= known, f"not exported: {sorted(used - known)}"
    # Each metric the panels need is actually used.
    for metric in (
        "ftpsource_events_total",
        "ftpsource_expected",
        "ftpsource_files_pending",
        "ftpsource_outbox_pending",
        "ftpsource_source_errors_total",
        "ftpsource_detection_latency_seconds_bucket",
        "ftpsource_last_successful_poll_timestamp_seconds",
    ):
        assert metric in used, metric
