"""Supersede bookkeeping: a stream that goes away while waiting for its predecessor leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib

from ftpsource.server import Sessions


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
