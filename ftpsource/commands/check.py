"""``ftpsource check``: a dry run against a source.

It lists a source and explains, file by file, what the server would do with it now, using the
records of an existing state file when given. It changes nothing: the state file is opened read-only
and a missing one is never created.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..adapters import Adapter, Verification, adapter_for, verify_version
from ..config import SourceConfig, format_duration
from ..core.detect import Policy, VerifyRequest, after_verify, marker_releases, observe, plan_poll
from ..core.events import rfc3339
from ..core.model import Entry, EventSpec, FileRecord, Listing, State
from ..core.paths import PathFilter
from ..credentials import load_credentials
from ..errors import ConfigError, SourceError
from ..policy import authorize
from ..store import is_postgres_url, open_store_read_only
from .common import STATE_PASSWORD_HELP, add_common, env, read_config
from .output import PROGRESS_EVERY, Progress, age, dump, table

__all__ = ["CheckRow", "add_parser", "run"]

EXIT_OK, EXIT_PROBLEMS = 0, 1
#: ``check`` kinds that make the exit status non-zero.
PROBLEM_KINDS = frozenset({"problem", "rejected", "error"})
_KIND_ORDER = (
    "emit",
    "verify",
    "changed",
    "reported",
    "pending",
    "waiting",
    "too small",
    "problem",
    "rejected",
    "skipped",
    "error",
    "ignored",
    "marker",
    "sidecar",
    "gone",
)


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


def _known(cfg: SourceConfig, state: str | None, name: str | None, password_file: Path | None = None) -> _Known:
    named = cfg.id or (cfg.source_id(name) if name else None)
    if state is None:
        return _Known(named, {}, True, "none given: decided as on a first start")
    if not is_postgres_url(state) and not Path(state).exists():
        return _Known(named, {}, True, f"no state file at {state}: decided as on a first start")
    store = open_store_read_only(state, password_file)
    path = store.location
    try:
        source_id = named
        if source_id is None:
            # No id and no event name: find the source by its URL, as the server recorded it.
            matches = [s.id for s in store.list_sources() if s.url == cfg.display_url]
            if len(matches) > 1:
                raise ConfigError(
                    [
                        f"--name: {len(matches)} sources in {path} watch {cfg.display_url} "
                        f"({', '.join(matches)}); give the event name with --name"
                    ]
                )
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
        young_text = f"min_age {format_duration(p.min_age_s)}, modified {age(now - entry.mtime)} ago"
        if p.marker is not None:
            marker = p.marker.render(entry.path)
            if marker not in listed:
                return "waiting", f"waiting for marker {marker}"
            if not marker_releases(listed[marker], entry):
                return "waiting", f"waiting for marker {marker} (the one there is older than the file)"
            if young:
                return "pending", f"pending (marker present; {young_text})"
        else:
            stable = now - rec.stable_since
            if stable < p.stable_for_s:
                return "pending", (f"pending (stable for {age(stable)} of {format_duration(p.stable_for_s)})")
            if young:
                return "pending", f"pending ({young_text})"
        if rec.problem is not None:
            left = (rec.problem_since or now) + p.reject_after_s - now
            return "problem", (
                f"pending, failed verification: {rec.problem} (rejected in {age(left)} unless it changes)"
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

    def verified(self, req: VerifyRequest, found: Verification, now: float) -> tuple[str, str]:
        outcome = after_verify(req, found.digest, found.after, now, self.policy, sidecar_problem=found.sidecar_problem)
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
        rec = records.get(e.path)
        if rec is None and skip_new:
            continue
        changed = observe(rec, e, now, stable_since=min(e.mtime, now))
        if changed is not None:
            out[e.path] = changed
    return out


async def _hash_one(src: Adapter, req: VerifyRequest, policy: Policy, slots: asyncio.Semaphore) -> Verification:
    async with slots:
        return await verify_version(src, req, policy.checksum, policy.validate)


async def _list(src: Adapter, progress: Progress) -> Listing:
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
    cfg = read_config(args.config)
    credentials_dir = args.credentials_dir or env("CREDENTIALS_DIR")
    creds = load_credentials(Path(credentials_dir) if credentials_dir else None, cfg.credentials)
    authorize(cfg, creds, allowed_roots=None)  # the operator's own config may read its own root
    policy = cfg.policy()
    password_file = args.state_password_file or env("STATE_PASSWORD_FILE")
    known = _known(cfg, args.state or env("STATE"), args.name, Path(password_file) if password_file else None)
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
                listing.entries,
                records,
                now,
                policy,
                first_start=known.first_start,
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
        if (
            path not in listed
            and rec.state in (State.READY, State.REJECTED)
            and not any(path.startswith(d.rstrip("/") + "/") for d in listing.unlisted_dirs)
        ):
            rows.append(
                CheckRow(
                    path,
                    rec.size,
                    rec.mtime,
                    "gone",
                    f"gone (reported as generation {rec.generation}; no longer listed)",
                )
            )

    counts = Counter(r.kind for r in rows)
    summary = {k: counts[k] for k in _KIND_ORDER if counts[k]}
    problems = list(listing.warnings) + [f"{r.path}: {r.status}" for r in rows if r.kind in PROBLEM_KINDS]
    if args.json:
        dump(
            {
                "source": {
                    "url": cfg.display_url,
                    "id": known.source_id,
                    "first_start": known.first_start,
                    "state": known.note,
                },
                "checked_at": rfc3339(now),
                "files": [
                    {"path": r.path, "size": r.size, "mtime": rfc3339(r.mtime), "kind": r.kind, "status": r.status}
                    for r in rows
                ],
                "summary": summary,
                "warnings": listing.warnings,
                "problems": len(problems),
            }
        )
    else:
        _print_check(cfg, policy, known, rows, summary, listing.warnings, args, now)
    return EXIT_PROBLEMS if problems else EXIT_OK


async def _hash_all(
    src: Adapter, requests: list[VerifyRequest], policy: Policy, cfg: SourceConfig, progress: Progress
) -> dict[str, Verification | str]:
    slots = asyncio.Semaphore(cfg.max_connections)
    out: dict[str, Verification | str] = {}
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
    hashed: dict[str, Verification | str],
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
        return explain.verified(to_verify[path], result, now)
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
    rules = [
        f"stable_for {format_duration(policy.stable_for_s)}",
        f"min_size {policy.min_size}",
        f"checksum {cfg.checksum}",
    ]
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
        out.extend(
            table(
                ("PATH", "SIZE", "AGE", "STATUS"),
                ((r.path, r.size, age(now - r.mtime), r.status) for r in shown),
                right=(1, 2),
            )
        )
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


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_check_async(args))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    check.add_argument(
        "--state",
        default=None,
        help="state file or postgresql:// URL whose records to use (default $FTPSOURCE_STATE; none: first start)",
    )
    check.add_argument("--state-password-file", default=None, help=STATE_PASSWORD_HELP)
    check.add_argument("--credentials-dir", default=None, help="default $FTPSOURCE_CREDENTIALS_DIR")
    check.add_argument(
        "--name", default=None, help="event name the source runs under (picks its records when the config has no `id`)"
    )
    check.add_argument(
        "--hash", action="store_true", help="read complete files to tell new content from bytes already reported"
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--summary", action="store_true", help="print only problems and the summary")
    add_common(check)
    check.set_defaults(handler=run)
