"""Keeping the cyclic garbage collector and big deallocations from holding the event loop.

A full collection walks every tracked object that is not frozen, holding the GIL: while a worker
thread builds a million-entry listing (or a million records), the collections it sets off walk
everything built so far, up to 0.4 s at a time, and no thread runs meanwhile, the event loop's
included. The structures being built hold no reference cycles, so the walk finds nothing.

``full_collections_paused`` keeps the automatic full collections off while such a structure is
built (young collections still run, so short-lived cyclic garbage is still collected); what is to
live on is frozen afterwards (``watcher.freeze_long_lived``), what is not is dropped with
``drop_in_slices`` before the pause ends, so the next full collection walks neither.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["DROP_SLICE", "drop_in_slices", "full_collections_paused"]

#: Objects freed by one C call of ``drop_in_slices`` (a few milliseconds).
DROP_SLICE = 20_000
_NEVER = 1 << 30  # gen-1 collections before a full one: never, in practice

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def full_collections_paused() -> Iterator[None]:
    """No automatic full collection until the outermost of these (in any thread or task) ends."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], _NEVER)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None


def drop_in_slices(items: list[Any]) -> None:
    """Empty ``items`` a slice at a time: freeing a million objects in one call (the list going out of
    scope) holds the GIL for ~0.1 s; between slices other threads run. Run it in a worker thread."""
    while items:
        del items[-DROP_SLICE:]
