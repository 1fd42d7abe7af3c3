"""The operator's view: each source, its pending files, today's expectations and sets, the latest events.

Served on the metrics port as ``/status.json`` and as a self-refreshing HTML page at ``/``. ``collect``
runs on the event loop, where the watchers' state lives, and returns plain data; the HTTP thread only
renders that finished snapshot. Nothing here holds file contents or secrets: URLs are the display URLs
events carry, error texts are the ones already logged, and every string is escaped when rendered
(file names are hostile input).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .config import format_duration
from .core.events import EVENT_TYPES
from .core.expect import OPEN, file_status, rule_key
from .core.model import State
from .core.sets import OPEN as SET_OPEN
from .core.sets import WAITING, resolve, set_key, set_status, todays
from .store import AsyncStore

if TYPE_CHECKING:
    from .watcher import Watcher

__all__ = ["REFRESH_S", "collect", "render_html"]

#: The page reloads itself this often.
REFRESH_S = 5
PENDING_SHOWN = 50
EVENTS_SHOWN = 25


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def collect(watchers: Sequence[Watcher], store: AsyncStore, now: float) -> dict[str, Any]:
    """A snapshot of every known source (live ones in detail) and the latest events. Call on the loop."""
    rows = await store.run(store.sync.list_sources)
    recent = await store.run(store.sync.recent_events, EVENTS_SHOWN)
    live = {w.source_id: w for w in watchers}
    sources: list[dict[str, Any]] = []
    for row in rows:
        watcher = live.get(row.id)
        src: dict[str, Any] = {
            "id": row.id,
            "url": row.url,
            "connected": watcher is not None,
            "last_ok_poll": _iso(row.last_ok_poll),
            "last_ok_poll_age_s": None if row.last_ok_poll is None else round(now - row.last_ok_poll, 1),
            "last_error": row.last_error,
            "files": row.files,
            "pending": row.pending,
            "undelivered": row.undelivered,
            "recent_errors": [],
            "pending_files": [],
            "expected": [],
        }
        if watcher is not None:
            src.update(_live(watcher, now))
        sources.append(src)
    events = [
        {
            "source_id": e.source_id,
            "id": e.event_id,
            "type": EVENT_TYPES.get(e.type, e.type),
            "subject": e.path,
            "at": _iso(e.created),
            "delivered": e.delivered is not None and e.delivered >= 0,
        }
        for e in recent
    ]
    return {"generated": _iso(now), "refresh_s": REFRESH_S, "sources": sources, "events": events}


def _live(w: Watcher, now: float) -> dict[str, Any]:
    policy = w.policy
    pending: list[dict[str, Any]] = []
    for rec in w.records.values():
        if rec.state is not State.PENDING:
            continue
        complete_in: float | None = None
        if rec.problem:
            waiting_for = rec.problem
        elif policy.marker is not None:
            waiting_for = f"marker {policy.marker.render(rec.path)}"
        else:
            ready_at = max(rec.stable_since + policy.stable_for_s, rec.mtime + policy.min_age_s)
            complete_in = max(0.0, round(ready_at - now, 1))
            waiting_for = "stable size and time" if complete_in > 0 else "verification"
        pending.append(
            {
                "path": rec.path,
                "size": rec.size,
                "first_seen": _iso(rec.first_seen),
                "complete_in_s": complete_in,
                "waiting_for": waiting_for,
            }
        )
    pending.sort(key=lambda p: (p["complete_in_s"] is None, p["complete_in_s"] or 0.0, p["path"]))
    expected: list[dict[str, Any]] = []
    file_rules = {rule_key(r): r for r in w.config.expect_files}
    for x in w.expectations.values():
        if x.rule not in file_rules or not todays(x.deadline, x.state in OPEN, now):
            continue
        rule = file_rules[x.rule]
        expected.append(
            {
                "kind": "file",
                "name": x.path,
                "period": x.period,
                "deadline": _iso(x.deadline),
                "due_in_s": round(x.deadline - now, 1),
                "status": file_status(x),
                "warn_at": _iso(None if rule.warn_before_s is None else x.deadline - rule.warn_before_s),
                "present": [x.path] if x.state in ("met", "late") else [],
                "missing": [x.path] if x.state in ("open", "at_risk", "missing") else [],
            }
        )
    set_rules = {set_key(r): r for r in w.config.expect_sets}
    for y in w.sets.values():
        srule = set_rules.get(y.rule)
        if srule is None or not todays(y.deadline, y.state in SET_OPEN, now):
            continue
        if y.state in WAITING:
            status = resolve(srule, y.period, w.records)
            present, missing = [m.path for m in status.present], status.missing
        else:
            present, missing = [p for p, _ in y.members], []
        expected.append(
            {
                "kind": "set",
                "name": y.name,
                "period": y.period,
                "deadline": _iso(y.deadline),
                "due_in_s": round(y.deadline - now, 1),
                "status": set_status(y),
                "late": y.state == "late",
                "generation": y.generation,
                "warn_at": _iso(None if srule.warn_before_s is None else y.deadline - srule.warn_before_s),
                "present": present,
                "missing": missing,
            }
        )
    expected.sort(key=lambda e: (e["deadline"], e["kind"], e["name"]))
    return {
        "last_ok_poll": _iso(w.last_ok_poll) if w.last_ok_poll is not None else None,
        "recent_errors": [
            {"at": _iso(at), "kind": kind, "message": message} for at, kind, message in reversed(w.recent_errors)
        ],
        "pending_files": pending[:PENDING_SHOWN],
        "pending": len(pending),
        "expected": expected,
    } | ({"last_ok_poll_age_s": round(now - w.last_ok_poll, 1)} if w.last_ok_poll is not None else {})


# rendering (on the HTTP thread, from the snapshot alone) ------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}h3{font-size:1em;margin:1em 0 .3em}
.meta{color:#5b6475}.src{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:.6em 1em;margin:1em 0}
table{border-collapse:collapse;width:100%;margin:.3em 0 .8em}th,td{text-align:left;padding:.25em .6em;
border-bottom:1px solid #e8eaef;vertical-align:top}th{font-weight:600;color:#5b6475;font-size:.9em}
code{font-size:.92em;word-break:break-all}.badge{display:inline-block;padding:.05em .55em;border-radius:1em;
font-size:.85em;font-weight:600;white-space:nowrap}
.s-waiting{background:#e8eaef;color:#3b4252}.s-at-risk{background:#ffe2b8;color:#7a4100}
.s-on-time,.s-complete{background:#d3f2dc;color:#135c2a}.s-late{background:#fff1b8;color:#6b5200}
.s-missing{background:#ffd6d6;color:#8a1010}.s-amended{background:#d8e6ff;color:#123f8c}
.s-connected{background:#d3f2dc;color:#135c2a}.s-disconnected{background:#e8eaef;color:#5b6475}
.err{color:#8a1010}.none{color:#8a93a5}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: str) -> str:
    label = status.replace("_", " ")
    return f'<span class="badge s-{_e(label.replace(" ", "-"))}">{_e(label)}</span>'


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{format_duration(max(0.0, round(seconds)))} ago"


def _until(seconds: float) -> str:
    s = round(seconds)
    return f"in {format_duration(s)}" if s > 0 else f"{format_duration(-s)} ago" if s < 0 else "now"


def _list(items: Sequence[str]) -> str:
    return ", ".join(f"<code>{_e(i)}</code>" for i in items) if items else '<span class="none">—</span>'


def _source(src: Mapping[str, Any]) -> str:
    out = [f'<section class="src" id="source-{_e(src["id"])}">']
    state = "connected" if src["connected"] else "disconnected"
    out.append(
        f"<h2>{_e(src['id'])} {_badge(state)}</h2>"
        f'<div class="meta"><code>{_e(src["url"])}</code> · last good poll: '
        f"<span class=last-poll>{_e(_ago(src.get('last_ok_poll_age_s')))}</span>"
        f" · {int(src['files'])} files, {int(src['pending'])} pending,"
        f" {int(src['undelivered'])} not yet delivered</div>"
    )
    errors = src.get("recent_errors") or []
    if errors:
        out.append("<h3>Recent errors</h3><ul class=errors>")
        out += [f'<li class="err">{_e(x["at"])} {_e(x["kind"])}: {_e(x["message"])}</li>' for x in errors]
        out.append("</ul>")
    elif src.get("last_error"):
        out.append(f'<p class="err">Last error: {_e(src["last_error"])}</p>')
    expected = src.get("expected") or []
    out.append("<h3>Expected today</h3>")
    if expected:
        out.append(
            "<table class=expected><tr><th>status</th><th>expected</th><th>deadline</th>"
            "<th>present</th><th>missing</th></tr>"
        )
        for x in expected:
            kind = "set" if x["kind"] == "set" else "file"
            detail = f" (generation {int(x['generation'])})" if x["kind"] == "set" and x["generation"] > 1 else ""
            out.append(
                f"<tr><td>{_badge(x['status'])}</td><td>{kind} <code>{_e(x['name'])}</code>{_e(detail)}</td>"
                f"<td>{_e(x['deadline'])} ({_e(_until(x['due_in_s']))})</td>"
                f"<td>{_list(x['present'])}</td><td>{_list(x['missing'])}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="none">Nothing expected.</p>')
    pending = src.get("pending_files") or []
    out.append("<h3>Pending files</h3>")
    if pending:
        out.append("<table class=pending><tr><th>file</th><th>size</th><th>complete</th><th>waiting for</th></tr>")
        for p in pending:
            when = "unknown" if p["complete_in_s"] is None else _until(p["complete_in_s"])
            out.append(
                f"<tr><td><code>{_e(p['path'])}</code></td><td>{int(p['size'])}</td>"
                f"<td>{_e(when)}</td><td>{_e(p['waiting_for'])}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="none">No pending files.</p>')
    out.append("</section>")
    return "".join(out)


def render_html(doc: Mapping[str, Any]) -> bytes:
    """The status page: plain HTML and inline CSS, no scripts, no external assets."""
    sources = doc.get("sources") or []
    body = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{int(doc.get("refresh_s", REFRESH_S))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ftpsource status</title><style>{_CSS}</style></head><body>",
        f'<h1>ftpsource status</h1><div class="meta">as of {_e(doc.get("generated"))} · '
        f"refreshes every {int(doc.get('refresh_s', REFRESH_S))} s · {len(sources)} "
        f"source{'' if len(sources) == 1 else 's'}</div>",
    ]
    body += [_source(s) for s in sources] or ['<p class="none">No sources yet: no stream has been opened.</p>']
    body.append("<h2>Latest events</h2>")
    events = doc.get("events") or []
    if events:
        body.append(
            "<table class=events><tr><th>time</th><th>source</th><th>type</th><th>subject</th><th>delivered</th></tr>"
        )
        for ev in events:
            body.append(
                f"<tr><td>{_e(ev['at'])}</td><td>{_e(ev['source_id'])}</td><td>{_e(ev['type'])}</td>"
                f"<td><code>{_e(ev['subject'])}</code></td><td>{'yes' if ev['delivered'] else 'not yet'}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append('<p class="none">No events yet.</p>')
    body.append("</body></html>")
    return "".join(body).encode("utf-8")
