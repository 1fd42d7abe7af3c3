"""``encode_event`` writes CloudEvents JSON itself; the CloudEvents SDK is the reference it must match."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given
from hypothesis import strategies as st

from ftpsource.core.events import EVENT_TYPES, SourceInfo, encode_event
from ftpsource.core.model import EventSpec, SetMember

INFO = SourceInfo("files-1a2b", "sftp://partner.example.com/outbound", "sha256")
READY = EventSpec(
    "ready",
    "daily/sales 2026-11-26 (ü).csv",
    1764136800.123456,
    size=123,
    mtime=1764136700.0,
    checksum="a" * 64,
    checksum_method="download",
    reason="reupload",
    generation=2,
    previous=("b" * 64, 100, 1764050000.5),
    first_seen=1764136790.0,
    stable_since=1764136770.25,
    deadline=1764136800.0,
    late=True,
    late_seconds=0.123456,
)
SPECS = [
    READY,
    EventSpec("ready", "a.csv", 1764136800.0, size=1, mtime=1.0, reason="new", generation=1),
    EventSpec("rejected", "b.gz", 1764136800.5, size=9, mtime=2.0, problem="gzip: truncated", generation=1),
    EventSpec("deleted", "c.csv", 1764136801.0, size=3, mtime=3.0, generation=4),
    EventSpec("missing", "sales_20261126.csv", 1764136802.0, period="2026-11-26T06:00:00+01:00", deadline=1.0),
    EventSpec(
        "set_complete",
        "daily",
        1764136803.0,
        period="2026-11-26",
        deadline=2.0,
        generation=1,
        members=(SetMember("x.csv", 10, "c" * 64, 5.0, 1),),
    ),
]


def sdk_bytes(payload: bytes) -> bytes:
    """Parse with the SDK (which validates the attributes) and let it write the event again."""
    fmt = JSONFormat()
    return fmt.write(fmt.read(CloudEvent, payload))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type)
def test_bytes_are_what_the_sdk_writes(spec: EventSpec) -> None:
    eid, payload = encode_event(INFO, spec)
    assert sdk_bytes(payload) == payload
    event = json.loads(payload)
    assert (event["id"], event["type"], event["subject"]) == (eid, EVENT_TYPES[spec.type], spec.path)
    assert event["time"].endswith("Z") and event["datacontenttype"] == "application/json"


@given(at=st.floats(min_value=0, max_value=4e9, allow_nan=False), path=st.text(min_size=1, max_size=40))
def test_any_time_and_path_encode_as_the_sdk_would(at: float, path: str) -> None:
    _, payload = encode_event(INFO, EventSpec("ready", path, at, size=1, mtime=at, reason="new", generation=1))
    assert sdk_bytes(payload) == payload
