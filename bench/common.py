"""What every benchmark shares: the result record, timing helpers, machine notes, scratch space."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ftpsource.loopmon import LoopMonitor

__all__ = [
    "LoopLag",
    "Result",
    "best_of_alternating",
    "fmt_s",
    "machine_notes",
    "machine_summary",
    "rss_mb",
    "scratch_dir",
    "spawn_overhead_s",
    "time_command",
]

ROUNDS = 3
T = TypeVar("T")


@dataclass
class Result:
    """One benchmark's verdict. ``ratio`` is compared with ``limit`` in the direction of ``higher_is_better``."""

    name: str
    goal: str
    baseline: str
    measured: str
    ratio: float
    limit: float
    higher_is_better: bool
    size: str
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))
    machine: str = field(default_factory=lambda: machine_summary())
    quick: bool = False
    details: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error is not None:
            return False
        return self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit

    @property
    def target(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.limit:g}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def best_of_alternating(
    candidates: Sequence[tuple[str, Callable[[], float]]], rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Run each candidate once per round, alternating, so slow phases of a noisy VM hit both alike.

    Each callable returns its own elapsed seconds (so it can leave set-up out of the timing).
    """
    times: dict[str, list[float]] = {name: [] for name, _ in candidates}
    for _ in range(rounds):
        for name, fn in candidates:
            times[name].append(fn())
    return times


#: An idle asyncio loop in its own process, sampled like the server's (every 10 ms) until its stdin
#: closes; prints its worst lag in seconds. No GIL or loop is shared with the process measured.
_CONTROL = """
import asyncio, sys, threading, time
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
async def main():
    worst, last = 0.0, time.perf_counter()
    print("ready", flush=True)
    while not done.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        worst, last = max(worst, now - last - 0.01), now
    print(worst, flush=True)
asyncio.run(main())
"""


class LoopLag:
    """The worst event-loop lag over the stretches measured with it: the server's own ``LoopMonitor``
    (what ``ftpsource_event_loop_lag_seconds`` reports) sampling the running loop every 10 ms.

    Where a benchmark's client shares the loop with the server, the figure includes the client's work.
    The baseline (``control_s``) is an idle loop in another process sampled the same way at the same
    time: what the machine alone does to any loop meanwhile (on two cores busy with a Python S3
    server and loopback traffic, that reaches hundreds of milliseconds for a loop doing nothing).
    """

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.control_s = 0.0
        #: the most CPU time the loop's thread used between two 10 ms wake-ups: the loop held by work,
        #: whatever else the machine did meanwhile (kernel work on loopback traffic counts too)
        self.held_s = 0.0

    async def _hold(self) -> None:
        wall_cpu = time.thread_time()
        while True:
            await asyncio.sleep(0.01)
            now = time.thread_time()
            self.held_s = max(self.held_s, now - wall_cpu)
            wall_cpu = now

    @contextlib.asynccontextmanager
    async def measuring(self) -> AsyncIterator[LoopLag]:
        control = subprocess.Popen(
            [sys.executable, "-c", _CONTROL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert control.stdin is not None and control.stdout is not None
        control.stdout.readline()  # "ready": it samples from now on
        monitor = LoopMonitor(interval_s=0.01, window_s=1e9)
        monitor.start()
        holding = asyncio.create_task(self._hold())
        try:
            yield self
        finally:
            self.worst_s = max(self.worst_s, monitor.worst_lag_s())
            await monitor.stop()
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
            control.stdin.close()
            self.control_s = max(self.control_s, float(control.stdout.readline() or 0.0))
            control.wait(10)

    async def over(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable`` while measuring: ``asyncio.run(lag.over(main()))``."""
        async with self.measuring():
            return await awaitable

    @property
    def line(self) -> str:
        return (
            f"worst event-loop lag: {fmt_s(self.worst_s)} (an idle loop in another process at the same time: "
            f"{fmt_s(self.control_s)}; the loop's own CPU time between two 10 ms wake-ups: at most "
            f"{fmt_s(self.held_s)})"
        )


def time_command(argv: Sequence[str], *, stdout: int | None = subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=stdout, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def spawn_overhead_s() -> float:
    """fork+exec+wait of a do-nothing program; subtracted from a baseline command's time."""
    true = shutil.which("true") or "/bin/true"
    return min(time_command([true]) for _ in range(5))


def rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of this process in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@contextlib.contextmanager
def scratch_dir(base: str | None, name: str) -> Iterator[Path]:
    """A fresh directory for one benchmark's data, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"ftpsource-bench-{name}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cmd_first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _virtualised() -> bool:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        return " hypervisor" in f.read()
    return False


def _fs_type(path: str) -> str:
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        return "?"
    return _cmd_first_line([findmnt, "-n", "-o", "FSTYPE", "-T", path])


def machine_summary() -> str:
    """A one-line description for the results table."""
    virt = ", VM" if _virtualised() else ""
    return f"{os.cpu_count()} CPU {_cpu_model()}{virt}, {_mem_total_gib():.0f} GiB RAM"


def machine_notes(scratch_base: str | None) -> list[str]:
    base = scratch_base or tempfile.gettempdir()
    load1, load5, _ = os.getloadavg()
    return [
        f"CPU: {os.cpu_count()} x {_cpu_model()}{' (virtualised)' if _virtualised() else ''}",
        f"RAM: {_mem_total_gib():.1f} GiB; load average at start {load1:.2f} (1 min), {load5:.2f} (5 min)",
        f"Kernel: {platform.system()} {platform.release()}; scratch filesystem: {_fs_type(base)} ({base})",
        f"Python {platform.python_version()} ({sys.implementation.name}); {ssl.OPENSSL_VERSION}",
        f"Baselines: {_cmd_first_line(['sha256sum', '--version'])}; {_cmd_first_line(['find', '--version'])}",
    ]
