"""Supersede bookkeeping: a stream that goes away while waiting for its predecessor leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ftpsource.server import Sessions, Superseded


async def test_cancelled_while_superseding_does_not_block_later_streams() -> None:
    sessions = Sessions()
    first = await sessions.open("s")
    first.task = asyncio.create_task(asyncio.sleep(3600))  # a predecessor slow to stop
    first.task.cancel()
    waiting = asyncio.create_task(sessions.open("s"))
    await asyncio.sleep(0)  # let it register and start waiting (no event to await: it is the waiter)
    waiting.cancel()  # the second client gives up
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    sessions.close(first)  # the predecessor finally stops
    third = await asyncio.wait_for(sessions.open("s"), 5)
    assert third is not first and sessions.all() == [third]


async def test_the_newest_stream_wins_over_one_still_waiting() -> None:
    # Z is live, A waits for Z to stop, B arrives: A must never start, and B starts once Z stops.
    sessions = Sessions()
    z = await sessions.open("s")
    z.task = asyncio.create_task(asyncio.sleep(3600))
    a = asyncio.create_task(sessions.open("s"))
    await asyncio.sleep(0)
    b = asyncio.create_task(sessions.open("s"))
    await asyncio.sleep(0)
    assert z.task.cancelled() or z.task.cancelling()
    assert not a.done() and not b.done()
    sessions.close(z)  # Z's cleanup finishes
    with pytest.raises(Superseded):
        await asyncio.wait_for(a, 5)
    newest = await asyncio.wait_for(b, 5)
    assert sessions.all() == [newest]


async def test_a_waiter_that_gives_up_still_makes_its_successor_wait_for_the_live_stream() -> None:
    sessions = Sessions()
    z = await sessions.open("s")
    a = asyncio.create_task(sessions.open("s"))
    await asyncio.sleep(0)
    b = asyncio.create_task(sessions.open("s"))
    await asyncio.sleep(0)
    a.cancel()  # A's client goes away while A waits for Z
    with contextlib.suppress(asyncio.CancelledError, Superseded):
        await a
    await asyncio.sleep(0.05)
    assert not b.done(), "B started while Z was still running"
    sessions.close(z)
    newest = await asyncio.wait_for(b, 5)
    assert sessions.all() == [newest]
