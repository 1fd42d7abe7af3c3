"""The pause of automatic full collections: nested and overlapping uses, restored thresholds."""

from __future__ import annotations

import gc
import threading

from ftpsource.gcpause import DROP_SLICE, drop_in_slices, full_collections_paused


def test_pause_is_restored_by_the_outermost_exit_only() -> None:
    before = gc.get_threshold()
    with full_collections_paused():
        paused = gc.get_threshold()
        assert paused[:2] == before[:2]  # young collections go on
        assert paused[2] > 1_000_000
        with full_collections_paused():
            pass
        assert gc.get_threshold() == paused
    assert gc.get_threshold() == before


def test_pause_survives_an_exception_and_overlaps_across_threads() -> None:
    before = gc.get_threshold()
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with full_collections_paused():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert entered.wait(10)
    try:
        with full_collections_paused():
            raise ValueError
    except ValueError:
        pass
    assert gc.get_threshold()[2] > 1_000_000  # the other thread's pause still holds
    release.set()
    thread.join(10)
    assert gc.get_threshold() == before


def test_drop_in_slices_empties_the_list() -> None:
    items = [object() for _ in range(DROP_SLICE * 2 + 7)]
    drop_in_slices(items)
    assert items == []
