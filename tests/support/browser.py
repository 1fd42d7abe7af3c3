"""Debian's headless Chromium, for tests that look at a page the way a person would."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from tests.support.servers import unavailable

__all__ = ["chromium", "dump_dom", "screenshot"]

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The browser binary; skips the test without it (fails it in CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    return found


async def _run(args: list[str], timeout: float = 60.0) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ftpsource-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(),
            *_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        return out


async def dump_dom(url: str) -> str:
    """The page's DOM after loading, serialised: what the browser made of it."""
    return (await _run(["--dump-dom", url])).decode("utf-8")


async def screenshot(url: str, path: Path, size: tuple[int, int] = (1280, 2200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    await _run([f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", url])
    assert path.is_file() and path.stat().st_size > 10_000, "chromium wrote no screenshot"
    return path
