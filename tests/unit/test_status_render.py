"""The status page renders every string as text: file names, errors and URLs are hostile input."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from ftpsource.status import render_html

EVIL = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text = ""
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += attrs

    def handle_data(self, data: str) -> None:
        self.text += data


def doc() -> dict[str, Any]:
    expected = {
        "kind": "set",
        "name": EVIL,
        "period": EVIL,
        "deadline": EVIL,
        "due_in_s": -5.0,
        "status": EVIL,
        "generation": 2,
        "present": [EVIL],
        "missing": [EVIL],
    }
    return {
        "generated": EVIL,
        "refresh_s": 5,
        "sources": [
            {
                "id": EVIL,
                "url": EVIL,
                "connected": True,
                "last_ok_poll_age_s": 3.0,
                "last_error": EVIL,
                "files": 1,
                "pending": 1,
                "undelivered": 0,
                "recent_errors": [{"at": EVIL, "kind": EVIL, "message": EVIL}],
                "pending_files": [{"path": EVIL, "size": 1, "complete_in_s": 2.0, "waiting_for": EVIL}],
                "expected": [expected, {**expected, "kind": "file"}],
            }
        ],
        "events": [{"source_id": EVIL, "type": EVIL, "subject": EVIL, "at": EVIL, "delivered": False}],
    }


def test_every_field_is_escaped() -> None:
    page = render_html(doc()).decode()
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not [a for a in parsed.attrs if a[0].startswith("on") or a[0] in ("src", "href")]
    assert parsed.text.count(EVIL) >= 12  # shown, as text, wherever it appeared


def test_empty_server_says_so() -> None:
    page = render_html({"generated": "now", "sources": [], "events": []}).decode()
    assert "No sources yet" in page and "No events yet" in page and 'http-equiv="refresh"' in page
