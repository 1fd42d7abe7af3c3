"""The kustomize trees under deploy/: they render, every object is schema-valid, and the pieces that
refer to each other (Service, EventSource, Sensor, WorkflowTemplate, Secrets, RBAC, NetworkPolicy)
actually line up, so `kubectl apply -k` gives a stack that works rather than one that merely applies."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ftpsource.config import parse_source_config
from tests.support.contract import READY_DATA_FIELDS
from tests.support.deploy import DEPLOY, REPO, TREES, ClusterIPForwarder, require
from tests.support.s3 import moto_s3

K8S_VERSION = "1.32.0"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
# What the image's `ftpsource` console script runs.
FTPSOURCE = [sys.executable, "-c", "import sys; from ftpsource.cli import main; sys.exit(main(sys.argv[1:]))"]
ARGO_KINDS = {"EventBus", "EventSource", "Sensor", "Workflow", "WorkflowTemplate"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
NAMESPACE = "ftpsource-etl"
# The files of one credential set (<credentials-dir>/<set>/...), `hosts` being the servers it may be used for.
CREDENTIAL_FILES = {
    "hosts",
    "username",
    "password",
    "private_key",
    "known_hosts",
    "ca.pem",
    "access_key",
    "secret_key",
    "endpoint",
    "region",
}
# Secrets the base expects the operator to provide (it ships none).
PROVIDED_BY_OPERATOR = {"ftpsource-auth"}
# The pod label by which the example's NetworkPolicy admits a Workflow's settle step.
SETTLE_LABEL = "ftpsource.example/settles"

# From the product contract.
EVENT_TYPES = {"ftpsource.file.ready", "ftpsource.file.missing", "ftpsource.file.rejected", "ftpsource.file.deleted"}
METRICS = {
    "events_total",
    "polls_total",
    "poll_duration_seconds",
    "files_tracked",
    "files_pending",
    "bytes_hashed_total",
    "detection_latency_seconds",
    "outbox_pending",
    "source_errors_total",
    "streams_active",
    "last_successful_poll_timestamp_seconds",
    "event_loop_lag_seconds",
    "event_loop_lag_max_seconds",
    "settlements_total",
    "post_actions_total",
    "unsettled_versions",
    "unsettled_oldest_delivered_timestamp_seconds",
}
# What the Sensor must hand the ETL workflow, by workflow parameter name: the event id (what the exit
# handler settles) and the staged object's key (what the first step reads), never the file's URL.
WORKFLOW_INPUTS = {
    "event_id": "body.id",
    "staged_key": "body.data.staged.key",
    "checksum": "body.data.checksum.value",
    "generation": "body.data.generation",
}


# ---------------------------------------------------------------------------------------------- helpers


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('name') or obj['metadata'].get('generateName')}"


def parse_flags(args: list[str]) -> dict[str, str]:
    """``["serve", "--state=/x", "--log-format", "json"]`` -> ``{"state": "/x", "log-format": "json"}``."""
    flags: dict[str, str] = {}
    items = iter(args)
    for arg in items:
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        flags[key] = value if eq else next(items, "")
    return flags


def ftpsource_deployment(tree: Any) -> dict[str, Any]:
    return tree.get("Deployment", "ftpsource")


def ftpsource_container(tree: Any) -> dict[str, Any]:
    containers = ftpsource_deployment(tree)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "ftpsource")


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volumeMount whose directory holds ``path`` (the deepest one)."""
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(root) and (
            best is None or len(mount["mountPath"]) > len(best["mountPath"])
        ):
            best = mount
    return best


def volume(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod_spec.get("volumes", []) if v["name"] == name)


def projected_files(vol: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """File path inside a secret/projected volume -> (secret name, key)."""
    files: dict[str, tuple[str, str]] = {}
    sources = vol["projected"]["sources"] if "projected" in vol else [{"secret": vol["secret"]}]
    for source in sources:
        secret = source.get("secret")
        if secret is None:
            continue
        name = secret.get("name") or secret.get("secretName")
        for item in secret.get("items", []):
            files[item["path"]] = (name, item["key"])
    return files


def label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if (
            (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
            or (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels[key] in values)
        ):
            return False
    return True


def secret_keys(secret: dict[str, Any]) -> set[str]:
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


def secret_value(secret: dict[str, Any], key: str) -> str:
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    import base64

    return base64.b64decode(secret["data"][key]).decode()


def configmap_keys(configmap: dict[str, Any]) -> set[str]:
    return set(configmap.get("data", {})) | set(configmap.get("binaryData", {}))


def pods(tree: Any) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """(what, containers, volumes) for every pod the tree defines: Deployments and each
    WorkflowTemplate template (whose pods see template- and workflow-level volumes)."""
    found = []
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for obj in tree.of_kind(kind):
            spec = obj["spec"]["template"]["spec"]
            containers = spec.get("containers", []) + spec.get("initContainers", [])
            found.append((name_of(obj), containers, spec.get("volumes", [])))
    for obj in tree.of_kind("WorkflowTemplate"):
        for template in obj["spec"]["templates"]:
            containers = [template[k] for k in ("container", "script") if k in template]
            containers += template.get("initContainers", []) + template.get("sidecars", [])
            if containers:
                volumes = template.get("volumes", []) + obj["spec"].get("volumes", [])
                found.append((f"{name_of(obj)} template {template['name']}", containers, volumes))
    return found


def references(
    containers: list[dict[str, Any]], volumes: list[dict[str, Any]]
) -> list[tuple[str, str, str | None, bool]]:
    """(kind, name, key or None, optional) of every Secret, ConfigMap and PVC a pod uses."""
    refs: list[tuple[str, str, str | None, bool]] = []

    def keyed(kind: str, name: str, items: list[dict[str, Any]], optional: bool) -> None:
        if items:
            refs.extend((kind, name, item["key"], optional) for item in items)
        else:
            refs.append((kind, name, None, optional))

    for vol in volumes:
        if "secret" in vol:
            keyed(
                "Secret",
                vol["secret"]["secretName"],
                vol["secret"].get("items", []),
                vol["secret"].get("optional", False),
            )
        if "configMap" in vol:
            keyed(
                "ConfigMap",
                vol["configMap"]["name"],
                vol["configMap"].get("items", []),
                vol["configMap"].get("optional", False),
            )
        if "persistentVolumeClaim" in vol:
            refs.append(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"], None, False))
        for source in vol.get("projected", {}).get("sources", []):
            for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if field in source:
                    keyed(
                        kind,
                        source[field]["name"],
                        source[field].get("items", []),
                        source[field].get("optional", False),
                    )
    for container in containers:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if field in source:
                    ref = source[field]
                    refs.append((kind, ref["name"], ref["key"], ref.get("optional", False)))
        for env_from in container.get("envFrom", []):
            for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if field in env_from:
                    refs.append((kind, env_from[field]["name"], None, env_from[field].get("optional", False)))
    return refs


def sensor_triggers(tree: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(sensor, trigger) for sensor in tree.of_kind("Sensor") for trigger in sensor["spec"]["triggers"]]


def eventsource_events(tree: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(EventSource name, event name) -> the generic source's spec."""
    return {
        (es["metadata"]["name"], event): spec
        for es in tree.of_kind("EventSource")
        for event, spec in es["spec"].get("generic", {}).items()
    }


def dependency_types(dependency: dict[str, Any]) -> set[str] | None:
    """The `body.type` values a dependency lets through, or None when it does not filter on it."""
    for data_filter in dependency.get("filters", {}).get("data", []):
        if data_filter["path"] == "body.type" and data_filter.get("comparator", "=") in ("=", "=="):
            return set(data_filter["value"])
    return None


def all_objects() -> list[str]:
    return list(TREES)


# ------------------------------------------------------------------------------------ rendering, schemas


@pytest.mark.parametrize("tree", all_objects())
def test_tree_renders_without_warnings(kustomize: Any, tree: str) -> None:
    objects, stderr = kustomize(tree)
    assert objects, f"{tree} rendered nothing"
    # Deprecated fields (commonLabels, patchesStrategicMerge, ...) print warnings; keep the trees clean.
    assert "warning" not in stderr.lower(), stderr
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "duplicate objects"


@pytest.mark.parametrize("tree", all_objects())
def test_every_kind_is_checked(trees: dict[str, Any], tree: str) -> None:
    """A kind nobody validates could hide any mistake: each must be core, Argo or monitoring."""
    core_groups = {"v1", "apps/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1", "batch/v1", "policy/v1"}
    for obj in trees[tree]:
        api = obj["apiVersion"]
        if obj["kind"] in ARGO_KINDS:
            assert api == "argoproj.io/v1alpha1", name_of(obj)
        elif obj["kind"] in MONITORING_KINDS:
            assert api == "monitoring.coreos.com/v1", name_of(obj)
        else:
            assert api in core_groups, f"{name_of(obj)} ({api}) is validated by no test"


@pytest.mark.parametrize("tree", all_objects())
def test_core_objects_match_kubernetes_schema(trees: dict[str, Any], tree: str) -> None:
    import kubernetes_validate

    # An older kubernetes-validate ships schemas up to its own release only.
    latest = kubernetes_validate.latest_version()
    version = K8S_VERSION if tuple(map(int, latest.split(".")))[:2] >= (1, 32) else latest
    errors = []
    for obj in trees[tree]:
        if obj["kind"] in ARGO_KINDS | MONITORING_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name_of(obj)}: {'/'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_argo_objects_match_argo_schemas(etl: Any, argo_validator: Any) -> None:
    checked: set[str] = set()
    errors = []
    for obj in etl:
        if obj["kind"] in ARGO_KINDS:
            errors += [f"{name_of(obj)}: {e}" for e in argo_validator(obj)]
            checked.add(obj["kind"])
    # The Workflow a Sensor submits is opaque to the Sensor schema: validate it on its own.
    for sensor, trigger in sensor_triggers(etl):
        resource = trigger["template"].get("argoWorkflow", {}).get("source", {}).get("resource")
        if resource is not None:
            assert resource["kind"] == "Workflow"
            errors += [f"{name_of(sensor)} workflow: {e}" for e in argo_validator(resource)]
            checked.add("Workflow")
    assert not errors, "\n".join(errors)
    assert checked == ARGO_KINDS


def test_strict_argo_schema_rejects_misspelt_field(etl: Any, argo_validator: Any) -> None:
    """The schema check is not vacuous: an unknown field and a wrong type are both caught."""
    sensor = yaml.safe_load(yaml.safe_dump(etl.get("Sensor", "etl")))
    assert argo_validator(sensor) == []
    sensor["spec"]["dependencies"][0]["eventsourcename"] = sensor["spec"]["dependencies"][0].pop("eventSourceName")
    sensor["spec"]["eventBusName"] = 7
    errors = argo_validator(sensor)
    assert any("eventsourcename" in e for e in errors), errors
    assert any("eventBusName" in e for e in errors), errors


# ------------------------------------------------------------------------------------- ftpsource itself


@pytest.mark.parametrize("tree", all_objects())
def test_ftpsource_pod_is_locked_down(trees: dict[str, Any], tree: str) -> None:
    deployment = ftpsource_deployment(trees[tree])
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["serviceAccountName"] in trees[tree].names("ServiceAccount")
    container = ftpsource_container(trees[tree])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) >= {"cpu", "memory"}, kind
    tmp = mount_for(container, "/tmp/x")
    assert tmp is not None and tmp["mountPath"] == "/tmp"
    assert "emptyDir" in volume(pod, tmp["name"])


@pytest.mark.parametrize("tree", all_objects())
def test_ftpsource_probes_hit_the_metrics_listener(trees: dict[str, Any], tree: str) -> None:
    container = ftpsource_container(trees[tree])
    flags = parse_flags(container["args"])
    metrics_port = int(flags.get("metrics-listen", "0.0.0.0:9090").rsplit(":", 1)[1])
    assert metrics_port == 9090
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        port = ports[http["port"]] if isinstance(http["port"], str) else http["port"]
        assert port == metrics_port, probe


@pytest.mark.parametrize("tree", all_objects())
def test_ftpsource_paths_live_on_the_right_volumes(trees: dict[str, Any], tree: str) -> None:
    pod = ftpsource_deployment(trees[tree])["spec"]["template"]["spec"]
    container = ftpsource_container(trees[tree])
    assert container["args"][0] == "serve"
    flags = parse_flags(container["args"])

    state = mount_for(container, flags["state"])
    assert state is not None and state["mountPath"] == "/var/lib/ftpsource"
    claim = volume(pod, state["name"])["persistentVolumeClaim"]["claimName"]
    assert trees[tree].find("PersistentVolumeClaim", claim) is not None
    assert not state.get("readOnly", False)

    token = mount_for(container, flags["auth-token-file"])
    assert token is not None and token.get("readOnly") is True
    files = projected_files(volume(pod, token["name"]))
    relative = flags["auth-token-file"][len(token["mountPath"]) :].strip("/")
    assert relative in files, f"{flags['auth-token-file']} is not a file of volume {token['name']}"

    credentials = mount_for(container, flags["credentials-dir"])
    assert credentials is not None and credentials["mountPath"] == flags["credentials-dir"]
    sets = projected_files(volume(pod, credentials["name"]))
    # The base projects no set (it ships no Secret); the example projects its own.
    assert bool(sets) == (tree == "examples/etl"), sets
    assert all(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.]+", path) for path in sets), sets
    assert {path.split("/", 1)[1] for path in sets} <= CREDENTIAL_FILES
    # Every mount names a volume of the pod.
    names = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= names


@pytest.mark.parametrize("tree", all_objects())
def test_service_and_networkpolicy_select_ftpsource_pods(trees: dict[str, Any], tree: str) -> None:
    tree_ = trees[tree]
    deployment = ftpsource_deployment(tree_)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert label_selector_matches(deployment["spec"]["selector"], labels)
    container = ftpsource_container(tree_)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {"grpc": 8080, "metrics": 9090}
    listen = int(parse_flags(container["args"]).get("listen", "0.0.0.0:8080").rsplit(":", 1)[1])
    assert listen == container_ports["grpc"]

    service = tree_.get("Service", "ftpsource")
    assert label_selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert (container_ports[target] if isinstance(target, str) else target) == container_ports[port["name"]]

    policy = tree_.get("NetworkPolicy", "ftpsource")
    assert label_selector_matches(policy["spec"]["podSelector"], labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    by_port = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(by_port) == {8080, 9090}
    assert all(len(rule["ports"]) == 1 for rule in policy["spec"]["ingress"])

    # gRPC: only EventSources named in the policy, and (in the example) the settle step of the named
    # WorkflowTemplates, only from namespaces named in it (none: its own).
    admitted: set[str] = set()
    settlers: set[str] = set()
    for peer in by_port[8080]["from"]:
        assert set(peer) <= {"podSelector", "namespaceSelector"}
        names = _named(peer["podSelector"], "eventsource-name")
        settles = _named(peer["podSelector"], SETTLE_LABEL)
        assert names or settles, f"gRPC peer {peer} names neither the EventSources nor the Workflows it admits"
        admitted |= names
        settlers |= settles
        if "namespaceSelector" in peer:
            assert _named(peer["namespaceSelector"], "kubernetes.io/metadata.name"), peer
    for name in admitted:
        argo_pod = {"eventsource-name": name, "controller": "eventsource-controller"}
        assert any(label_selector_matches(p["podSelector"], argo_pod) for p in by_port[8080]["from"])
    stranger = {"eventsource-name": "someone-elses", "controller": "eventsource-controller"}
    assert not any(label_selector_matches(p["podSelector"], stranger) for p in by_port[8080]["from"])
    assert not any(
        label_selector_matches(p["podSelector"], {"app.kubernetes.io/name": "prometheus"})
        for p in by_port[8080]["from"]
    )
    # Every EventSource of the tree that points at ftpsource is admitted, and so is the pod of every
    # Workflow template that settles (it carries the label the policy names), and no other.
    assert {es for es, _ in eventsource_events(tree_)} <= admitted
    settling = {}
    for template_obj in tree_.of_kind("WorkflowTemplate"):
        for template in template_obj["spec"]["templates"]:
            labels = template.get("metadata", {}).get("labels", {})
            if template.get("container", {}).get("args", [])[:1] == ["settle"]:
                settling[template["name"]] = labels
    assert bool(settling) == (tree == "examples/etl"), settling
    for name, pod_labels in settling.items():
        assert any(label_selector_matches(p["podSelector"], pod_labels) for p in by_port[8080]["from"]), name
        assert pod_labels[SETTLE_LABEL] in settlers
    for template_obj in tree_.of_kind("WorkflowTemplate"):
        for template in template_obj["spec"]["templates"]:
            if template["name"] not in settling:
                labels = template.get("metadata", {}).get("labels", {})
                assert not any(label_selector_matches(p["podSelector"], labels) for p in by_port[8080]["from"])

    # Metrics: Prometheus pods of the named monitoring namespace only.
    (metrics_peer,) = by_port[9090]["from"]
    assert label_selector_matches(metrics_peer["podSelector"], {"app.kubernetes.io/name": "prometheus"})
    assert not label_selector_matches(metrics_peer["podSelector"], {"eventsource-name": "ftpsource-files"})
    assert _named(metrics_peer["namespaceSelector"], "kubernetes.io/metadata.name") == {"monitoring"}


def _named(selector: dict[str, Any], key: str) -> set[str]:
    """The values a selector requires for ``key`` (``In`` or ``matchLabels``); empty when it does not
    pin the key to named values (``Exists``, absent), which would admit anyone who sets the label."""
    names = set()
    if key in selector.get("matchLabels", {}):
        names.add(selector["matchLabels"][key])
    for expr in selector.get("matchExpressions", []):
        if expr["key"] == key:
            if expr["operator"] != "In":
                return set()
            names |= set(expr["values"])
    return names


@pytest.mark.parametrize("tree", all_objects())
def test_common_label_on_every_base_object(trees: dict[str, Any], tree: str) -> None:
    base_names = {
        "ServiceAccount/ftpsource",
        "PersistentVolumeClaim/ftpsource-state",
        "Deployment/ftpsource",
        "Service/ftpsource",
        "NetworkPolicy/ftpsource",
    }
    seen = set()
    for obj in trees[tree]:
        if name_of(obj) in base_names:
            seen.add(name_of(obj))
            assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "ftpsource", name_of(obj)
    assert seen == base_names


# ------------------------------------------------------------------------------- references inside pods


@pytest.mark.parametrize("tree", all_objects())
def test_every_secret_configmap_and_claim_a_pod_uses_exists(trees: dict[str, Any], tree: str) -> None:
    tree_ = trees[tree]
    checked = 0
    problems = []
    for what, containers, volumes in pods(tree_):
        volume_names = {v["name"] for v in volumes}
        for container in containers:
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volume_names:
                    problems.append(f"{what}: mount {mount['name']} has no volume")
        for kind, name, key, optional in references(containers, volumes):
            checked += 1
            obj = tree_.find(kind, name)
            if obj is None:
                # The base leaves the Secrets to the operator; a tree that deploys a stack provides them.
                expected_outside = tree != "examples/etl" and kind == "Secret" and name in PROVIDED_BY_OPERATOR
                if not optional and not expected_outside:
                    problems.append(f"{what}: {kind}/{name} does not exist")
                continue
            if key is not None:
                keys = secret_keys(obj) if kind == "Secret" else configmap_keys(obj)
                if key not in keys:
                    problems.append(f"{what}: {kind}/{name} has no key {key!r}")
    assert not problems, "\n".join(problems)
    assert checked >= (4 if tree == "examples/etl" else 2)


def test_generated_transform_configmap_is_referenced_by_its_hashed_name(etl: Any) -> None:
    generated = [cm for cm in etl.of_kind("ConfigMap") if cm["metadata"]["name"].startswith("etl-transform")]
    assert len(generated) == 1
    name = generated[0]["metadata"]["name"]
    assert re.fullmatch(r"etl-transform-[a-z0-9]{10}", name), "expected kustomize's content-hash suffix"
    script = (DEPLOY / "examples" / "etl" / "transform.py").read_text(encoding="utf-8")
    assert generated[0]["data"]["transform.py"] == script

    template = next(
        t for t in etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]["templates"] if t["name"] == "transform"
    )
    code = next(v for v in template["volumes"] if "configMap" in v)
    assert code["configMap"]["name"] == name
    mount = next(m for m in template["container"]["volumeMounts"] if m["name"] == code["name"])
    assert template["container"]["command"][:2] == ["python", f"{mount['mountPath']}/transform.py"]


def test_images_are_pinned(trees: dict[str, Any]) -> None:
    for tree in trees.values():
        for what, containers, _ in pods(tree):
            for container in containers:
                image = container["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert tag and tag != "latest", f"{tree.name} {what}: image {image} is not pinned"


# ------------------------------------------------------------------------------------ the ETL example


def test_etl_objects_all_live_in_one_namespace(etl: Any) -> None:
    assert etl.get("Namespace", NAMESPACE)
    for obj in etl:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, name_of(obj)
    for binding in etl.of_kind("RoleBinding"):
        for subject in binding["subjects"]:
            assert subject.get("namespace", NAMESPACE) == NAMESPACE


def test_eventsource_connects_to_the_ftpsource_service(etl: Any) -> None:
    service = etl.get("Service", "ftpsource")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    namespace = service["metadata"]["namespace"]
    allowed_hosts = {
        "ftpsource",
        f"ftpsource.{namespace}",
        f"ftpsource.{namespace}.svc",
        f"ftpsource.{namespace}.svc.cluster.local",
    }
    events = eventsource_events(etl)
    assert len(events) == 2
    for (es_name, event), spec in events.items():
        host, _, port = spec["url"].rpartition(":")
        assert "://" not in spec["url"], "Argo dials host:port; a scheme breaks the gRPC target"
        assert host in allowed_hosts, f"{es_name}/{event}: {spec['url']}"
        assert int(port) == grpc_port
        assert spec["insecure"] is True and spec["jsonBody"] is True
        secret = etl.get("Secret", spec["authSecret"]["name"])
        assert spec["authSecret"]["key"] in secret_keys(secret)
        # The same token the server checks.
        pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
        container = ftpsource_container(etl)
        token_file = parse_flags(container["args"])["auth-token-file"]
        mount = mount_for(container, token_file)
        assert mount is not None
        files = projected_files(volume(pod, mount["name"]))
        assert files[token_file[len(mount["mountPath"]) :].strip("/")] == (
            spec["authSecret"]["name"],
            spec["authSecret"]["key"],
        )


def test_eventsource_configs_parse_and_their_resources_exist(etl: Any) -> None:
    pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    container = ftpsource_container(etl)
    credentials_dir = parse_flags(container["args"])["credentials-dir"]
    credential_volume = volume(pod, mount_for(container, credentials_dir)["name"])  # type: ignore[index]
    credential_files = projected_files(credential_volume)
    schemes = set()
    for (_, event), spec in eventsource_events(etl).items():
        assert isinstance(yaml.safe_load(spec["config"]), dict)
        config = parse_source_config(spec["config"])
        url = config.parsed_url
        schemes.add(url.scheme)
        if config.credentials:
            files = {
                p.split("/", 1)[1]: ref for p, ref in credential_files.items() if p.startswith(f"{config.credentials}/")
            }
            assert {"username", "password"} <= set(files), f"{event}: credential set {config.credentials} incomplete"
            for secret_name, key in files.values():
                assert key in secret_keys(etl.get("Secret", secret_name))
        if url.scheme == "file":
            mount = mount_for(container, url.root)
            assert mount is not None and mount["mountPath"] != "/tmp", f"{event}: {url.root} is not mounted"
            claim = volume(pod, mount["name"])["persistentVolumeClaim"]["claimName"]
            assert etl.find("PersistentVolumeClaim", claim) is not None
        else:
            # The example's servers run in the namespace: the host must be one of its Services.
            service = etl.get("Service", url.host)
            default = {"ftp": 21, "ftps": 21, "sftp": 22}[url.scheme]
            assert (url.port or default) in {p["port"] for p in service["spec"]["ports"]}
    assert schemes == {"ftp", "file"}


def test_sensor_dependencies_name_defined_events(etl: Any) -> None:
    events = eventsource_events(etl)
    buses = etl.names("EventBus")
    assert buses == {"default"}
    for es in etl.of_kind("EventSource"):
        assert es["spec"].get("eventBusName", "default") in buses
    sensors = etl.of_kind("Sensor")
    assert len(sensors) == 2
    for sensor in sensors:
        assert sensor["spec"].get("eventBusName", "default") in buses
        for dep in sensor["spec"]["dependencies"]:
            assert (dep["eventSourceName"], dep["eventName"]) in events, f"{name_of(sensor)}: {dep['name']}"
            types = dependency_types(dep)
            assert types and types <= EVENT_TYPES, f"{dep['name']} filters on {types}"


def test_sensor_triggers_fire_on_their_own_dependencies(etl: Any) -> None:
    for sensor, trigger in sensor_triggers(etl):
        deps = {d["name"] for d in sensor["spec"]["dependencies"]}
        template = trigger["template"]
        conditions = template.get("conditions")
        if len(deps) > 1:
            # Without conditions a trigger waits for all dependencies at once.
            assert conditions, f"{name_of(sensor)} trigger {template['name']} has no conditions"
        if conditions:
            named = set(re.findall(r"[A-Za-z0-9_-]+", conditions))
            assert named and named <= deps, conditions
        for param in template.get("argoWorkflow", {}).get("parameters", []):
            assert param["src"]["dependencyName"] in deps
            if conditions:
                # A parameter from a dependency that did not fire would resolve to nothing.
                assert param["src"]["dependencyName"] in named


def test_etl_workflows_start_only_for_ready_files(etl: Any) -> None:
    etl_sensor = etl.get("Sensor", "etl")
    deps = {d["name"]: d for d in etl_sensor["spec"]["dependencies"]}
    triggers = [t["template"] for t in etl_sensor["spec"]["triggers"]]
    assert triggers and all("argoWorkflow" in t for t in triggers)
    covered = set()
    for template in triggers:
        assert template["argoWorkflow"]["operation"] == "submit"
        for dep_name in re.findall(r"[A-Za-z0-9_-]+", template["conditions"]):
            assert dependency_types(deps[dep_name]) == {"ftpsource.file.ready"}
            covered.add(deps[dep_name]["eventName"])
    assert covered == {event for _, event in eventsource_events(etl)}

    alerts = etl.get("Sensor", "ftpsource-alerts")
    for dep in alerts["spec"]["dependencies"]:
        assert dependency_types(dep) == {"ftpsource.file.missing", "ftpsource.file.rejected"}
    assert {d["eventName"] for d in alerts["spec"]["dependencies"]} == covered
    assert any("log" in t["template"] for t in alerts["spec"]["triggers"])
    assert not any("argoWorkflow" in t["template"] for t in alerts["spec"]["triggers"])


def test_sensor_passes_the_parameters_the_workflow_template_declares(etl: Any) -> None:
    template = etl.get("WorkflowTemplate", "ftpsource-etl")
    declared = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    triggers = [t for _, t in sensor_triggers(etl) if "argoWorkflow" in t["template"]]
    assert len(triggers) == 2
    for trigger in triggers:
        workflow_trigger = trigger["template"]["argoWorkflow"]
        workflow = workflow_trigger["source"]["resource"]
        # Either a fresh name per run, or a name completed from the (per file version) event id.
        name_params = [p for p in workflow_trigger["parameters"] if p["dest"] == "metadata.name"]
        if name_params:
            assert "generateName" not in workflow["metadata"]
            assert [(p["src"]["dataKey"], p.get("operation")) for p in name_params] == [("body.id", "append")]
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*)?-", workflow["metadata"]["name"])
        else:
            assert workflow["metadata"].get("generateName"), "each run needs its own name"
        ref = workflow["spec"]["workflowTemplateRef"]["name"]
        assert etl.find("WorkflowTemplate", ref) is not None
        passed = workflow["spec"]["arguments"]["parameters"]
        names = [p["name"] for p in passed]
        assert set(names) <= set(declared), f"unknown parameters {set(names) - set(declared)}"
        required = {name for name, p in declared.items() if "value" not in p and "default" not in p}
        supplied: dict[str, str] = {}
        for param in workflow_trigger["parameters"]:
            if param["dest"] == "metadata.name":
                continue
            match = re.fullmatch(r"spec\.arguments\.parameters\.(\d+)\.value", param["dest"])
            assert match, param["dest"]
            index = int(match.group(1))
            assert index < len(passed), f"{param['dest']} points past the Workflow's parameters"
            data_key = param["src"]["dataKey"]
            field = re.fullmatch(r"body\.data\.(\w+)(?:\.\w+)*", data_key)
            assert data_key == "body.id" or (field and field.group(1) in READY_DATA_FIELDS), data_key
            supplied[names[index]] = data_key
        assert required <= set(supplied), f"parameters without a value: {required - set(supplied)}"
        for name, data_key in WORKFLOW_INPUTS.items():
            assert supplied.get(name) == data_key, name
        # The Workflow gets what to read from the bucket, never where the file sits on its server.
        assert "body.data.url" not in supplied.values()


def test_workflow_template_steps_and_artifacts(etl: Any) -> None:
    spec = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    steps = [step["name"] for group in templates[spec["entrypoint"]]["steps"] for step in group]
    assert steps == ["transform", "load"]
    declared = {p["name"] for p in spec["arguments"]["parameters"]}
    text = yaml.safe_dump(spec)
    used = set(re.findall(r"\{\{workflow\.parameters\.(\w+)\}\}", text))
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    for match in re.findall(r"\{\{steps\.(\w+)\.outputs\.artifacts\.(\w+)\}\}", text):
        step, artifact = match
        assert artifact in {a["name"] for a in templates[step]["outputs"]["artifacts"]}
    # The first step reads the staged object, by the event's key, from the default artifact repository
    # (no bucket, endpoint or credentials of its own), where the program reads its input.
    first = templates[templates[spec["entrypoint"]]["steps"][0][0]["template"]]
    (raw,) = first["inputs"]["artifacts"]
    assert raw["s3"] == {"key": "{{workflow.parameters.staged_key}}"}
    # Exactly the verified bytes: Argo unpacks an input that looks like a tarball unless told not to.
    assert raw["archive"] == {"none": {}}
    assert f"--input={raw['path']}" in first["container"]["args"]
    assert "--source-checksum={{workflow.parameters.checksum}}" in first["container"]["args"]
    # Nothing in the Workflow downloads the file or holds an FTP credential or the stream token.
    for template in spec["templates"]:
        assert "script" not in template, f"{template['name']} runs a script"
        refs = references([template[k] for k in ("container",) if k in template], template.get("volumes", []))
        named = {name for _, name, _, _ in refs}
        assert not any(n.startswith(("test-ftp-credentials", "ftpsource-auth")) for n in named), template["name"]
    assert "url" not in declared
    load = templates["load"]
    assert "s3" in load["outputs"]["artifacts"][0], "the load step stores its result in the artifact repository"
    # RBAC: the pods' service account may report results, the Sensor's may submit.
    assert spec["serviceAccountName"] in etl.names("ServiceAccount")


def test_workflow_settles_its_event_on_exit(etl: Any) -> None:
    """The exit handler runs `ftpsource settle` with the ftpsource image, for the event the Workflow was
    started for, with `succeeded` exactly when the Workflow succeeded, and the settle token (which opens
    no stream) from its own Secret."""
    spec = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    handler = templates[spec["onExit"]]
    container = handler["container"]
    assert container["image"] == f"ftpsource:{VERSION}"
    assert container["command"] == ["ftpsource"]
    args = container["args"]
    assert args[0] == "settle"
    positional = [a for a in args[1:] if not a.startswith("--")]
    assert positional[0] == "{{workflow.parameters.event_id}}"
    outcome = re.fullmatch(r"\{\{=(.*)\}\}", positional[1])
    assert outcome, positional[1]
    # The expression, evaluated for each status the exit handler can see.
    condition, then, otherwise = re.fullmatch(r"(.*)\?\s*'(\w+)'\s*:\s*'(\w+)'", outcome.group(1)).groups()  # type: ignore[union-attr]
    expected = re.fullmatch(r"\s*workflow\.status\s*==\s*'(\w+)'\s*", condition)
    assert expected and expected.group(1) == "Succeeded", condition
    assert (then, otherwise) == ("succeeded", "failed")
    flags = parse_flags(args)
    host, _, port = flags["server"].rpartition(":")
    service = etl.get("Service", host)
    assert int(port) == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    # The token file is the settle Secret's token, which is what ftpsource reads as its settle token.
    mount = mount_for(container, flags["token-file"])
    assert mount is not None and mount.get("readOnly") is True
    token_volume = volume(handler, mount["name"])
    secret_name = token_volume["secret"]["secretName"]
    (item,) = token_volume["secret"]["items"]
    assert flags["token-file"] == f"{mount['mountPath']}/{item['path']}"
    server_env = {e["name"]: e.get("value") for e in ftpsource_container(etl)["env"]}
    settle_file = server_env["FTPSOURCE_SETTLE_TOKEN_FILE"]
    pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    server_mount = mount_for(ftpsource_container(etl), settle_file)
    assert server_mount is not None
    files = projected_files(volume(pod, server_mount["name"]))
    assert files[settle_file[len(server_mount["mountPath"]) :].strip("/")] == (secret_name, item["key"])
    auth = parse_flags(ftpsource_container(etl)["args"])["auth-token-file"]
    assert (
        secret_value(etl.get("Secret", secret_name), item["key"])
        != ((DEPLOY / "examples" / "etl" / "kustomization.yaml").read_text().split("token=", 1)[1].split()[0])
    ), f"the settle token must differ from the stream token ({auth})"


def test_sources_stage_where_the_workflow_reads_and_settle_by_moving(etl: Any) -> None:
    """Every source stages into the artifact repository's bucket (so a key-only input artifact finds
    the object) with a credential set that names MinIO's Service, archives on success and quarantines
    on failure."""
    configmap = etl.get("ConfigMap", "artifact-repositories")
    key = configmap["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
    repository = yaml.safe_load(configmap["data"][key])["s3"]
    pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    container = ftpsource_container(etl)
    credentials_dir = parse_flags(container["args"])["credentials-dir"]
    files = projected_files(volume(pod, mount_for(container, credentials_dir)["name"]))  # type: ignore[index]
    configs = [parse_source_config(spec["config"]) for spec in eventsource_events(etl).values()]
    assert configs
    for config in configs:
        assert config.stage is not None, config.id
        assert urlsplit(config.stage.url).netloc == repository["bucket"]
        stage_set = {
            p.split("/", 1)[1]: ref for p, ref in files.items() if p.startswith(f"{config.stage.credentials}/")
        }
        assert {"hosts", "endpoint", "access_key", "secret_key"} <= set(stage_set), stage_set
        endpoint = urlsplit(secret_value(etl.get("Secret", stage_set["endpoint"][0]), stage_set["endpoint"][1]))
        assert f"{endpoint.hostname}:{endpoint.port}" == repository["endpoint"]
        hosts = secret_value(etl.get("Secret", stage_set["hosts"][0]), stage_set["hosts"][1]).split()
        assert repository["endpoint"] in hosts
        # The same keys MinIO and the artifact repository use.
        assert stage_set["access_key"] == (repository["accessKeySecret"]["name"], repository["accessKeySecret"]["key"])
        assert stage_set["secret_key"] == (repository["secretKeySecret"]["name"], repository["secretKeySecret"]["key"])
        assert (config.on_success.action, config.on_failure.action) == ("move", "move"), config.id
        assert config.on_success.to and config.on_success.to.startswith("archive/")
        assert config.on_failure.to and config.on_failure.to.startswith("failed/")
        if config.parsed_url.scheme == "file":
            mount = mount_for(container, config.parsed_url.root)
            assert mount is not None and not mount.get("readOnly"), "settling moves files: the root must be writable"
    # Something makes the bucket: ftpsource does not.
    job = etl.get("Job", "minio-make-bucket")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"local/{repository['bucket']}" in command


def test_rbac_lets_the_sensor_submit_and_the_workflow_report(etl: Any) -> None:
    def rules_for(service_account: str) -> list[dict[str, Any]]:
        rules = []
        for binding in etl.of_kind("RoleBinding"):
            if any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
                assert binding["roleRef"]["kind"] == "Role"
                rules += etl.get("Role", binding["roleRef"]["name"])["rules"]
        return rules

    def allowed(rules: list[dict[str, Any]], resource: str, verb: str) -> bool:
        return any("argoproj.io" in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)

    sensor_sa = etl.get("Sensor", "etl")["spec"]["template"]["serviceAccountName"]
    assert sensor_sa in etl.names("ServiceAccount")
    sensor_rules = rules_for(sensor_sa)
    assert allowed(sensor_rules, "workflows", "create")
    assert allowed(sensor_rules, "workflowtemplates", "get")
    assert not allowed(sensor_rules, "workflows", "delete")

    workflow_sa = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]["serviceAccountName"]
    workflow_rules = rules_for(workflow_sa)
    assert allowed(workflow_rules, "workflowtaskresults", "create")
    assert allowed(workflow_rules, "workflowtaskresults", "patch")

    for binding in etl.of_kind("RoleBinding"):
        assert etl.find("Role", binding["roleRef"]["name"]) is not None
        for subject in binding["subjects"]:
            assert subject["name"] in etl.names("ServiceAccount")


def test_default_artifact_repository_points_at_minio(etl: Any) -> None:
    configmap = etl.get("ConfigMap", "artifact-repositories")
    key = configmap["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
    repository = yaml.safe_load(configmap["data"][key])["s3"]
    host, _, port = repository["endpoint"].partition(":")
    service = etl.get("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert repository["bucket"]
    for field in ("accessKeySecret", "secretKeySecret"):
        ref = repository[field]
        assert ref["key"] in secret_keys(etl.get("Secret", ref["name"]))
    # MinIO is started with the same credentials the repository uses.
    minio_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in etl.get("Deployment", "minio")["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert minio_env["MINIO_ROOT_USER"] == repository["accessKeySecret"]
    assert minio_env["MINIO_ROOT_PASSWORD"] == repository["secretKeySecret"]


# ------------------------------------------------------------------------ scripts and commands, for real


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(
    port: int, process: subprocess.Popen[bytes], timeout_s: float = 15.0, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early: {process.communicate()[1]!r}"
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _ports_by_name(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}


def _service_routes(service: dict[str, Any], container: dict[str, Any]) -> dict[int, int]:
    """Service port -> the pod port it reaches (a named targetPort resolved as the kubelet does)."""
    named = _ports_by_name(container)
    routes = {}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        routes[port["port"]] = named[target] if isinstance(target, str) else int(target)
    return routes


def _loopback_pair() -> tuple[str, str]:
    """Two loopback addresses of their own (a pod IP and a ClusterIP), so that the fixed ports of the
    example (2121, 30000-30009) do not collide with anything else running on 127.0.0.1."""
    import random

    a, b = random.randrange(100, 250), random.randrange(1, 250)
    return f"127.{a}.{b}.10", f"127.{a}.{b}.20"


def test_test_ftp_image_installs_nothing_at_start(etl: Any) -> None:
    """pyftpdlib comes with the image (pinned by version and hash), not from PyPI when the pod starts,
    and it is the version the tests run the server command with."""
    import importlib.metadata

    pod = etl.get("Deployment", "test-ftp")["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        text = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip" not in text, f"{container['name']} installs something at start: {text}"
        assert container["image"] == f"ftpsource-test-ftp:{VERSION}", container["image"]
    requirements = (DEPLOY / "examples" / "etl" / "test-ftp" / "requirements.txt").read_text(encoding="utf-8")
    pins = re.findall(r"^pyftpdlib==([\w.]+) --hash=sha256:[0-9a-f]{64}$", requirements, flags=re.M)
    assert pins == [importlib.metadata.version("pyftpdlib")]
    dockerfile = (DEPLOY / "examples" / "etl" / "test-ftp" / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r /tmp/requirements.txt" in dockerfile
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}$", dockerfile, flags=re.M)


def test_ftp_through_the_service_as_a_cluster_ip_passes_it(etl: Any, tmp_path: Path) -> None:
    """Run the test-ftp container's command here, behind a forwarder that passes only the ports the
    rendered Service declares (what a ClusterIP does), and point ftpsource's own source config and the
    ftpsource's own check at the forwarder: the control connection and every passive data
    connection must get through. Then the same with a Service that forwards only port 21, which
    must fail: the test would catch a Service that forgets the passive range."""
    pytest.importorskip("pyftpdlib")
    pod = etl.get("Deployment", "test-ftp")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secret_env = {
        e["name"]: secret_value(
            etl.get("Secret", e["valueFrom"]["secretKeyRef"]["name"]), e["valueFrom"]["secretKeyRef"]["key"]
        )
        for e in container["env"]
        if "valueFrom" in e
    }
    pod_ip, cluster_ip = _loopback_pair()
    data = tmp_path / "srv"
    (data / "incoming").mkdir(parents=True)
    payload = b"a,b\n1,2\n"
    (data / "incoming" / "sales.csv").write_bytes(payload)
    args = []
    for arg in container["args"]:
        arg = re.sub(r"\$\((\w+)\)", lambda m: secret_env[m.group(1)], arg)
        if arg.startswith("--directory="):
            arg = f"--directory={data}"
        args.append(arg)
    command = [sys.executable if c == "python" else c for c in container["command"]]
    server = subprocess.Popen(
        [*command, f"--interface={pod_ip}", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    service = etl.get("Service", "test-ftp")
    routes = _service_routes(service, container)
    try:
        _wait_for_port(routes[21], server, host=pod_ip)

        # ftpsource's source config from the EventSource, with the Service's name resolved to the
        # forwarder, as cluster DNS would.
        spec = eventsource_events(etl)[("ftpsource-files", "incoming-ftp")]
        config = yaml.safe_load(spec["config"])
        url = urlsplit(config["url"])
        assert url.hostname == service["metadata"]["name"] and url.port in routes
        mounts = _materialise_pod_files(etl, tmp_path / "pod")
        credentials_dir = mounts[parse_flags(ftpsource_container(etl)["args"])["credentials-dir"]]
        hosts = credentials_dir / config["credentials"] / "hosts"
        assert f"{url.hostname}:{url.port}" in hosts.read_text().split(), "the set must allow its server"

        def check_through(ports: dict[int, int]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
            with ClusterIPForwarder(cluster_ip, pod_ip, ports) as forwarder:
                address = f"{cluster_ip}:{forwarder.listening[url.port]}"
                hosts.write_text(f"{address}\n")
                # A single `check` sees the file once: only without a stability wait is it complete, and
                # only a complete file is read (a RETR, a second passive connection after the LIST).
                cfg = {**config, "url": url._replace(netloc=address).geturl(), "stable_for": "0s"}
                cfg_file = tmp_path / "source.yaml"
                cfg_file.write_text(yaml.safe_dump(cfg), encoding="utf-8")
                check = subprocess.run(
                    [*FTPSOURCE, "check", str(cfg_file), "--credentials-dir", str(credentials_dir), "--hash", "--json"],
                    capture_output=True, text=True, timeout=60, env={**os.environ, "FTPSOURCE_LOG_FORMAT": "text"},
                )  # fmt: skip
            return check, {}

        check, _ = check_through(routes)
        assert check.returncode == 0, check.stdout + check.stderr
        # With --hash, "emit" means the file was read and hashed: a failed read is a problem instead.
        files = {f["path"]: f for f in json.loads(check.stdout)["files"]}
        assert files["sales.csv"]["kind"] == "emit", files
        assert secret_env["FTP_PASSWORD"] not in check.stdout + check.stderr

        # The same Service without the passive range: what a ClusterIP would then refuse.
        control_only = {21: routes[21]}
        check, _ = check_through(control_only)
        assert check.returncode != 0
        assert "refused" in (check.stdout + check.stderr).lower(), check.stdout + check.stderr
    finally:
        server.terminate()
        server.communicate(timeout=10)


# ----------------------------------------------------------- what a real cluster needs beyond a schema


def test_base_ships_no_secret(base: Any, monitoring: Any) -> None:
    """A placeholder Secret in the base would be a known bearer token on every install that forgot it."""
    for tree in (base, monitoring):
        assert tree.of_kind("Secret") == [], [name_of(o) for o in tree.of_kind("Secret")]
    text = (DEPLOY / "base" / "kustomization.yaml").read_text(encoding="utf-8")
    for name in PROVIDED_BY_OPERATOR:
        assert name in text, f"the base should say that it expects Secret {name}"


def _generated(tree: Any) -> dict[tuple[str, str], str]:
    """(kind, name as written) -> rendered name, for every generated object with a content-hash suffix."""
    kustomization = yaml.safe_load((DEPLOY / "examples" / "etl" / "kustomization.yaml").read_text(encoding="utf-8"))
    found = {}
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for generator in kustomization.get(key, []):
            if generator.get("options", {}).get("disableNameSuffixHash"):
                continue
            (obj,) = [o for o in tree.of_kind(kind) if o["metadata"]["name"].startswith(f"{generator['name']}-")]
            assert re.fullmatch(rf"{generator['name']}-[a-z0-9]{{10}}", obj["metadata"]["name"])
            found[(kind, generator["name"])] = obj["metadata"]["name"]
    return found


def _name_fields(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, value) of every field that names another object: `name`, `secretName`, `claimName`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}/{key}"
            if key in {"name", "secretName"} and isinstance(value, str):
                found.append((here, value))
            found += _name_fields(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _name_fields(item, f"{path}/{index}")
    return found


def test_generated_names_reach_every_consumer(etl: Any) -> None:
    """Every reference to a generated Secret or ConfigMap carries its hashed name, in core objects and in
    Argo's (EventSource authSecret, WorkflowTemplate env and volumes) alike; a reference left with the
    bare name would point at nothing in the cluster."""
    generated = _generated(etl)
    assert {
        ("Secret", "ftpsource-auth"),
        ("Secret", "ftpsource-settle"),
        ("Secret", "test-ftp-credentials"),
        ("ConfigMap", "etl-transform"),
    } <= set(generated)
    bare = {name for _, name in generated}
    used: dict[str, int] = dict.fromkeys(generated.values(), 0)
    for obj in etl:
        for path, value in _name_fields(obj):
            if path == "/metadata/name":
                continue
            assert value not in bare, f"{name_of(obj)} {path} names {value}, whose rendered name is hashed"
            if value in used:
                used[value] += 1
    assert all(used.values()), f"generated but never referenced: {[n for n, c in used.items() if not c]}"
    # The EventSource's every event, and both consumers of the FTP credentials, were rewritten.
    auth = generated[("Secret", "ftpsource-auth")]
    assert {spec["authSecret"]["name"] for spec in eventsource_events(etl).values()} == {auth}
    # The settle token reaches both the server and the Workflow's exit handler.
    settle = generated[("Secret", "ftpsource-settle")]
    spec = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]
    handler = next(t for t in spec["templates"] if t["name"] == spec["onExit"])
    assert {v["secret"]["secretName"] for v in handler["volumes"] if "secret" in v} == {settle}
    server_pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    assert settle in {v["secret"]["secretName"] for v in server_pod["volumes"] if "secret" in v}


def test_every_sensor_trigger_is_at_least_once(etl: Any) -> None:
    """A Sensor restart between receiving an event and running its trigger must not lose the run."""
    triggers = sensor_triggers(etl)
    assert triggers
    for sensor, trigger in triggers:
        assert trigger.get("atLeastOnce") is True, f"{name_of(sensor)} trigger {trigger['template']['name']}"


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smhd])", text))


def test_finished_workflows_outlive_eventbus_redelivery(etl: Any) -> None:
    """The "already exists" de-duplication lasts as long as the Workflow object: at least as long as
    the EventBus keeps (and may redeliver) the event."""
    (bus,) = etl.of_kind("EventBus")
    stream = yaml.safe_load(bus["spec"]["jetstream"]["streamConfig"])
    max_age = _duration_s(stream["maxAge"])
    assert max_age > 0
    ttl = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]["ttlStrategy"]
    assert set(ttl) == {"secondsAfterCompletion"}, "a shorter TTL for successes or failures would cut it short"
    assert ttl["secondsAfterCompletion"] >= max_age


def test_eventbus_version_is_known_to_every_argo_events_install(etl: Any) -> None:
    """The JetStream version must be listed in the controller config of the installed Argo Events, or
    no EventBus is created. The upstream manifests and the Helm chart list different numbered
    versions; `latest` (the image that the installed release pins) is the name both know."""
    for bus in etl.of_kind("EventBus"):
        assert bus["spec"]["jetstream"]["version"] == "latest", name_of(bus)
        assert bus["spec"]["jetstream"]["replicas"] >= 3, "fewer than 3 replicas lose publishes when one pod goes"


def test_argo_pods_are_locked_down_and_sized(etl: Any) -> None:
    for obj in etl.of_kind("EventSource") + etl.of_kind("Sensor"):
        template = obj["spec"]["template"]
        pod = template["securityContext"]
        assert pod["runAsNonRoot"] is True and pod.get("runAsUser", 1) != 0, name_of(obj)
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name_of(obj)
        container = template["container"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name_of(obj)
        assert security["capabilities"]["drop"] == ["ALL"], name_of(obj)
        assert security["readOnlyRootFilesystem"] is True, name_of(obj)
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{name_of(obj)} {kind}"
        # A read-only root still needs a writable /tmp: Argo's argoWorkflow trigger writes the Workflow
        # to a temporary file for `argo submit`.
        tmp = mount_for(container, "/tmp/x")
        assert tmp is not None and tmp["mountPath"] == "/tmp" and not tmp.get("readOnly"), name_of(obj)
        assert "emptyDir" in volume(template, tmp["name"]), name_of(obj)


@pytest.mark.parametrize("tree", all_objects())
def test_ftpsource_pod_settings_for_a_real_cluster(trees: dict[str, Any], tree: str) -> None:
    pod = ftpsource_deployment(trees[tree])["spec"]["template"]["spec"]
    # The `ftpsource` Service would otherwise inject FTPSOURCE_SERVICE_HOST & co. into its settings' prefix.
    assert pod["enableServiceLinks"] is False
    flags = parse_flags(ftpsource_container(trees[tree])["args"])
    # Listening on every address, IPv6 included (with a fallback where the pod has none).
    assert flags["listen"].startswith("[::]:") and flags["metrics-listen"].startswith("[::]:")


def test_local_sources_are_allowed_roots(etl: Any) -> None:
    """Every `file://` source watches a directory that FTPSOURCE_ALLOW_ROOTS lets it watch."""
    env = {e["name"]: e.get("value", "") for e in ftpsource_container(etl).get("env", [])}
    roots = [r for r in env.get("FTPSOURCE_ALLOW_ROOTS", "").split(":") if r]
    local = [parse_source_config(spec["config"]) for spec in eventsource_events(etl).values()]
    local = [c for c in local if c.parsed_url.scheme == "file"]
    assert local and roots
    for config in local:
        root = config.parsed_url.root.rstrip("/") + "/"
        assert any(root.startswith(r.rstrip("/") + "/") for r in roots), (config.parsed_url.root, roots)


def test_credential_sets_name_their_servers(etl: Any) -> None:
    """A set is usable only for the servers its `hosts` file lists: the example's lists its server."""
    pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    container = ftpsource_container(etl)
    credentials_dir = parse_flags(container["args"])["credentials-dir"]
    files = projected_files(volume(pod, mount_for(container, credentials_dir)["name"]))  # type: ignore[index]
    checked = 0
    for spec in eventsource_events(etl).values():
        config = parse_source_config(spec["config"])
        if not config.credentials:
            continue
        secret_name, key = files[f"{config.credentials}/hosts"]
        hosts = secret_value(etl.get("Secret", secret_name), key).split()
        url = config.parsed_url
        assert f"{url.host}:{url.port}" in hosts or url.host in hosts, (url.host, hosts)
        checked += 1
    assert checked


def test_nothing_names_the_namespace_but_the_kustomization(kustomize_dir: Any, tmp_path: Path) -> None:
    """Re-namespaced with an overlay, the example must not keep pointing at `ftpsource-etl`: no Service
    URL, no RoleBinding subject, no object left behind in the old namespace."""
    overlay = tmp_path / "renamed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "elsewhere",
                # kustomize takes only relative paths to a base.
                "resources": [os.path.relpath(DEPLOY / "examples" / "etl", overlay)],
            }
        ),
        encoding="utf-8",
    )
    objects = kustomize_dir(overlay)
    from tests.support.deploy import Tree

    tree = Tree("renamed", objects)
    assert tree.names("Namespace") == {"elsewhere"}
    for obj in tree:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "elsewhere", name_of(obj)
    for binding in tree.of_kind("RoleBinding"):
        for subject in binding["subjects"]:
            assert subject.get("namespace", "elsewhere") == "elsewhere", name_of(binding)
    # Every address: the EventSources' gRPC targets, the sources' URLs, the artifact repository.
    addresses = []
    for spec in eventsource_events(tree).values():
        addresses += [spec["url"], yaml.safe_load(spec["config"])["url"]]
    repository = tree.get("ConfigMap", "artifact-repositories")
    addresses += [yaml.safe_load(v)["s3"]["endpoint"] for v in repository["data"].values()]
    for address in addresses:
        assert NAMESPACE not in address, address

    # And any `namespace` field, wherever it sits (subjects, references), says the new one.
    def namespaces(node: Any) -> list[Any]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "namespace"] + [n for v in node.values() for n in namespaces(v)]
        if isinstance(node, list):
            return [n for item in node for n in namespaces(item)]
        return []

    assert set(namespaces(objects)) == {"elsewhere"}


def test_the_eventsource_is_applied_after_everything_else(etl: Any) -> None:
    """Sensors see only events published after they first subscribe, so the first install applies
    everything but the EventSource, waits, then applies the rest; the selector must split it so."""
    docs = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    first = "kubectl apply -k deploy/examples/etl -l 'ftpsource.example/apply!=last'"
    assert first in docs
    later = [o for o in etl if o["metadata"].get("labels", {}).get("ftpsource.example/apply") == "last"]
    assert {name_of(o) for o in later} == {name_of(o) for o in etl.of_kind("EventSource")}
    rest = docs[docs.index(first) :]
    assert rest.index("sensor") < rest.index("kubectl apply -k deploy/examples/etl\n")


def test_deploy_docs_name_the_argo_versions_and_their_commands_parse() -> None:
    docs = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    checked = docs[docs.index("**Checked against**") :].split("\n\n")[0]
    assert re.search(r"Argo Events v1\.\d+", checked) and re.search(r"Argo Workflows v3\.\d+", checked), checked
    for block in re.findall(r"```sh\n(.*?)```", docs, flags=re.S):
        result = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert result.returncode == 0, f"{result.stderr}\n{block}"
    for block in re.findall(r"```yaml\n(.*?)```", docs, flags=re.S):
        assert yaml.safe_load(block) is not None


def test_the_version_is_the_package_version() -> None:
    """The image tag and every place quoting the release say what pyproject.toml says."""
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    (image,) = kustomization["images"]
    assert image["name"] == "ftpsource" and image["newTag"] == VERSION
    quoted = []
    for path in [REPO / "docs" / "deploy.md", REPO / "Dockerfile", *sorted(DEPLOY.rglob("*"))]:
        if path.is_file() and path.suffix in {"", ".md", ".yaml"}:
            text = path.read_text(encoding="utf-8")
            quoted += [(path.name, v) for v in re.findall(r"ftpsource(?:-test-ftp)?:(\d+\.\d+\.\d+)\b", text)]
    assert quoted, "no image tag quoted anywhere"
    assert {v for _, v in quoted} == {VERSION}, quoted


# ------------------------------------------------------------------------------------------ monitoring


def _rule_groups(monitoring: Any) -> list[dict[str, Any]]:
    return monitoring.get("PrometheusRule", "ftpsource")["spec"]["groups"]


def test_monitoring_objects_match_their_schema(monitoring: Any, monitoring_validator: Any) -> None:
    checked = set()
    errors = []
    for obj in monitoring:
        if obj["kind"] in MONITORING_KINDS:
            errors += [f"{name_of(obj)}: {e}" for e in monitoring_validator(obj)]
            checked.add(obj["kind"])
    assert not errors, "\n".join(errors)
    assert checked == MONITORING_KINDS
    # Not vacuous: a misspelt field and a bad duration are caught.
    monitor = yaml.safe_load(yaml.safe_dump(monitoring.get("PodMonitor", "ftpsource-argo-events")))
    monitor["spec"]["podMetricsEndpoints"][0]["intreval"] = monitor["spec"]["podMetricsEndpoints"][0].pop("interval")
    rules = yaml.safe_load(yaml.safe_dump(monitoring.get("PrometheusRule", "ftpsource")))
    rules["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    assert any("intreval" in e for e in monitoring_validator(monitor))
    assert any("for" in e for e in monitoring_validator(rules))


def test_servicemonitor_scrapes_the_metrics_port(monitoring: Any) -> None:
    monitor = monitoring.get("ServiceMonitor", "ftpsource")
    service = monitoring.get("Service", "ftpsource")
    assert label_selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    endpoints = monitor["spec"]["endpoints"]
    assert endpoints and all(e["port"] in {p["name"] for p in service["spec"]["ports"]} for e in endpoints)
    assert endpoints[0]["port"] == "metrics" and endpoints[0].get("path", "/metrics") == "/metrics"


def test_alert_rules_have_the_required_shape(monitoring: Any) -> None:
    alerts = {}
    for group in _rule_groups(monitoring):
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert rule.get("alert") and isinstance(rule["expr"], str)
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"]
            alerts[rule["alert"]] = rule["expr"]
            for metric in re.findall(r"\bftpsource_(\w+?)(?:_bucket|_sum|_count)?\b", rule["expr"]):
                assert metric in METRICS, f"{rule['alert']} uses ftpsource_{metric}, which the server does not export"
    assert {
        "FtpsourceSourceFailing",
        "FtpsourceNoSuccessfulPoll",
        "FtpsourceOutboxGrowing",
        "FtpsourceFileMissing",
    } <= set(alerts)
    assert "ftpsource_source_errors_total" in alerts["FtpsourceSourceFailing"]
    assert 'type="ftpsource.file.missing"' in alerts["FtpsourceFileMissing"]


def _promtool() -> str:
    path = shutil.which("promtool")
    require(path, "promtool (Debian package prometheus) is not on PATH")
    assert path is not None
    return path


def test_promtool_accepts_the_rules(monitoring: Any, tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups(monitoring)}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_when_they_should_and_only_then(monitoring: Any, tmp_path: Path) -> None:
    """promtool's rule unit tests: a stuck source and a healthy one, minute by minute."""
    promtool = _promtool()
    # Annotations are checked by `promtool check rules`; here only when and with which labels.
    groups = yaml.safe_load(yaml.safe_dump(_rule_groups(monitoring)))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")

    def fired(alert: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
        return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": dict(lbl)} for lbl in labels]}

    stuck = {"source": "stuck"}
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'ftpsource_last_successful_poll_timestamp_seconds{source="stuck"}', "values": "0x40"},
                    {"series": 'ftpsource_last_successful_poll_timestamp_seconds{source="ok"}', "values": "0+60x40"},
                    {"series": 'ftpsource_outbox_pending{source="stuck"}', "values": "150x40"},
                    {"series": 'ftpsource_outbox_pending{source="ok"}', "values": "3x40"},
                    {"series": 'ftpsource_source_errors_total{source="stuck",kind="connect"}', "values": "0+1x40"},
                    {"series": 'ftpsource_source_errors_total{source="ok",kind="connect"}', "values": "2x40"},
                    {
                        "series": 'ftpsource_events_total{source="stuck",type="ftpsource.file.missing"}',
                        "values": "0 0 0 1x37",
                    },
                    {
                        "series": 'ftpsource_events_total{source="ok",type="ftpsource.file.ready",reason="new"}',
                        "values": "0+1x40",
                    },
                    {"series": "ftpsource_event_loop_lag_max_seconds", "values": "0.2x5 3x35"},
                    {
                        "series": 'argo_events_events_sent_failed_total{namespace="etl",eventsource_name="files",'
                        'event_name="incoming-ftp"}',
                        "values": "0x10 1x30",
                    },
                    {
                        "series": 'argo_events_events_sent_total{namespace="etl",eventsource_name="files",'
                        'event_name="incoming-ftp"}',
                        "values": "0+3x40",
                    },
                    {
                        "series": 'argo_events_action_failed_total{namespace="etl",sensor_name="etl",'
                        'trigger_name="etl-from-ftp"}',
                        "values": "0x40",
                    },
                ],
                "alert_rule_test": [
                    fired("FtpsourceNoSuccessfulPoll", "10m"),
                    fired("FtpsourceNoSuccessfulPoll", "25m", {**stuck, "severity": "critical"}),
                    fired("FtpsourceOutboxGrowing", "10m"),
                    fired("FtpsourceOutboxGrowing", "20m", {**stuck, "severity": "warning"}),
                    fired("FtpsourceSourceFailing", "10m"),
                    fired("FtpsourceSourceFailing", "25m", {**stuck, "kind": "connect", "severity": "warning"}),
                    fired("FtpsourceFileMissing", "2m"),
                    fired(
                        "FtpsourceFileMissing",
                        "10m",
                        {**stuck, "type": "ftpsource.file.missing", "severity": "warning"},
                    ),
                    fired("FtpsourceFileRejected", "30m"),
                    fired("FtpsourceEventLoopLagging", "15m"),
                    fired("FtpsourceEventLoopLagging", "25m", {"severity": "warning"}),
                    fired("FtpsourceEventsNotPublished", "8m"),
                    fired(
                        "FtpsourceEventsNotPublished",
                        "12m",
                        {
                            "namespace": "etl",
                            "eventsource_name": "files",
                            "event_name": "incoming-ftp",
                            "severity": "critical",
                        },
                    ),
                    fired("FtpsourceEventsNotPublished", "30m"),
                    fired("FtpsourceTriggerFailing", "30m"),
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unsettled_alert_fires_for_a_version_left_unsettled_only(monitoring: Any, tmp_path: Path) -> None:
    """A version delivered at 0 and never settled fires after 6h (+15m); a source that keeps settling
    (its oldest unsettled version is always recent) and one with nothing unsettled (0) never do."""
    promtool = _promtool()
    groups = yaml.safe_load(yaml.safe_dump(_rule_groups(monitoring)))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    series = "ftpsource_unsettled_oldest_delivered_timestamp_seconds"

    def fired(at: str, *labels: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": at,
            "alertname": "FtpsourceVersionsUnsettled",
            "exp_alerts": [{"exp_labels": lbl} for lbl in labels],
        }

    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "5m",
        "tests": [
            {
                "interval": "5m",
                "input_series": [
                    {"series": f'{series}{{source="stuck"}}', "values": "1x100"},
                    {"series": f'{series}{{source="busy"}}', "values": "1+300x100"},
                    {"series": f'{series}{{source="idle"}}', "values": "0x100"},
                ],
                "alert_rule_test": [
                    fired("6h"),
                    fired("6h30m", {"source": "stuck", "severity": "warning"}),
                    fired("8h", {"source": "stuck", "severity": "warning"}),
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the real server, as the pod runs it


def _materialise_pod_files(etl: Any, root: Path) -> dict[str, Path]:
    """Lay out the ftpsource container's mounts under ``root`` as the kubelet would: Secret items
    become files, claims and emptyDirs become empty directories. Returns mountPath -> local dir."""
    pod = ftpsource_deployment(etl)["spec"]["template"]["spec"]
    mounts: dict[str, Path] = {}
    for mount in ftpsource_container(etl)["volumeMounts"]:
        local = root / mount["mountPath"].strip("/")
        local.mkdir(parents=True, exist_ok=True)
        vol = volume(pod, mount["name"])
        if "secret" in vol or "projected" in vol:
            for path, (secret_name, key) in projected_files(vol).items():
                secret = etl.find("Secret", secret_name)
                assert secret is not None, secret_name
                (local / path).parent.mkdir(parents=True, exist_ok=True)
                (local / path).write_text(secret_value(secret, key), encoding="utf-8")
        mounts[mount["mountPath"]] = local
    return mounts


def _relocate(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, local in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(local) + value[len(mount_path.rstrip("/")) :]
    return value


def _http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_pod_command_runs_the_real_server_end_to_end(etl: Any, tmp_path: Path) -> None:
    """Start `ftpsource` with the Deployment's args (paths moved under a temp dir, ports free), answer
    its probes, then stream the EventSource's local source as Argo would: token from the Secret, config
    from the EventSource, staging into a real S3 server standing in for MinIO. The Sensor's filter and
    parameter keys must resolve on the real event, the staged key must hold the file's bytes, and the
    exit handler's `ftpsource settle` command, run with its token, must archive the file."""
    with moto_s3(bucket="etl-artifacts") as s3:
        _run_pod_command_end_to_end(etl, tmp_path, s3)


def _run_pod_command_end_to_end(etl: Any, tmp_path: Path, s3: Any) -> None:
    import json as json_

    import grpc

    from ftpsource._proto import generic_pb2, generic_pb2_grpc

    command = FTPSOURCE
    container = ftpsource_container(etl)
    mounts = _materialise_pod_files(etl, tmp_path / "pod")
    # The staging credential set points at the S3 server here, as cluster DNS points `minio` at MinIO.
    credentials_dir = mounts[parse_flags(container["args"])["credentials-dir"]]
    stage_set = (
        credentials_dir
        / yaml.safe_load(eventsource_events(etl)[("ftpsource-files", "incoming-local")]["config"])["stage"][
            "credentials"
        ]
    )
    (stage_set / "endpoint").write_text(s3.endpoint, encoding="utf-8")
    (stage_set / "hosts").write_text(urlsplit(s3.endpoint).netloc + "\n", encoding="utf-8")
    grpc_port, metrics_port = _free_port(), _free_port()
    args = []
    for arg in container["args"]:
        key, eq, value = arg.partition("=")
        if key == "--listen":
            value = f"127.0.0.1:{grpc_port}"
        elif key == "--metrics-listen":
            value = f"127.0.0.1:{metrics_port}"
        args.append(f"{key}{eq}{_relocate(value, mounts)}" if eq else arg)
    # Paths in the environment (FTPSOURCE_ALLOW_ROOTS is a colon-separated list) move with the mounts.
    env = {
        e["name"]: ":".join(_relocate(part, mounts) for part in e["value"].split(":"))
        for e in container.get("env", [])
        if "value" in e
    }
    server = subprocess.Popen(
        [*command, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = ""
    token_file = parse_flags(container["args"])["auth-token-file"]
    token = (mounts[mount_for(container, token_file)["mountPath"]] / Path(token_file).name).read_text()  # type: ignore[index]
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert server.poll() is None, server.communicate(timeout=5)
            try:
                if _http_status(f"http://127.0.0.1:{metrics_port}/readyz") == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the server never became ready")
        assert _http_status(f"http://127.0.0.1:{metrics_port}/healthz") == 200

        spec = eventsource_events(etl)[("ftpsource-files", "incoming-local")]
        config = yaml.safe_load(spec["config"])
        incoming = _relocate(urlsplit(config["url"]).path, mounts)
        assert incoming != urlsplit(config["url"]).path, "the local source's directory is not mounted"
        Path(incoming, "sales.csv").write_bytes(b"Order ID,Amount\n1,10\n")
        config.update(url=Path(incoming).as_uri(), stable_for="200ms", poll_interval="1s")
        request = generic_pb2.EventSource(name="incoming-local", config=yaml.safe_dump(config).encode())
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = generic_pb2_grpc.EventingStub(channel)
            with pytest.raises(grpc.RpcError) as denied:
                next(iter(stub.StartEventSource(request, timeout=10)))
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stream = stub.StartEventSource(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
            event = next(iter(stream))
            body = json_.loads(event.payload)
            # The Workflow's exit handler, as its pod runs it, while the stream is live.
            spec_ = etl.get("WorkflowTemplate", "ftpsource-etl")["spec"]
            handler = next(t for t in spec_["templates"] if t["name"] == spec_["onExit"])["container"]
            settle_env = {e["name"]: e.get("value", "") for e in ftpsource_container(etl)["env"]}
            settle_token = Path(_relocate(settle_env["FTPSOURCE_SETTLE_TOKEN_FILE"], mounts))
            assert settle_token.read_text() != token
            settle_args = []
            for arg in handler["args"]:
                arg = arg.replace("{{workflow.parameters.event_id}}", body["id"]).replace("{{workflow.name}}", "wf")
                arg = arg.replace("{{workflow.status}}", "Succeeded")
                if arg.startswith("{{="):
                    arg = "succeeded"  # the expression, for a Workflow that succeeded
                if arg.startswith("--server="):
                    arg = f"--server=127.0.0.1:{grpc_port}"
                elif arg.startswith("--token-file="):
                    arg = f"--token-file={settle_token}"
                settle_args.append(arg)
            settled = subprocess.run(
                [*command, *settle_args], capture_output=True, text=True, timeout=60,
                env={**os.environ, "FTPSOURCE_LOG_FORMAT": "text"},
            )  # fmt: skip
            assert settled.returncode == 0, settled.stdout + settled.stderr
            archived = Path(incoming, time.strftime("archive/%Y/%m/%d/sales.csv", time.gmtime()))
            deadline = time.monotonic() + 30
            while not archived.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert archived.read_bytes() == b"Order ID,Amount\n1,10\n"
            assert not Path(incoming, "sales.csv").exists()
            # The stream token cannot be replaced by the settle token to open a stream.
            with pytest.raises(grpc.RpcError) as wrong:
                next(
                    iter(
                        stub.StartEventSource(
                            request, metadata=[("authorization", f"Bearer {settle_token.read_text()}")], timeout=10
                        )
                    )
                )
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stream.cancel()
        assert event.name == "incoming-local"
        assert body["type"] == "ftpsource.file.ready"

        # What the Sensor sees: Argo wraps the payload as the `body` of its own event.
        argo_event = {"body": body}

        def lookup(key: str) -> Any:
            node: Any = argo_event
            for part in key.split("."):
                node = node[part]
            return node

        etl_sensor = etl.get("Sensor", "etl")
        dependency = next(d for d in etl_sensor["spec"]["dependencies"] if d["eventName"] == "incoming-local")
        for data_filter in dependency["filters"]["data"]:
            assert lookup(data_filter["path"]) in data_filter["value"]
        trigger = next(t for t in etl_sensor["spec"]["triggers"] if t["template"]["conditions"] == dependency["name"])
        values = {
            p["src"]["dataKey"]: lookup(p["src"]["dataKey"]) for p in trigger["template"]["argoWorkflow"]["parameters"]
        }
        digest = hashlib.sha256(b"Order ID,Amount\n1,10\n").hexdigest()
        assert values["body.data.checksum.value"] == digest
        # The key the Workflow's input artifact reads holds exactly the verified bytes.
        assert body["data"]["staged"]["bucket"] == "etl-artifacts"
        assert s3.objects("etl-artifacts")[values["body.data.staged.key"]] == b"Order ID,Amount\n1,10\n"
        assert values["body.id"] == body["id"]
        assert values["body.data.generation"] == 1
        # Every metric the alert rules use is one this server exports.
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            page = response.read().decode()
        # Families (a counter's may be written with or without `_total`) and sample names alike.
        families = set(re.findall(r"^# TYPE (\w+)", page, flags=re.M))
        exported = families | {f"{f}_total" for f in families} | set(re.findall(r"^(\w+)[{ ]", page, flags=re.M))
        rules = yaml.safe_load((DEPLOY / "components" / "prometheus" / "prometheusrule.yaml").read_text())
        used = {
            m for g in rules["spec"]["groups"] for r in g["rules"] for m in re.findall(r"\bftpsource_\w+", r["expr"])
        }
        assert used and used <= exported, f"not exported: {used - exported}"

        workflow = trigger["template"]["argoWorkflow"]["source"]["resource"]
        name = workflow["metadata"]["name"] + values["body.id"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name), f"{name} is not a valid Workflow name"
    finally:
        server.terminate()
        try:
            out, err = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
            raise AssertionError("ftpsource did not exit within 20 s of SIGTERM") from None
        output = out + err
    assert token not in output, "the auth token leaked into the logs"
    logged = [line for line in output.splitlines() if line.strip()]
    assert logged, "the server logged nothing"
    for line in logged:
        json_.loads(line)  # --log-format=json: every line is one JSON object
