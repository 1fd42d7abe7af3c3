"""What both backends share for the ``files`` table: its columns and the mapping to ``FileRecord``."""

from __future__ import annotations

from typing import Any

from ..core.model import FileRecord, State

__all__ = ["FILE_COLUMNS", "record_row", "to_record"]

FILE_COLUMNS = (
    "path, size, mtime, state, first_seen, stable_since, generation, ready_checksum, ready_size, "
    "ready_mtime, problem, problem_since, checked"
)


def record_row(source_id: str, r: FileRecord) -> tuple[Any, ...]:
    """The ``files`` row of a record: ``source_id`` then ``FILE_COLUMNS`` in order."""
    return (
        source_id,
        r.path,
        r.size,
        r.mtime,
        r.state.value,
        r.first_seen,
        r.stable_since,
        r.generation,
        r.ready_checksum,
        r.ready_size,
        r.ready_mtime,
        r.problem,
        r.problem_since,
        r.checked,
    )


def to_record(r: tuple[Any, ...]) -> FileRecord:
    """A record from a row selected as ``FILE_COLUMNS``."""
    return FileRecord(
        path=r[0],
        size=r[1],
        mtime=r[2],
        state=State(r[3]),
        first_seen=r[4],
        stable_since=r[5],
        generation=r[6],
        ready_checksum=r[7],
        ready_size=r[8],
        ready_mtime=r[9],
        problem=r[10],
        problem_since=r[11],
        checked=r[12],
    )
