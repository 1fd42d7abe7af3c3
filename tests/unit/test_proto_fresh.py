"""The committed gRPC stubs match proto/generic.proto and Argo's wire names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ftpsource._proto import generic_pb2, generic_pb2_grpc
from ftpsource._proto.generate import generate


def _load(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_generated_from_the_current_proto(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh: Any = _load(tmp_path / "generic_pb2.py", "fresh_generic_pb2")
    assert fresh.DESCRIPTOR.serialized_pb == generic_pb2.DESCRIPTOR.serialized_pb, "run `make proto`"
    committed = (Path(generic_pb2_grpc.__file__)).read_text()
    regenerated = (tmp_path / "generic_pb2_grpc.py").read_text()
    assert _code_lines(committed) == _code_lines(regenerated), "run `make proto`"


def _code_lines(text: str) -> list[str]:
    """Generated code minus the lines that only record the generator's version."""
    return [ln for ln in text.splitlines() if "version" not in ln.lower()]


def test_wire_names_match_argo() -> None:
    d = generic_pb2.DESCRIPTOR
    assert d.package == "generic"
    svc = d.services_by_name["Eventing"]
    m = svc.methods_by_name["StartEventSource"]
    assert m.input_type.full_name == "generic.EventSource" and m.output_type.full_name == "generic.Event"
    assert m.server_streaming and not m.client_streaming
    es = d.message_types_by_name["EventSource"]
    assert [(f.name, f.number, f.type) for f in es.fields] == [("name", 1, 9), ("config", 2, 12)]
    ev = d.message_types_by_name["Event"]
    assert [(f.name, f.number, f.type) for f in ev.fields] == [("name", 1, 9), ("payload", 2, 12)]
