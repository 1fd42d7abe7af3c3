"""The status page on the metrics port: loaded in a real browser from a running server with a set in
each state, and /status.json with the same data. File names are hostile input."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ftpsource.clock import ShiftedClock
from tests.support.browser import dump_dom, screenshot
from tests.support.deadlines import next_boundary
from tests.support.harness import REPO, all_delivered, run_server, stream_to

HOSTILE_PENDING = "<script>alert(1)<script>.csv.gz"
HOSTILE_READY = '<img src=x onerror="alert(2)">&amp;.csv'


def sets(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"set": n, "files": [f"{n}_%H%M.csv", {"pattern": f"{n}_%H%M_p*.csv", "count": 1}], **extra} for n in names]


def config(root: Path) -> dict[str, Any]:
    tenmin = {"schedule": "*/10 * * * *", "grace": "1m"}
    return {
        "url": f"file://{root}",
        "stable_for": "300ms",
        "poll_interval": "5s",
        "expect": [
            {"path": "solo_%H%M.csv", **tenmin},
            *sets("done", "amend", "late", "gone", **tenmin),
            *sets("risky", **tenmin, warn_before="15m"),
            *sets("yearly", schedule="0 0 1 1 *"),
        ],
    }


def set_event(kind: str, name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == f"ftpsource.set.{kind}" and e["data"]["set"] == name


def upload(root: Path, name: str, hm: str, content: bytes = b"x") -> list[str]:
    files = [f"{name}_{hm}.csv", f"{name}_{hm}_p1.csv"]
    for f in files:
        (root / f).write_bytes(content)
    return files


class _Text(HTMLParser):
    """What a person reads: the text, and which elements the browser built (no script may be among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.badges: list[str] = []
        self._in_badge = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_badge = any(k == "class" and v and "badge" in v for k, v in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_badge:
            self.badges.append(data)
            self._in_badge = False


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read()


def _headers(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers


async def test_status_page_in_a_real_browser(tmp_path: Path, root: Path) -> None:
    clock = ShiftedClock()
    clock.advance(600 - clock() % 600 + 5)  # just after a boundary: the next deadline is ~10 minutes away
    first = next_boundary(clock())
    hm = first.strftime("%H%M")
    async with run_server(tmp_path, clock=clock) as srv, stream_to(srv.port, config(root)) as stream:
        base = f"http://127.0.0.1:{srv.metrics_port}"
        (root / f"solo_{hm}.csv").write_bytes(b"solo")
        upload(root, "done", hm)
        upload(root, "amend", hm)
        (root / HOSTILE_READY).write_bytes(b"hostile")
        # Sets complete in whatever order their files are verified.
        await stream.until_all(set_event("complete", "done"), set_event("complete", "amend"))
        upload(root, "amend", hm, b"corrected")
        await stream.until(lambda e: e["type"] == "ftpsource.set.amended")
        earlier = {e["id"] for e in stream.received}
        clock.advance(first.timestamp() + 61 - clock())  # the first deadline and its grace pass
        srv.app.wake_all()
        risky_again = set_event("at_risk", "risky")  # the next period's warning, made by this advance
        await stream.until_all(set_event("incomplete", "late"), lambda e: e["id"] not in earlier and risky_again(e))
        upload(root, "late", hm)
        await stream.until(set_event("complete", "late"))
        (root / HOSTILE_PENDING).write_bytes(b"not gzip at all")  # fails its format check: stays pending
        await all_delivered(srv)
        pending_seen = False
        for _ in range(100):
            code, ctype, body = await asyncio.to_thread(_get, f"{base}/status.json")
            doc = json.loads(body)
            if any(p["path"] == HOSTILE_PENDING for p in doc["sources"][0]["pending_files"]):
                pending_seen = True
                break
            await asyncio.sleep(0.1)
        assert pending_seen and code == 200 and ctype == "application/json"

        (src,) = doc["sources"]
        assert src["connected"] is True and src["url"] == f"file://{root}"
        assert src["last_ok_poll"] is not None and src["last_ok_poll_age_s"] < 60
        statuses = {(x["kind"], x["name"], x["period"][11:16]): x["status"] for x in src["expected"]}
        t = first.strftime("%H:%M")
        assert statuses[("file", f"solo_{hm}.csv", t)] == "on_time"
        assert statuses[("set", "done", t)] == "complete"
        assert statuses[("set", "amend", t)] == "amended"
        assert statuses[("set", "late", t)] == "late"
        assert statuses[("set", "gone", t)] == "missing"
        assert "at_risk" in {s for (k, n, _), s in statuses.items() if n == "risky"}
        assert statuses[("set", "yearly", "00:00")] == "waiting"
        gone = next(x for x in src["expected"] if x["name"] == "gone" and x["period"][11:16] == t)
        assert gone["missing"] == [f"gone_{hm}.csv", f"gone_{hm}_p*.csv"]
        assert any(e["type"] == "ftpsource.set.amended" for e in doc["events"])
        assert any(e["subject"] == HOSTILE_READY for e in doc["events"])

        # The same counts for Prometheus (and the Grafana dashboard).
        _, _, metrics = await asyncio.to_thread(_get, f"{base}/metrics")
        for kind, status in [("file", "on_time"), ("set", "amended"), ("set", "late"), ("set", "complete")]:
            line = f'ftpsource_expected{{kind="{kind}",source="{src["id"]}",status="{status}"}} 1.0'
            assert line in metrics.decode(), line

        page = await dump_dom(f"{base}/")
        await screenshot(f"{base}/", REPO / ".cache" / "status-page.png")
        code, ctype, raw = await asyncio.to_thread(_get, f"{base}/")
        assert code == 200 and ctype.startswith("text/html")
        headers = await asyncio.to_thread(_headers, f"{base}/")
        assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    seen = _Text()
    seen.feed(page)
    text = " ".join(seen.text)
    assert "script" not in seen.tags and "img" not in seen.tags  # names stayed text
    assert HOSTILE_PENDING in text and HOSTILE_READY in text
    assert {"waiting", "at risk", "on time", "late", "missing", "complete", "amended", "connected"} <= set(
        seen.badges
    ), seen.badges
    assert f"file://{root}" in text and "Pending files" in text and "Latest events" in text
    assert "ftpsource.set.complete" in text and "not gzip data" in text  # the pending file's reason
    assert b"http://" not in raw.replace(f"http://127.0.0.1:{srv.metrics_port}".encode(), b"")  # no external assets
    assert b'http-equiv="refresh"' in raw


async def test_status_page_is_read_only_and_unknown_paths_are_404(tmp_path: Path) -> None:
    async with run_server(tmp_path) as srv:
        base = f"http://127.0.0.1:{srv.metrics_port}"
        code, _, body = await asyncio.to_thread(_get, f"{base}/status.json")
        assert code == 200 and json.loads(body)["sources"] == []
        code, _, _ = await asyncio.to_thread(_get, f"{base}/nope")
        assert code == 404
        req = urllib.request.Request(f"{base}/", data=b"x", method="POST")
        try:
            await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
            raise AssertionError("POST was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 501
