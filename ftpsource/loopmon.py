"""Event-loop health: how late the loop wakes up (a lag gauge) and whether it still makes progress.

A task sleeps for ``interval_s`` and measures how much later than asked it woke: that is the time
some callback held the loop. The HTTP thread that serves ``/healthz`` and ``/metrics`` reads the
monitor without the loop's help, so a loop that is stuck (a blocking call, a runaway computation)
shows there as a growing lag and, after ``stall_s`` without progress, as a failing liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable

from .metrics import Metrics

__all__ = ["LoopMonitor"]

INTERVAL_S = 0.25
WORST_WINDOW_S = 60.0


class LoopMonitor:
    """Measures the running loop's lag; ``alive()`` and ``lag_s()`` are safe to call from any thread."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        stall_s: float = 30.0,
        interval_s: float = INTERVAL_S,
        window_s: float = WORST_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_s = stall_s
        self.interval_s = interval_s
        self.window_s = window_s
        self._clock = clock
        self._last_progress = clock()
        self._last_lag = 0.0
        self._recent: deque[tuple[float, float]] = deque()  # (when, lag), newest last
        self._recent_lock = threading.Lock()  # the HTTP thread reads what the loop writes
        self._task: asyncio.Task[None] | None = None
        if metrics is not None:
            # Computed at scrape time, so a loop that is stuck right now shows its lag growing.
            metrics.loop_lag.set_function(self.lag_s)
            metrics.loop_lag_worst.set_function(self.worst_lag_s)

    def start(self) -> None:
        """Start measuring on the running loop."""
        self._last_progress = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            now = self._clock()
            self._record(now, max(0.0, now - self._last_progress - self.interval_s))

    def _record(self, now: float, lag: float) -> None:
        self._last_lag = lag
        self._last_progress = now
        recent = self._recent
        with self._recent_lock:
            while recent and recent[0][0] < now - self.window_s:
                recent.popleft()
            # Only a sample larger than every later one can ever be the window's worst again.
            while recent and recent[-1][1] <= lag:
                recent.pop()
            recent.append((now, lag))

    def stalled_for_s(self) -> float:
        """Seconds since the loop last ran the monitor's wake-up, beyond the expected sleep."""
        return max(0.0, self._clock() - self._last_progress - self.interval_s)

    def lag_s(self) -> float:
        """The last measured lag, or the current one when the loop is late right now."""
        return max(self._last_lag, self.stalled_for_s())

    def worst_lag_s(self) -> float:
        """The worst lag over the last ``window_s`` seconds, the current stall included."""
        now = self._clock()
        with self._recent_lock:
            worst = max((lag for when, lag in self._recent if when >= now - self.window_s), default=0.0)
        return max(worst, self.stalled_for_s())

    def alive(self) -> bool:
        """False once the loop has made no progress for ``stall_s`` seconds."""
        return self.stalled_for_s() <= self.stall_s
