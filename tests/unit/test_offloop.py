"""``Offloop``: work run on a loop of its own returns to its caller as if awaited there, and a cancelled
caller gets control back only once that work has ended."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

import pytest

from ftpsource.offloop import Offloop

OFF = Offloop("ftpsource-test-offloop")


async def _cancel_once_started(work: Awaitable[None], started: threading.Event, times: int = 1) -> None:
    """Await ``work`` in a task and cancel it ``times`` (0.05 s apart) once ``started`` is set: the
    task must end cancelled."""
    caller = asyncio.ensure_future(work)
    await asyncio.to_thread(started.wait, 5)
    for i in range(times):
        if i:
            await asyncio.sleep(0.05)
        caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_the_work_runs_on_another_thread_and_its_result_comes_back() -> None:
    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        await asyncio.sleep(0)
        return threading.get_ident(), asyncio.get_running_loop()

    ident, loop = await OFF.run(where())
    assert ident != threading.get_ident() and loop is not asyncio.get_running_loop()
    assert loop is OFF.loop()


async def test_its_exception_is_the_callers() -> None:
    class Boom(Exception):
        pass

    async def fail() -> None:
        await asyncio.sleep(0)
        raise Boom("no")

    with pytest.raises(Boom, match="no"):
        await OFF.run(fail())


async def test_a_cancelled_caller_returns_only_after_the_work_has_ended() -> None:
    started, ended = threading.Event(), threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.2)  # winding down takes a while, on the other loop
            ended.set()

    await _cancel_once_started(OFF.run(slow()), started)
    assert ended.is_set()


async def test_a_caller_cancelled_twice_still_waits_and_is_cancelled() -> None:
    started, ended = threading.Event(), threading.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            ended.set()
            raise RuntimeError("what it ended with is nobody's now") from None

    await _cancel_once_started(OFF.run(stubborn()), started, times=2)
    assert ended.is_set()


def test_callers_on_different_loops_share_it() -> None:
    async def value(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def call(n: int) -> int:
        return await OFF.run(value(n))

    assert [asyncio.run(call(n)) for n in range(3)] == [0, 1, 2]


async def test_clean_up_that_must_finish_is_not_cut_short_by_a_cancelled_caller() -> None:
    started, ended = threading.Event(), threading.Event()

    async def close() -> None:
        started.set()
        await asyncio.sleep(0.2)
        ended.set()

    await _cancel_once_started(OFF.run(close(), cancellable=False), started)
    assert ended.is_set()


async def test_work_that_cannot_start_fails_its_caller_instead_of_hanging() -> None:
    with pytest.raises(TypeError):
        await asyncio.wait_for(OFF.run(42), 5)  # type: ignore[arg-type]
