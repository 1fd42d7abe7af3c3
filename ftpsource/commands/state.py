"""``ftpsource state``: inspect the state (SQLite file or PostgreSQL); ``forget`` paths so they are reported again.

Only ``forget`` writes; ``list`` and ``show`` open the state read-only and never create it.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.events import rfc3339
from ..core.model import FileRecord
from ..core.text import printable
from ..errors import ConfigError
from ..store import HistoryRow, SourceRow, StateStore, VersionRow, open_store, open_store_read_only
from .common import STATE_PASSWORD_HELP, add_common, env, path_or_none
from .output import dump, short, table, when

__all__ = ["add_parser", "run"]

EXIT_OK = 0


def _location(args: argparse.Namespace) -> tuple[str, Path | None]:
    """The ``--state`` file or URL, and the PostgreSQL password file if any."""
    return (
        args.state or env("STATE") or "ftpsource.db",
        path_or_none(args.state_password_file or env("STATE_PASSWORD_FILE")),
    )


def _resolve_source(store: StateStore, name: str) -> SourceRow:
    sources = store.list_sources()
    for s in sources:
        if s.id == name:
            return s
    by_url = [s for s in sources if s.url == name]
    if len(by_url) == 1:
        return by_url[0]
    known = ", ".join(s.id for s in sources) or "none"
    raise ConfigError([f"source {name!r}: not in {store.location} (sources: {known})"])


def _normalize_path(source: SourceRow, path: str) -> str:
    prefix = source.url.rstrip("/") + "/"
    if path.startswith(prefix):
        path = path[len(prefix) :]
    return path.lstrip("/").removeprefix("./")


def _missing_path(store: StateStore, source: SourceRow, path: str) -> ConfigError:
    paths = list(store.load_records(source.id))
    close = difflib.get_close_matches(path, paths, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError([f"path {path!r}: not in the state of source {source.id!r}{hint}"])


def _state_list(args: argparse.Namespace) -> int:
    store = open_store_read_only(*_location(args))
    try:
        sources = store.list_sources()
    finally:
        store.close()
    if args.json:
        dump(
            [
                {
                    "id": s.id,
                    "url": s.url,
                    "files": s.files,
                    "pending": s.pending,
                    "undelivered": s.undelivered,
                    "first_start": rfc3339(s.first_start),
                    "last_poll": rfc3339(s.last_poll),
                    "last_ok_poll": rfc3339(s.last_ok_poll),
                    "last_error": s.last_error,
                }
                for s in sources
            ]
        )
        return EXIT_OK
    if not sources:
        print(f"no sources in {store.location}")
        return EXIT_OK
    lines = table(
        ("SOURCE", "URL", "FILES", "PENDING", "UNDELIVERED", "LAST POLL", "LAST OK POLL", "LAST ERROR"),
        (
            (s.id, s.url, s.files, s.pending, s.undelivered, when(s.last_poll), when(s.last_ok_poll), s.last_error)
            for s in sources
        ),
        right=(2, 3, 4),
    )
    print("\n".join(lines))
    return EXIT_OK


def _history_entry(h: HistoryRow) -> dict[str, Any]:
    try:
        event = json.loads(h.payload)
    except ValueError:
        event = {}
    data = event.get("data") if isinstance(event, dict) else None
    data = data if isinstance(data, dict) else {}
    checksum = data.get("checksum")
    return {
        "seq": h.seq,
        "event_id": h.event_id,
        "type": h.type,
        "time": rfc3339(h.created),
        "delivered": rfc3339(h.delivered) if h.delivered is not None and h.delivered >= 0 else None,
        "dropped": h.delivered is not None and h.delivered < 0,
        "reason": data.get("reason"),
        "generation": data.get("generation"),
        "checksum": checksum.get("value") if isinstance(checksum, dict) else None,
        "problem": data.get("problem"),
        "event": event,
    }


def _state_show(args: argparse.Namespace) -> int:
    store = open_store_read_only(*_location(args))
    try:
        source = _resolve_source(store, args.source)
        path = _normalize_path(source, args.path)
        rec = store.get_record(source.id, path)
        history = store.history(source.id, path)
        versions = store.versions(source.id, path)
        if rec is None and not history:
            raise _missing_path(store, source, path)
    finally:
        store.close()
    entries = [_history_entry(h) for h in history]
    first_seen = {e["event_id"]: e["event"].get("data", {}).get("first_seen") for e in entries if e["event"]}
    if args.json:
        dump(
            {
                "source": source.id,
                "url": source.url,
                "path": path,
                "record": None
                if rec is None
                else {
                    "state": rec.state.value,
                    "generation": rec.generation,
                    "checksum": rec.ready_checksum,
                    "size": rec.size,
                    "mtime": rfc3339(rec.mtime),
                    "ready_size": rec.ready_size,
                    "ready_mtime": rfc3339(rec.ready_mtime),
                    "first_seen": rfc3339(rec.first_seen),
                    "stable_since": rfc3339(rec.stable_since),
                    "problem": rec.problem,
                    "problem_since": rfc3339(rec.problem_since),
                },
                "history": entries,
                "versions": [_version_entry(v, first_seen.get(v.event_id)) for v in versions],
            }
        )
        return EXIT_OK
    out = [f"source        {source.id}  ({source.url})", f"path          {path}"]
    if rec is None:
        out.append("record        none (forgotten, or dropped before it was reported)")
    else:
        out += [
            f"state         {rec.state.value}",
            f"generation    {rec.generation}",
            f"checksum      {rec.ready_checksum or '-'}",
            f"size          {rec.size}"
            + (f" (reported: {rec.ready_size})" if rec.ready_size not in (None, rec.size) else ""),
            f"mtime         {when(rec.mtime)}",
            f"first seen    {when(rec.first_seen)}",
            f"stable since  {when(rec.stable_since)}",
            f"problem       {rec.problem or '-'}"
            + (f" (since {when(rec.problem_since)})" if rec.problem_since else ""),
        ]
    out.append("")
    if not entries:
        out.append("history: no events")
    else:
        out.append(f"history: {len(entries)} event{'s' if len(entries) != 1 else ''}")
        out += table(
            ("TIME", "TYPE", "REASON", "GENERATION", "CHECKSUM", "DELIVERED"),
            (
                (
                    when(h.created),
                    h.type,
                    e["problem"] or e["reason"],
                    e["generation"],
                    short(e["checksum"]),
                    "dropped (source forgotten)"
                    if e["dropped"]
                    else (when(h.delivered) if h.delivered is not None else "no (waiting for a stream)"),
                )
                for h, e in zip(history, entries, strict=True)
            ),
        )
    # Only where settling is in use: a source without on_success/on_failure has nothing to show here.
    if any(v.version.expects_settle or v.outcome is not None for v in versions):
        out += ["", f"versions: {len(versions)} (what happened to each reported version)"]
        for v in versions:
            out += _version_lines(v, first_seen.get(v.event_id))
    print("\n".join(printable(line) for line in out))
    return EXIT_OK


def _steps(v: VersionRow, first_seen: str | None) -> list[tuple[str, str | None, str]]:
    """(step, RFC 3339 time or None, detail) for seen, ready, delivered, settled and the action."""
    steps: list[tuple[str, str | None, str]] = [
        ("seen", first_seen, ""),
        ("ready", rfc3339(v.ready), f"generation {v.version.generation}, {v.version.size} bytes"),
        ("delivered", rfc3339(v.delivered), "" if v.delivered is not None else "not yet"),
    ]
    if v.outcome is None:
        steps.append(("settled", None, "not yet"))
        return steps
    steps.append(("settled", rfc3339(v.settled), f"{v.outcome}" + (f": {v.message}" if v.message else "")))
    if v.action in (None, "none"):
        return steps
    name = {"move": "moved", "delete": "deleted"}.get(v.action, v.action)
    if v.action_state == "done":
        steps.append((name, rfc3339(v.action_at), f"to {v.target}" if v.target else ""))
    elif v.action_state == "pending":
        detail = "waiting for the source to run" + (f" (last attempt: {v.action_detail})" if v.action_detail else "")
        steps.append((f"{v.action} pending", rfc3339(v.action_at), detail))
    else:
        steps.append((f"not {name}", rfc3339(v.action_at), v.action_detail or v.action_state or ""))
    return steps


def _version_entry(v: VersionRow, first_seen: str | None) -> dict[str, Any]:
    return {
        "event_id": v.event_id,
        "generation": v.version.generation,
        "checksum": v.version.checksum,
        "outcome": v.outcome,
        "message": v.message,
        "action": v.action,
        "action_state": v.action_state,
        "target": v.target,
        "steps": [{"step": s, "time": at, "detail": d} for s, at, d in _steps(v, first_seen)],
    }


def _version_lines(v: VersionRow, first_seen: str | None) -> list[str]:
    lines = [f"  event {v.event_id}  generation {v.version.generation}  checksum {short(v.version.checksum)}"]
    lines += ["    " + line for line in table(("STEP", "TIME", "DETAIL"), _steps(v, first_seen))]
    return lines


_RUNNING_NOTE = "a stream already running for this source picks this up at its next poll; replayed events get new ids"


def _state_forget(args: argparse.Namespace) -> int:
    location = _location(args)
    ro = open_store_read_only(*location)  # validates the state before open_store() would add tables to it
    try:
        source = _resolve_source(ro, args.source)
        if args.paths and args.all_files:
            raise ConfigError(["forget: give paths or --all-files, not both"])
        targets: dict[str, FileRecord] = {}
        if args.paths:
            for p in args.paths:
                norm = _normalize_path(source, p)
                rec = ro.get_record(source.id, norm)
                if rec is None:
                    raise _missing_path(ro, source, norm)
                targets[norm] = rec
        elif args.all_files:
            targets = ro.load_records(source.id)
        undelivered = ro.undelivered_count(source.id)
    finally:
        ro.close()

    if not args.paths and not args.yes:
        what = (
            f"all {len(targets)} file records of source {source.id!r}"
            if args.all_files
            else f"source {source.id!r} entirely ({source.files} files, {undelivered} undelivered events)"
        )
        raise ConfigError([f"forget: this forgets {what}; rerun with --yes to confirm"])

    forgotten = 0
    store = open_store(*location)
    try:
        if args.paths:
            store.forget_files(source.id, list(targets))
        elif args.all_files:
            store.forget_files(source.id, None)
        else:
            forgotten = store.forget(source.id)
    finally:
        store.close()

    if args.paths:
        for p, rec in targets.items():
            was = f"{rec.state.value}, generation {rec.generation}"
            print(f"forgot {p} of source {source.id} (was {was}); it will be reported again as new")
    elif args.all_files:
        print(f"forgot {len(targets)} file records of source {source.id}; every file there will be reported again")
    else:
        print(
            f"forgot source {source.id}: {forgotten} file records, its expectations, and {undelivered} undelivered "
            "events; its next start is a first start (`existing` decides whether files already there are reported)"
        )
    print(f"note: {_RUNNING_NOTE}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.state_handler
    return handler(args)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    state = sub.add_parser("state", help="inspect the state file; forget paths so they are reported again")
    state_help = "SQLite state file or postgresql:// URL (default $FTPSOURCE_STATE, else ftpsource.db); never created"
    state.add_argument("--state", default=None, help=state_help)
    state.add_argument("--state-password-file", default=None, help=STATE_PASSWORD_HELP)
    actions = state.add_subparsers(dest="state_command", required=True)

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `state --state X list` and `state list --state X` both work.
        p.add_argument("--state", default=argparse.SUPPRESS, help=state_help)
        p.add_argument("--state-password-file", default=argparse.SUPPRESS, help=STATE_PASSWORD_HELP)
        add_common(p)
        return p

    listing = leaf("list", "sources: files, pending, undelivered events, last polls, last error")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(state_handler=_state_list)

    show = leaf("show", "one path's record and its history of events")
    show.add_argument("source", help="source id (as in `state list`)")
    show.add_argument("path", help="path relative to the source root")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(state_handler=_state_show)

    forget = leaf(
        "forget",
        "forget paths so they are reported again (the way to replay a file); without PATH, with --yes: "
        "forget the whole source, or with --all-files every file record but keep the source",
    )
    forget.add_argument("source", help="source id (as in `state list`)")
    forget.add_argument("paths", nargs="*", metavar="PATH", help="paths relative to the source root")
    forget.add_argument(
        "--all-files", action="store_true", help="forget every file record of the source (all files are reported again)"
    )
    forget.add_argument("--yes", action="store_true", help="confirm forgetting more than named paths")
    forget.set_defaults(state_handler=_state_forget)

    state.set_defaults(handler=run)
