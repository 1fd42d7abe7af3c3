"""An event loop of its own, in a thread of its own, for I/O whose per-byte work must not run on the
server's loop: ``await Offloop("name").run(coro)`` runs ``coro`` there and returns what it returns.

Why: sending a staged part to object storage costs the sending thread a copy and the kernel's loopback
or TCP work for every byte (measured: a few milliseconds per 8 MiB part, several parts in one loop
iteration). On the server's loop that is lag for every stream and every delivery confirmation; on a
loop of its own it only competes for a CPU (the socket calls release the GIL).

Cancelling the caller cancels ``coro`` on the other loop and waits until it has ended, so nothing it
does outlives its caller (an aborted upload must not have a part still arriving afterwards). Clean-up
that must finish (closing a client's connections) is run with ``cancellable=False``: the caller still
waits for it, but a cancelled caller does not cut it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Collection, Coroutine
from typing import Any, TypeVar

__all__ = ["Offloop", "until_ended"]

T = TypeVar("T")


class Offloop:
    """A daemon thread running an event loop, started on first use and kept for the process's life
    (its clients' connections stay pooled across the server's loops and streams)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started if it is not yet."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=serve, name=self.name, daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    async def run(self, coro: Coroutine[Any, Any, T], *, cancellable: bool = True) -> T:
        """``await coro`` on this loop; its result or exception is the caller's. A cancelled caller
        cancels it (unless not ``cancellable``) and waits for it to end before it is cancelled itself."""
        there = self.loop()
        here = asyncio.get_running_loop()
        result: asyncio.Future[T] = here.create_future()
        task: asyncio.Task[T] | None = None  # read and written on ``there`` only

        def settle(done: asyncio.Task[T]) -> None:  # on ``here``
            if result.done():
                return
            if done.cancelled():
                result.cancel()
            elif (exc := done.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(done.result())

        def report(done: asyncio.Task[T]) -> None:  # on ``there``
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody to tell
                here.call_soon_threadsafe(settle, done)

        def failed(exc: BaseException) -> None:  # on ``here``
            if not result.done():
                result.set_exception(exc)

        def start() -> None:
            nonlocal task
            try:
                task = there.create_task(coro)
            except BaseException as exc:  # not a coroutine, say: the caller must not wait for ever
                with contextlib.suppress(RuntimeError):
                    here.call_soon_threadsafe(failed, exc)
                raise
            task.add_done_callback(report)

        def cancel() -> None:
            if task is not None:
                task.cancel()

        there.call_soon_threadsafe(start)
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            if cancellable:
                # ``start`` ran first (one queue, in order): the task exists by the time ``cancel`` runs.
                there.call_soon_threadsafe(cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await until_ended([result])
            if not result.cancelled():
                result.exception()  # what it ended with is not the caller's any more: it was cancelled
            raise


async def until_ended(futures: Collection[asyncio.Future[Any]]) -> None:
    """Wait until every one of ``futures`` is done, even if cancelled meanwhile (clean-up that must not
    be cut short); such a cancellation is raised once they are."""
    cancelled = False
    while not all(f.done() for f in futures):
        try:
            await asyncio.wait([f for f in futures if not f.done()])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
