"""Goal 1: hashing a 1 GiB local file (sha256) at >= 0.8x the speed of ``sha256sum`` on the same file.

Both read from a warm page cache (the file is read once first), runs alternate, best of 3 each. The
ftpsource side is ``LocalAdapter.digest`` (``_digest_sync`` on a worker thread), exactly what the
watcher calls, with no format verifier (a ``.bin`` file has none).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import time
from pathlib import Path

from ftpsource.adapters.local import LocalAdapter
from ftpsource.config import SourceConfig
from ftpsource.core.paths import PathFilter
from ftpsource.credentials import Credentials

from .common import Result, best_of_alternating, fmt_s, spawn_overhead_s

__all__ = ["run"]

GIB = 1024**3
BLOCK = 4 * 1024 * 1024
LIMIT = 0.8


def _make_file(path: Path, size: int) -> None:
    rng = random.Random(2)
    with open(path, "wb") as f:
        for _ in range(size // BLOCK):
            f.write(rng.randbytes(BLOCK))


def _warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(BLOCK):
            pass


def run(scratch: Path, quick: bool) -> Result:
    size = GIB // 4 if quick else GIB
    data = scratch / "one.bin"
    _make_file(data, size)
    _warm(data)

    cfg = SourceConfig(url=f"file://{scratch}")
    src = LocalAdapter(cfg, Credentials(), PathFilter([], [], True))
    overhead = spawn_overhead_s()
    digests: dict[str, str] = {}

    def sha256sum() -> float:
        t0 = time.perf_counter()
        out = subprocess.run(["sha256sum", str(data)], check=True, capture_output=True, text=True).stdout
        elapsed = time.perf_counter() - t0 - overhead
        digests["sha256sum"] = out.split()[0]
        return elapsed

    def local_digest() -> float:
        async def go() -> float:
            t0 = time.perf_counter()
            d = await src.digest("one.bin", "sha256", None, size)
            elapsed = time.perf_counter() - t0
            assert d.value is not None
            digests["ftpsource"] = d.value
            return elapsed

        return asyncio.run(go())

    def openssl_dgst() -> float:
        t0 = time.perf_counter()
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-r", str(data)], check=True, capture_output=True, text=True
        ).stdout
        elapsed = time.perf_counter() - t0 - overhead
        digests["openssl"] = out.split()[0]
        return elapsed

    candidates = [("sha256sum", sha256sum), ("ftpsource", local_digest)]
    if shutil.which("openssl"):
        # Not the goal's baseline: a second reference that uses the CPU's SHA extensions when present.
        candidates.append(("openssl", openssl_dgst))
    times = best_of_alternating(candidates)
    if len(set(digests.values())) != 1:
        raise AssertionError(f"digests differ: {digests}")
    base, ours = min(times["sha256sum"]), min(times["ftpsource"])
    mb = size / 1e6
    extra = []
    if "openssl" in times:
        ossl = min(times["openssl"])
        extra.append(
            f"reference, not the goal: `openssl dgst -sha256` {fmt_s(ossl)} ({mb / ossl:.0f} MB/s); "
            f"ftpsource reaches {ossl / ours:.2f}× its speed (both use OpenSSL's SHA-256)"
        )
    return Result(
        name="hash",
        goal="Hash a 1 GiB local file (sha256) at ≥ 0.8× the speed of `sha256sum`",
        baseline=f"`sha256sum`: {fmt_s(base)} ({mb / base:.0f} MB/s)",
        measured=f"`LocalAdapter.digest`: {fmt_s(ours)} ({mb / ours:.0f} MB/s)",
        ratio=base / ours,  # speed ratio: ours / theirs
        limit=LIMIT,
        higher_is_better=True,
        size=f"{size / GIB:g} GiB",
        quick=quick,
        details=[
            "ratio = ftpsource speed / `sha256sum` speed; warm page cache, alternating runs, best of 3",
            "all runs: " + "; ".join(f"{k} {', '.join(fmt_s(t) for t in v)}" for k, v in times.items()),
            f"command times exclude process spawn ({overhead * 1000:.1f} ms); all tools produced the same digest",
            *extra,
        ],
    )
