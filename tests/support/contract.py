"""What the product contract promises about events, derived from the code that makes them."""

from __future__ import annotations

import json

from ftpsource.core.events import SourceInfo, encode_event
from ftpsource.core.model import EventSpec, Staged


def _ready_data(*, staged: bool) -> dict[str, object]:
    info = SourceInfo("contract", "file:///data", "sha256")
    spec = EventSpec(
        type="ready",
        path="in/a.csv",
        at=1.0,
        size=1,
        mtime=1.0,
        checksum="0" * 64,
        checksum_method="sha256",
        reason="new",
        generation=1,
        staged=Staged("s3://b/k", "b", "k", 1, "0" * 64) if staged else None,
    )
    _, payload = encode_event(info, spec)
    data = json.loads(payload)["data"]
    assert isinstance(data, dict)
    return data


#: every field of a ready event's ``data``, ``staged`` included (present when the source stages)
READY_DATA_FIELDS = frozenset(_ready_data(staged=True))
#: the fields every ready event carries, staged or not
READY_DATA_FIELDS_ALWAYS = frozenset(_ready_data(staged=False))
