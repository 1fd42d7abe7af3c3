"""Operator commands: ``check`` (a dry run against a source) and ``state`` (inspect, forget).

``check`` lists a source and explains, file by file, what the server would do with it now, using the
records of an existing state file when given. It changes nothing: the state file is opened read-only
and a missing one is never created. ``state`` reads the same file; only ``state forget`` writes.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from .config import SourceConfig, format_duration, parse_source_config
from .credentials import load_credentials
from .detect import EventSpec, FileRecord, Policy, State, VerifyRequest, after_verify, plan_poll
from .errors import ConfigError, FileVanished, SourceError
from .events import rfc3339
from .formats import verifier_for
from .paths import PathFilter
from .sources.base import Digest, Entry, Listing, Source, adapter_for
from .store import HistoryRow, SourceRow, Store
from .verify import build_verifier

__all__ = ["HANDLERS", "CheckRow", "add_commands"]

AddCommon = Callable[[argparse.ArgumentParser], None]

#: Non-TTY progress lines are written every this many files.
PROGRESS_EVERY = 10_000
EXIT_OK, EXIT_PROBLEMS = 0, 1
#: ``check`` kinds that make the exit status non-zero.
PROBLEM_KINDS = frozenset({"problem", "rejected", "error"})
_KIND_ORDER = (
    "emit", "verify", "changed", "reported", "pending", "waiting", "too small", "problem", "rejected",
    "skipped", "error", "ignored", "marker", "sidecar", "gone",
)


def _env(name: str) -> str | None:
    return os.environ.get(f"FTPSOURCE_{name}") or None


# --- read-only access to the state file ------------------------------------------------------------


# --- small formatting helpers ---------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    if ts < 0:
        return "dropped"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _age(seconds: float) -> str:
    return "future" if seconds < 0 else format_duration(int(seconds))


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], right: Iterable[int] = ()) -> list[str]:
    """Plain aligned columns; ``right`` names the columns (indexes) aligned right."""
    cells = [[str(c) for c in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_set = set(right)
    out = []
    for r in cells:
        parts = [
            c.rjust(widths[i]) if i in right_set else (c if i == len(r) - 1 else c.ljust(widths[i]))
            for i, c in enumerate(r)
        ]
        out.append("  ".join(parts).rstrip())
    return out


def _short(checksum: str | None) -> str | None:
    return checksum[:16] + "…" if checksum and len(checksum) > 17 else checksum


def _dump(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


class Progress:
    """Progress on stderr: a live line on a terminal, else one line per ``PROGRESS_EVERY`` items."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._live = False
        self._reported: dict[str, int] = {}  # per counter: multiples of PROGRESS_EVERY already written

    def count(self, what: str, n: int, total: int | None = None) -> None:
        text = f"{what} {n}" + (f" of {total}" if total is not None else "") + " files…"
        if self.tty:
            now = time.monotonic()
            if now - self._last >= 0.1 or n == total:
                self._last = now
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
                self._live = True
        elif n // PROGRESS_EVERY > self._reported.get(what, 0):
            self._reported[what] = n // PROGRESS_EVERY
            self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        """A live status line; terminals only."""
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._live = True

    def line(self, text: str, *, only_tty: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + "\n")
            self._live = False
        elif not only_tty:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._live = False


# --- check -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One file as ``check`` sees it. ``kind`` is the summary bucket, ``status`` the sentence shown."""

    path: str
    size: int
    mtime: float
    kind: str
    status: str


@dataclass(frozen=True, slots=True)
class _Known:
    """What the state file says about the checked source."""

    source_id: str | None
    records: dict[str, FileRecord]
    first_start: bool
    note: str


def _read_config(path: str) -> SourceConfig:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    try:
        return parse_source_config(raw)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {exc.problems[0]}", *exc.problems[1:]]) from None


def _known(cfg: SourceConfig, state: str | None, name: str | None) -> _Known:
    named = cfg.id or (cfg.source_id(name) if name else None)
    if state is None:
        return _Known(named, {}, True, "none given: decided as on a first start")
    path = Path(state)
    if not path.exists():
        return _Known(named, {}, True, f"no state file at {path}: decided as on a first start")
    store = Store.open_read_only(path)
    try:
        source_id = named
        if source_id is None:
            # No id and no event name: find the source by its URL, as the server recorded it.
            matches = [s.id for s in store.list_sources() if s.url == cfg.display_url]
            if len(matches) > 1:
                raise ConfigError([
                    f"--name: {len(matches)} sources in {path} watch {cfg.display_url} "
                    f"({', '.join(matches)}); give the event name with --name"
                ])
            source_id = matches[0] if matches else None
        initialized = store.initialized(source_id) if source_id else None
        if source_id is None or initialized is None:
            what = f"source {source_id}" if source_id else "no source with this url (give --name?)"
            return _Known(source_id, {}, True, f"{what} not in {path}: decided as on a first start")
        records = store.load_records(source_id)
        return _Known(source_id, records, not initialized, f"source {source_id} in {path}, {len(records)} records")
    finally:
        store.close()


class _Explainer:
    """Turns the decision core's plan into one sentence per file.

    The decisions come from ``detect.plan_poll`` and ``detect.after_verify``; this only says *why* a
    pending file is not yet complete, in the order ``plan_poll`` checks.
    """

    def __init__(self, cfg: SourceConfig, policy: Policy) -> None:
        self.cfg, self.policy = cfg, policy
        self._include = PathFilter(cfg.include, [], True) if cfg.include else None
        self._excludes = [(p, PathFilter([], [p], True)) for p in cfg.exclude]

    def ignored(self, path: str) -> str:
        for pattern, f in self._excludes:
            if not f.wanted(path):
                return f"ignored (excluded by pattern {pattern})"
        if self._include is not None and not self._include.wanted(path):
            return "ignored (not matched by include)"
        return "ignored"

    def waiting(self, entry: Entry, rec: FileRecord, listed: dict[str, Entry], now: float) -> tuple[str, str]:
        p = self.policy
        if entry.size < p.min_size:
            return "too small", f"too small (min_size {p.min_size})"
        if p.sidecar is not None:
            sidecar = p.sidecar.render(entry.path)
            if sidecar not in listed:
                return "waiting", f"waiting for sidecar {sidecar}"
        young = now < entry.mtime + p.min_age_s
        young_text = f"min_age {format_duration(p.min_age_s)}, modified {_age(now - entry.mtime)} ago"
        if p.marker is not None:
            marker = p.marker.render(entry.path)
            if marker not in listed:
                return "waiting", f"waiting for marker {marker}"
            if young:
                return "pending", f"pending (marker present; {young_text})"
        else:
            stable = now - rec.stable_since
            if stable < p.stable_for_s:
                return "pending", (
                    f"pending (stable for {_age(stable)} of {format_duration(p.stable_for_s)})"
                )
            if young:
                return "pending", f"pending ({young_text})"
        if rec.problem is not None:
            left = (rec.problem_since or now) + p.reject_after_s - now
            return "problem", (
                f"pending, failed verification: {rec.problem} (rejected in {_age(left)} unless it changes)"
            )
        return "pending", "pending"

    def candidate(self, rec: FileRecord, before: FileRecord | None) -> tuple[str, str]:
        """A complete file, judged by size and mtime only (no ``--hash``)."""
        if rec.generation == 0:
            if rec.problem is not None:
                return "verify", f"complete, would re-verify (last attempt: {rec.problem})"
            return "emit", "complete, would emit (new)"
        if before is not None and before.state is State.DELETED:
            return "changed", f"complete, reappeared after generation {rec.generation} was deleted (would re-verify)"
        return "changed", f"complete, changed since generation {rec.generation} (would re-verify)"

    def verified(self, req: VerifyRequest, digest: Digest | None, after: Entry | None,
                 sidecar_problem: str | None, now: float) -> tuple[str, str]:
        outcome = after_verify(req, digest, after, now, self.policy, sidecar_problem=sidecar_problem)
        rec, event = outcome.record, outcome.event
        if event is not None and event.type == "ready":
            if event.reason == "new":
                return "emit", "complete, would emit (new)"
            return "emit", f"complete, would emit (reupload, generation {event.generation})"
        if event is not None:
            return "problem", f"would be rejected: {event.problem}"
        if rec.state is State.READY:
            return "reported", f"complete, already reported (generation {rec.generation}; same bytes)"
        if rec.problem is not None:
            return "problem", f"pending, failed verification: {rec.problem}"
        return "pending", "pending (changed while being read)"


def _companions(policy: Policy, data_paths: Iterable[str]) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for path in data_paths:
        for template in (policy.marker, policy.sidecar):
            if template is not None:
                owners.setdefault(template.render(path), []).append(path)
    return owners


def _companion_status(kind: str, owners: list[str] | None) -> str:
    if not owners:
        return f"{kind} (no matching file)"
    if len(owners) == 1:
        return f"{kind} for {owners[0]}"
    return f"{kind} for {len(owners)} files"


def _effective_records(
    entries: Iterable[Entry], records: dict[str, FileRecord], now: float, policy: Policy, skip_new: bool
) -> dict[str, FileRecord]:
    """Records as if the server had been watching: a new or changed file is taken to have been stable
    since its mtime, because ``check`` does not wait to observe it."""
    out = dict(records)
    for e in entries:
        if not policy.path_filter.wanted(e.path) or policy.is_companion(e.path):
            continue
        since = min(e.mtime, now)
        rec = records.get(e.path)
        if rec is None:
            if not skip_new:
                out[e.path] = FileRecord(e.path, e.size, e.mtime, State.PENDING, now, since)
        elif rec.size != e.size or rec.mtime != e.mtime or rec.state is State.DELETED:
            if rec.state is State.PENDING:
                out[e.path] = replace(rec, size=e.size, mtime=e.mtime, stable_since=since, checked=None)
            else:
                out[e.path] = replace(
                    rec, size=e.size, mtime=e.mtime, state=State.PENDING, first_seen=now, stable_since=since,
                    problem=None, problem_since=None, checked=None,
                )
    return out


async def _hash_one(
    src: Source, req: VerifyRequest, policy: Policy, slots: asyncio.Semaphore
) -> tuple[Digest | None, Entry | None, str | None]:
    path = req.record.path
    async with slots:
        sidecar_problem: str | None = None
        verifier = verifier_for(path) if policy.validate else None
        if req.sidecar_path is not None:
            try:
                content: bytes | None = await src.read_small(req.sidecar_path)
            except FileVanished:
                content = None
            verifier, sidecar_problem = build_verifier(verifier, content, path, req.sidecar_path)
        try:
            digest: Digest | None = await src.digest(path, policy.checksum, verifier, req.entry.size)
        except FileVanished:
            digest = None
        return digest, await src.stat(path), sidecar_problem


async def _list(src: Source, progress: Progress) -> Listing:
    started = time.monotonic()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.5)
            progress.status(f"listing… {format_duration(int(time.monotonic() - started))}")

    tick = asyncio.create_task(ticker()) if progress.tty else None
    try:
        listing = await src.list()
    finally:
        if tick is not None:
            tick.cancel()
    n = len(listing.entries)
    progress.line(f"listed {n} files in {time.monotonic() - started:.1f}s", only_tty=n < PROGRESS_EVERY)
    return listing


async def _check_async(args: argparse.Namespace) -> int:
    cfg = _read_config(args.config)
    credentials_dir = args.credentials_dir or _env("CREDENTIALS_DIR")
    creds = load_credentials(Path(credentials_dir) if credentials_dir else None, cfg.credentials)
    policy = Policy.from_config(cfg)
    known = _known(cfg, args.state or _env("STATE"), args.name)
    progress = Progress()
    try:
        adapter = adapter_for(cfg, creds, policy.path_filter)
    except ValueError:
        raise ConfigError([f"url: no adapter for {cfg.parsed_url.scheme}:// in this build"]) from None

    explain = _Explainer(cfg, policy)
    rows: list[CheckRow] = []
    try:
        async with adapter as src:
            listing = await _list(src, progress)
            now = time.time()
            listed = {e.path: e for e in listing.entries}
            skip_new = known.first_start and policy.existing == "skip"
            records = _effective_records(listing.entries, known.records, now, policy, skip_new)
            plan = plan_poll(
                listing.entries, records, now, policy, first_start=known.first_start,
                unlisted_dirs=listing.unlisted_dirs,
            )
            final = {**records, **{r.path: r for r in plan.upserts}}
            to_verify = {req.record.path: req for req in plan.verify}
            rejected = {e.path: e for e in plan.events if e.type == "rejected"}
            data_paths = [p for p in listed if policy.path_filter.wanted(p) and not policy.is_companion(p)]
            owners = _companions(policy, data_paths)
            hashed = await _hash_all(src, plan.verify, policy, cfg, progress) if args.hash else {}

            for i, (path, entry) in enumerate(sorted(listed.items()), 1):
                progress.count("checked", i, len(listed))
                kind, status = _classify(
                    path, entry, listed, final, known.records, to_verify, rejected, hashed, owners, explain, now
                )
                rows.append(CheckRow(path, entry.size, entry.mtime, kind, status))
            progress.clear()
    except SourceError:
        progress.clear()
        raise  # adapters name the server or directory and the problem

    for path, rec in sorted(known.records.items()):
        if path not in listed and rec.state in (State.READY, State.REJECTED) and not any(
            path.startswith(d.rstrip("/") + "/") for d in listing.unlisted_dirs
        ):
            rows.append(CheckRow(
                path, rec.size, rec.mtime, "gone",
                f"gone (reported as generation {rec.generation}; no longer listed)",
            ))

    counts = Counter(r.kind for r in rows)
    summary = {k: counts[k] for k in _KIND_ORDER if counts[k]}
    problems = list(listing.warnings) + [f"{r.path}: {r.status}" for r in rows if r.kind in PROBLEM_KINDS]
    if args.json:
        _dump({
            "source": {"url": cfg.display_url, "id": known.source_id, "first_start": known.first_start,
                       "state": known.note},
            "checked_at": rfc3339(now),
            "files": [
                {"path": r.path, "size": r.size, "mtime": rfc3339(r.mtime), "kind": r.kind, "status": r.status}
                for r in rows
            ],
            "summary": summary,
            "warnings": listing.warnings,
            "problems": len(problems),
        })
    else:
        _print_check(cfg, policy, known, rows, summary, listing.warnings, args, now)
    return EXIT_PROBLEMS if problems else EXIT_OK


async def _hash_all(
    src: Source, requests: list[VerifyRequest], policy: Policy, cfg: SourceConfig, progress: Progress
) -> dict[str, tuple[Digest | None, Entry | None, str | None] | str]:
    slots = asyncio.Semaphore(cfg.max_connections)
    out: dict[str, tuple[Digest | None, Entry | None, str | None] | str] = {}
    batch = 64
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        results = await asyncio.gather(*(_hash_one(src, r, policy, slots) for r in chunk), return_exceptions=True)
        for req, result in zip(chunk, results, strict=True):
            if isinstance(result, SourceError):
                out[req.record.path] = str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                out[req.record.path] = result
        progress.count("hashed", min(start + batch, len(requests)), len(requests))
    progress.clear()
    return out


def _classify(
    path: str,
    entry: Entry,
    listed: dict[str, Entry],
    final: dict[str, FileRecord],
    before: dict[str, FileRecord],
    to_verify: dict[str, VerifyRequest],
    rejected: dict[str, EventSpec],
    hashed: dict[str, tuple[Digest | None, Entry | None, str | None] | str],
    owners: dict[str, list[str]],
    explain: _Explainer,
    now: float,
) -> tuple[str, str]:
    policy = explain.policy
    if policy.marker is not None and policy.marker.matches(path):
        return "marker", _companion_status("marker", owners.get(path))
    if policy.sidecar is not None and policy.sidecar.matches(path):
        return "sidecar", _companion_status("sidecar", owners.get(path))
    if not policy.path_filter.wanted(path):
        return "ignored", explain.ignored(path)
    rec = final[path]
    if path in to_verify:
        result = hashed.get(path)
        if result is None:
            return explain.candidate(rec, before.get(path))
        if isinstance(result, str):
            return "error", f"error: {result}"
        digest, after, sidecar_problem = result
        return explain.verified(to_verify[path], digest, after, sidecar_problem, now)
    if path in rejected:
        return "problem", f"would be rejected: {rec.problem}"
    if rec.state is State.READY:
        return "reported", f"complete, already reported (generation {rec.generation})"
    if rec.state is State.REJECTED:
        return "rejected", f"rejected ({rec.problem})"
    if rec.state is State.SKIPPED:
        return "skipped", "skipped (already there at the source's first start; existing: skip)"
    return explain.waiting(entry, rec, listed, now)


def _print_check(
    cfg: SourceConfig,
    policy: Policy,
    known: _Known,
    rows: list[CheckRow],
    summary: dict[str, int],
    warnings: list[str],
    args: argparse.Namespace,
    now: float,
) -> None:
    out: list[str] = []
    out.append(f"source  {cfg.display_url}")
    out.append(f"state   {known.note}")
    rules = [f"stable_for {format_duration(policy.stable_for_s)}", f"min_size {policy.min_size}",
             f"checksum {cfg.checksum}"]
    if policy.min_age_s:
        rules.append(f"min_age {format_duration(policy.min_age_s)}")
    if cfg.marker:
        rules.append(f"marker {cfg.marker}")
    if cfg.sidecar:
        rules.append(f"sidecar {cfg.sidecar}")
    if known.first_start:
        rules.append(f"existing: {cfg.existing}")
    out.append("policy  " + ", ".join(rules))
    shown = [r for r in rows if r.kind in PROBLEM_KINDS] if args.summary else rows
    if shown:
        out.append("")
        out.extend(_table(
            ("PATH", "SIZE", "AGE", "STATUS"),
            ((r.path, r.size, _age(now - r.mtime), r.status) for r in shown),
            right=(1, 2),
        ))
    out.append("")
    for w in warnings:
        out.append(f"warning: {w}")
    out.append(
        "note: check does not wait; a file counts as stable once unchanged for stable_for since its mtime"
        " (or, if the state tracks it, since the server first saw its current size and mtime)."
    )
    if not args.hash:
        out.append("note: without --hash, changed files are told by size and mtime; --hash reads them.")
    files = sum(summary.values()) - summary.get("gone", 0)
    parts = ", ".join(f"{n} {_KIND_LABEL.get(k, k)}" for k, n in summary.items())
    out.append(f"summary: {files} file{'' if files == 1 else 's'} listed" + (f": {parts}" if parts else ""))
    sys.stdout.write("\n".join(out) + "\n")


_KIND_LABEL = {
    "emit": "would emit",
    "verify": "to re-verify",
    "changed": "changed since reported",
    "reported": "already reported",
    "gone": "gone",
}


def _check(args: argparse.Namespace) -> int:
    return asyncio.run(_check_async(args))


# --- state ------------------------------------------------------------------------------------------


def _state_path(args: argparse.Namespace) -> Path:
    return Path(args.state or _env("STATE") or "ftpsource.db")


def _resolve_source(store: Store, name: str) -> SourceRow:
    sources = store.list_sources()
    for s in sources:
        if s.id == name:
            return s
    by_url = [s for s in sources if s.url == name]
    if len(by_url) == 1:
        return by_url[0]
    known = ", ".join(s.id for s in sources) or "none"
    raise ConfigError([f"source {name!r}: not in {store.path} (sources: {known})"])


def _normalize_path(source: SourceRow, path: str) -> str:
    prefix = source.url.rstrip("/") + "/"
    if path.startswith(prefix):
        path = path[len(prefix) :]
    return path.lstrip("/").removeprefix("./")


def _missing_path(store: Store, source: SourceRow, path: str) -> ConfigError:
    paths = list(store.load_records(source.id))
    close = difflib.get_close_matches(path, paths, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError([f"path {path!r}: not in the state of source {source.id!r}{hint}"])


def _state_list(args: argparse.Namespace) -> int:
    store = Store.open_read_only(_state_path(args))
    try:
        sources = store.list_sources()
    finally:
        store.close()
    if args.json:
        _dump([
            {"id": s.id, "url": s.url, "files": s.files, "pending": s.pending, "undelivered": s.undelivered,
             "first_start": rfc3339(s.first_start), "last_poll": rfc3339(s.last_poll),
             "last_ok_poll": rfc3339(s.last_ok_poll), "last_error": s.last_error}
            for s in sources
        ])
        return EXIT_OK
    if not sources:
        print(f"no sources in {store.path}")
        return EXIT_OK
    lines = _table(
        ("SOURCE", "URL", "FILES", "PENDING", "UNDELIVERED", "LAST POLL", "LAST OK POLL", "LAST ERROR"),
        ((s.id, s.url, s.files, s.pending, s.undelivered, _when(s.last_poll), _when(s.last_ok_poll),
          s.last_error) for s in sources),
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
    store = Store.open_read_only(_state_path(args))
    try:
        source = _resolve_source(store, args.source)
        path = _normalize_path(source, args.path)
        rec = store.get_record(source.id, path)
        history = store.history(source.id, path)
        if rec is None and not history:
            raise _missing_path(store, source, path)
    finally:
        store.close()
    entries = [_history_entry(h) for h in history]
    if args.json:
        _dump({
            "source": source.id, "url": source.url, "path": path,
            "record": None if rec is None else {
                "state": rec.state.value, "generation": rec.generation, "checksum": rec.ready_checksum,
                "size": rec.size, "mtime": rfc3339(rec.mtime), "ready_size": rec.ready_size,
                "ready_mtime": rfc3339(rec.ready_mtime), "first_seen": rfc3339(rec.first_seen),
                "stable_since": rfc3339(rec.stable_since), "problem": rec.problem,
                "problem_since": rfc3339(rec.problem_since),
            },
            "history": entries,
        })
        return EXIT_OK
    out = [f"source        {source.id}  ({source.url})", f"path          {path}"]
    if rec is None:
        out.append("record        none (forgotten, or dropped before it was reported)")
    else:
        out += [
            f"state         {rec.state.value}",
            f"generation    {rec.generation}",
            f"checksum      {rec.ready_checksum or '-'}",
            f"size          {rec.size}" + (f" (reported: {rec.ready_size})"
                                           if rec.ready_size not in (None, rec.size) else ""),
            f"mtime         {_when(rec.mtime)}",
            f"first seen    {_when(rec.first_seen)}",
            f"stable since  {_when(rec.stable_since)}",
            f"problem       {rec.problem or '-'}" + (f" (since {_when(rec.problem_since)})"
                                                     if rec.problem_since else ""),
        ]
    out.append("")
    if not entries:
        out.append("history: no events")
    else:
        out.append(f"history: {len(entries)} event{'s' if len(entries) != 1 else ''}")
        out += _table(
            ("TIME", "TYPE", "REASON", "GENERATION", "CHECKSUM", "DELIVERED"),
            ((_when(h.created), h.type, e["problem"] or e["reason"], e["generation"], _short(e["checksum"]),
              "dropped (source forgotten)" if e["dropped"] else
              (_when(h.delivered) if h.delivered is not None else "no (waiting for a stream)"))
             for h, e in zip(history, entries, strict=True)),
        )
    print("\n".join(out))
    return EXIT_OK


_RUNNING_NOTE = (
    "a stream already running for this source picks this up at its next poll; replayed events get new ids"
)


def _state_forget(args: argparse.Namespace) -> int:
    path = _state_path(args)
    ro = Store.open_read_only(path)  # validates the file before Store() would add tables to it
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
        what = (f"all {len(targets)} file records of source {source.id!r}" if args.all_files
                else f"source {source.id!r} entirely ({source.files} files, {undelivered} undelivered events)")
        raise ConfigError([f"forget: this forgets {what}; rerun with --yes to confirm"])

    forgotten = 0
    store = Store(path)
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


# --- registration ---------------------------------------------------------------------------------


def add_commands(sub: Any, add_common: AddCommon) -> None:
    """Register ``check`` and ``state`` on the top-level subparsers."""
    check = sub.add_parser(
        "check",
        help="validate a config, connect, list, and show what would be emitted; changes nothing",
        description=(
            "Validate CONFIG, connect to its source and list it, then show for every file whether the "
            "server would report it now and why not. With --state, decisions use that state file's "
            "records (opened read-only). Nothing is written anywhere."
        ),
        epilog="exit status: 0 all good; 1 listed, but found problems (unreadable directories, files failing "
               "verification); 2 could not check (config, credentials, connection, state file)",
    )
    check.add_argument("config", help="source config file (YAML or JSON)")
    check.add_argument("--state", default=None,
                       help="state file whose records to use (default $FTPSOURCE_STATE; none: as on a first start)")
    check.add_argument("--credentials-dir", default=None, help="default $FTPSOURCE_CREDENTIALS_DIR")
    check.add_argument("--name", default=None,
                       help="event name the source runs under (picks its records when the config has no `id`)")
    check.add_argument("--hash", action="store_true",
                       help="read complete files to tell new content from bytes already reported")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--summary", action="store_true", help="print only problems and the summary")
    add_common(check)

    state = sub.add_parser("state", help="inspect the state file; forget paths so they are reported again")
    state_help = "SQLite state file (default $FTPSOURCE_STATE, else ftpsource.db); never created"
    state.add_argument("--state", default=None, help=state_help)
    actions = state.add_subparsers(dest="state_command", required=True)

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS: `state --state X list` and `state list --state X` both work.
        p.add_argument("--state", default=argparse.SUPPRESS, help=state_help)
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
    forget.add_argument("--all-files", action="store_true",
                        help="forget every file record of the source (all files are reported again)")
    forget.add_argument("--yes", action="store_true", help="confirm forgetting more than named paths")
    forget.set_defaults(state_handler=_state_forget)


def _state(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = args.state_handler
    return handler(args)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {"check": _check, "state": _state}
