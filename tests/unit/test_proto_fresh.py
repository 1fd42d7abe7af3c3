"""The committed gRPC stubs match proto/*.proto; Argo's wire names and ftpsource's own stay put."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from ftpsource._proto import generic_pb2, generic_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from ftpsource._proto.generate import PROTOS, generate

_COMMITTED = {
    "generic": (generic_pb2, generic_pb2_grpc),
    "settlement": (settlement_pb2, settlement_pb2_grpc),
}


def _load(path: Path, name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_proto_has_committed_stubs() -> None:
    assert set(PROTOS) == set(_COMMITTED)
    assert {p.stem for p in (Path(__file__).resolve().parents[2] / "proto").glob("*.proto")} == set(PROTOS)


@pytest.mark.parametrize("name", PROTOS)
def test_stubs_are_generated_from_the_current_proto(tmp_path: Path, name: str) -> None:
    pb2, pb2_grpc = _COMMITTED[name]
    generate(tmp_path)
    fresh: Any = _load(tmp_path / f"{name}_pb2.py", f"fresh_{name}_pb2")
    assert fresh.DESCRIPTOR.serialized_pb == pb2.DESCRIPTOR.serialized_pb, "run `make proto`"
    assert pb2_grpc.__file__ is not None
    committed = Path(pb2_grpc.__file__).read_text()
    regenerated = (tmp_path / f"{name}_pb2_grpc.py").read_text()
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


def test_settlement_wire_names() -> None:
    d = settlement_pb2.DESCRIPTOR
    assert d.package == "ftpsource.v1"
    m = d.services_by_name["Settlement"].methods_by_name["Settle"]
    assert m.input_type.full_name == "ftpsource.v1.SettleRequest"
    assert not m.server_streaming and not m.client_streaming
    req = d.message_types_by_name["SettleRequest"]
    assert [(f.name, f.number) for f in req.fields] == [("event_id", 1), ("outcome", 2), ("message", 3)]
    assert [(v.name, v.number) for v in d.enum_types_by_name["Outcome"].values] == [
        ("OUTCOME_UNSPECIFIED", 0),
        ("SUCCEEDED", 1),
        ("FAILED", 2),
    ]
