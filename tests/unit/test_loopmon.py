"""LoopMonitor arithmetic with an injected clock: lag, the worst recent lag, and the stall rule."""

from __future__ import annotations

import asyncio

import pytest

from ftpsource.loopmon import LoopMonitor
from ftpsource.metrics import Metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wake(mon: LoopMonitor, clock: FakeClock, late_by: float) -> None:
    """What the monitor task does when its sleep of ``interval_s`` ends ``late_by`` seconds late."""
    clock.now += mon.interval_s + late_by
    mon._record(clock.now, late_by)


def test_lag_worst_and_stall() -> None:
    clock = FakeClock()
    metrics = Metrics()
    mon = LoopMonitor(metrics, stall_s=30.0, interval_s=0.25, window_s=60.0, clock=clock)
    assert mon.alive() and mon.lag_s() == 0.0
    wake(mon, clock, 5.0)
    wake(mon, clock, 0.01)
    assert mon.lag_s() == 0.01
    assert mon.worst_lag_s() == 5.0
    assert metrics.registry.get_sample_value("ftpsource_event_loop_lag_max_seconds") == 5.0
    assert metrics.registry.get_sample_value("ftpsource_event_loop_lag_seconds") == 0.01
    for _ in range(300):  # 75 s of normal wake-ups: the 5 s lag leaves the window
        wake(mon, clock, 0.02)
    assert mon.worst_lag_s() == 0.02

    clock.now += 0.25 + 29.0  # stuck right now, not yet for stall_s: still alive, lag shows it
    assert mon.alive()
    assert mon.lag_s() == mon.worst_lag_s() == pytest.approx(29.0)
    clock.now += 1.5
    assert not mon.alive()
    wake(mon, clock, 0.0)
    assert mon.alive()


async def test_runs_on_the_loop_and_stops() -> None:
    mon = LoopMonitor(interval_s=0.01)
    mon.start()
    first = mon._last_progress
    for _ in range(500):
        await asyncio.sleep(0.01)
        if mon._last_progress > first:
            break
    assert mon._last_progress > first
    await mon.stop()
    assert mon._task is None
