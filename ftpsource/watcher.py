"""The per-source loop: list -> decide -> verify/hash -> commit (records + outbox) -> stream, and
the moves and deletes of versions settled by their Workflows.

``Watcher.run`` polls and decides; ``Watcher.deliver`` streams the outbox. They share nothing but the
store and an ``asyncio.Event`` that says "the outbox grew", so a slow or absent client never stalls
detection, and a crash between the two loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import posixpath
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from .adapters import Adapter, Verification, adapter_for, verify_version
from .adapters.base import CHUNK_SIZE, Sink
from .config import SourceConfig
from .core.detect import PollPlan, VerifyOutcome, VerifyRequest, after_verify, plan_poll, tombstone, unknown_paths
from .core.events import EVENT_TYPES, SourceInfo, encode_event
from .core.expect import OPEN, advance, file_status, match_arrival, prunable, warn
from .core.model import EventSpec, Expectation, FileRecord, SetMember, SetPeriod, Staged, State
from .core.sets import OPEN as SET_OPEN
from .core.sets import advance_sets, prunable_sets, set_status, todays
from .core.settle import SettleVersion, render_target, still_the_version
from .core.stage import where_staged
from .credentials import Credentials
from .errors import ActionRefused, FileVanished, LeaseLost, PermanentSourceError, SourceError, StageError, StateError
from .gcpause import drop_in_slices, full_collections_paused
from .metrics import EXPECTED_SERIES, Metrics
from .offloop import until_ended
from .stage import PART_SIZE, Stager, Upload
from .store import AsyncStore, NewEvent, OutboxRow, VersionRow

__all__ = ["Backoff", "Watcher", "cancel_and_wait", "freeze_long_lived", "refresh_unsettled", "run_session"]

log = logging.getLogger(__name__)

VERIFY_BATCH = 64
#: Small local files verified per worker-thread job (see ``Adapter.verify_small``).
SMALL_BATCH = 32
DELIVER_BATCH = 128
DELIVER_BACKLOG_BATCH = 1024
FREEZE_AFTER_UPSERTS = 1000
#: From this many listed files on, a poll keeps full collections off while it lists and plans.
LARGE_LISTING = 50_000
MIN_RESCAN_S = 0.25
GAUGES_EVERY_S = 1.0
LOCAL_VERIFY_SLOTS = 8
#: Files bigger than one part a source stages at once. Each such upload holds up to six parts in memory
#: (48 MiB at 8 MiB parts, see ``stage``); eight at once, as a local directory is verified, would take
#: most of a 512 Mi pod. Smaller files (one ``PutObject``, one part at most) are not counted.
UPLOAD_SLOTS = 2
COMMIT_MAX = 1024
#: Delivered events and tombstones are kept this long by default (``serve --retention-days``).
RETENTION_S = 35 * 86400.0
#: How often (by the source's clock) a source prunes what is past its retention, and how many rows one
#: pruning transaction may touch, so that pruning a backlog never holds the store for long.
PRUNE_EVERY_S = 600.0
PRUNE_BATCH = 500
#: Records applied to memory between two yields to the event loop (about 1 ms of work; 20,000 held
#: the loop over 100 ms on a loaded machine, the dict's resize at a million entries included).
MEMORY_SLICE = 2_000
MAX_BAD_NAMES_REMEMBERED = 10_000
RECENT_ERRORS = 10

Clock = Callable[[], float]
#: A verification's outcome, the expectation it met, and its event already encoded for the outbox.
Verified = tuple[VerifyOutcome | None, Expectation | None, NewEvent | None]


class Backoff:
    """Exponential backoff with "equal jitter" (a random delay in [d/2, d]), capped."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.attempt = base, cap, 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


class Watcher:
    """Runs one source: polling, decisions and the outbox for ``source_id``."""

    def __init__(
        self,
        config: SourceConfig,
        source_id: str,
        store: AsyncStore,
        credentials: Credentials,
        metrics: Metrics,
        *,
        clock: Clock = time.time,
        adapter_factory: Callable[..., Adapter] = adapter_for,
        confirm_after_s: float = 0.0,
        retention_s: float = RETENTION_S,
        epoch: int | None = None,
        stage_credentials: Credentials | None = None,
    ) -> None:
        """``confirm_after_s``: how long a written row must stay on a live stream before it counts as
        delivered (see ``deliver``); 0 when a completed write is itself the evidence (stdout)."""
        self.config = config
        self.source_id = source_id
        self.store = store
        self.credentials = credentials
        self.metrics = metrics
        self.clock = clock
        #: The source's lease this watcher writes under (``None``: unfenced, e.g. ``ftpsource watch``).
        self.epoch = epoch
        self.policy = config.policy()
        self.info = SourceInfo(source_id, config.display_url, self.policy.checksum)
        #: The records of the files that are there. Tombstones stay in the store, looked up when their path
        #: is listed again, except for a source with sets: a member counts once it was reported, even if
        #: it is gone since, so there they are kept here too (until their retention ends).
        self.records: dict[str, FileRecord] = {}
        self._keep_tombstones = bool(config.expect_sets)
        self.expectations: dict[tuple[str, str], Expectation] = {}
        self.sets: dict[tuple[str, str], SetPeriod] = {}
        #: for the status page: the last few problems (time, kind, message) and the last complete poll
        self.recent_errors: deque[tuple[float, str, str]] = deque(maxlen=RECENT_ERRORS)
        self.last_ok_poll: float | None = None
        self.first_start_at = 0.0
        #: when this stream loaded its rules: an expect rule seen for the first time starts here
        self.rules_since = 0.0
        self._wake = asyncio.Event()
        self.outbox_changed = asyncio.Event()
        self.polled = asyncio.Event()  # set after each complete poll
        self._adapter_factory = adapter_factory
        self._log_extra = {"source": source_id}
        # max_connections bounds connections to a server; a local directory is read by threads instead,
        # and a burst of small files is bound by the hop to a thread, so more of them overlap.
        local = config.parsed_url.scheme == "file"
        self._verify_slots = asyncio.Semaphore(LOCAL_VERIFY_SLOTS if local else config.max_connections)
        self._upload_slots = asyncio.Semaphore(UPLOAD_SLOTS)  # taken before, never inside, a verify slot
        self._gauges_due = 0.0
        self._gauges_stale = False
        self._bad_names_seen: set[str] = set()
        self._listed: int | None = None  # files in the last listing (None: no poll yet)
        self.confirm_after_s = confirm_after_s
        self.retention_s = retention_s
        self._pruned_at: float | None = None
        #: rows written to the stream and not confirmed yet: (seq, when the write completed, monotonic)
        self.unconfirmed: deque[tuple[int, float]] = deque()
        self._write_more = True
        self._settled = asyncio.Event()
        self._on_success = config.on_success.spec()
        self._on_failure = config.on_failure.spec()
        self._stage_credentials = stage_credentials
        self._stager: Stager | None = None
        self._stage_backoff = Backoff()
        self._stage_wait_until = 0.0
        #: set once the server's hash of a file was not the hash of the bytes it sent: its word no longer
        #: chooses a staged object's key
        self._server_hash_wrong = False

    # detection -------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll forever. Raises ``PermanentSourceError`` when retrying cannot help."""
        store = self.store
        first_start = await self._load()
        await self._refresh_outbox_gauge()
        await refresh_unsettled(store, self.metrics, self.source_id)
        backoff = Backoff()
        async with (
            self._adapter_factory(self.config, self.credentials, self.policy.path_filter) as src,
            self._stage_client() as self._stager,
        ):
            while True:
                started = self.clock()
                min_gap = 0.0
                try:
                    if await store.run(store.sync.revision, self.source_id) != self.info.revision:
                        # `ftpsource state forget` ran while we were streaming: start from the store again.
                        first_start = await self._load()
                    polling_since = time.monotonic()
                    next_due = await self.poll_once(src, first_start=first_start)
                    poll_took = time.monotonic() - polling_since
                    first_start = False
                    await self.prune()
                    await self.run_post_actions(src)
                    backoff.reset()
                    delay = self.config.poll_interval_s - (self.clock() - started)
                    if next_due is not None:
                        delay = min(delay, next_due - self.clock())
                    delay = max(delay, MIN_RESCAN_S)
                    # Changes reported while a file is being written must not run full rescans back to
                    # back: the next waits at least as long as this one took (and MIN_RESCAN_S), and
                    # every change reported meanwhile is covered by that one rescan.
                    min_gap = max(MIN_RESCAN_S, poll_took)
                except LeaseLost:
                    raise  # a newer stream owns the source now: retrying would only fail again
                except PermanentSourceError as exc:
                    self._count_error(exc.kind, str(exc))
                    await self._record_poll(False, str(exc))
                    raise
                except (SourceError, StateError) as exc:
                    kind = exc.kind if isinstance(exc, SourceError) else "state"
                    self._count_error(kind, str(exc))
                    delay = backoff.next()
                    log.warning("poll failed (%s), retrying in %.1fs", exc, delay, extra=self._log_extra)
                    try:
                        await self._record_poll(False, str(exc))
                    except LeaseLost:
                        raise
                    except StateError:
                        pass
                await self._sleep(src, delay, min_gap)

    async def _load(self) -> bool:
        """(Re)load this source's records and expectations. Returns whether this is a first start."""
        store = self.store
        first_start, self.first_start_at = await store.run(
            store.sync.begin_source, self.source_id, self.info.url, self.clock(), epoch=self.epoch
        )
        self.rules_since = max(self.first_start_at, self.clock())
        revision = await store.run(store.sync.revision, self.source_id)
        self.info.revision = revision or 0
        load = store.sync.load_records if self._keep_tombstones else store.sync.live_records
        with full_collections_paused():
            self.records = await store.run(load, self.source_id)
            freeze_long_lived()
        self.expectations = {
            (x.rule, x.period): x for x in await store.run(store.sync.load_expectations, self.source_id)
        }
        self.sets = {(x.rule, x.period): x for x in await store.run(store.sync.load_sets, self.source_id)}
        return first_start

    def wake(self) -> None:
        """Re-evaluate now (used when an injected clock jumps)."""
        self._wake.set()

    async def _sleep(self, src: Adapter, delay: float, min_gap: float = 0.0) -> None:
        """Until ``delay`` passes, the source reports a change or ``wake`` is called, but not before
        ``min_gap`` (real time) has passed."""
        started = time.monotonic()
        changed = asyncio.ensure_future(src.wait_for_change(delay))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({changed, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            woken.cancel()
            self._wake.clear()
        rest = min_gap - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    async def poll_once(self, src: Adapter, *, first_start: bool = False) -> float | None:
        """One complete poll. Returns when the next pending file becomes due, if any."""
        sid = self.source_id
        t0 = time.perf_counter()
        large = self._listed is None or self._listed >= LARGE_LISTING
        with full_collections_paused() if large else contextlib.nullcontext():
            plan, now = await self._plan(src, first_start)
        rules = self.config.expect_files
        exp = advance(rules, self.expectations, self.records, self.rules_since, now)
        advanced = {**self.expectations, **{(x.rule, x.period): x for x in exp.changed}}
        warned = warn(rules, advanced, now)
        changed = {(x.rule, x.period): x for x in [*exp.changed, *warned.changed]}
        dropped = prunable(self.expectations, now)
        sets = advance_sets(self.config.expect_sets, self.sets, self.records, self.rules_since, now)
        sets.events = self._with_staged(sets.events)
        await self._commit(
            plan.upserts,
            plan.removals,
            [*plan.events, *exp.events, *warned.events, *sets.events],
            now,
            initialized=first_start,
            expectations=list(changed.values()),
            expectations_dropped=dropped,
            sets=sets.changed,
            sets_dropped=prunable_sets(self.sets, now),
        )
        self.metrics.poll_duration.labels(sid).observe(time.perf_counter() - t0)

        next_due = _earliest(_earliest(plan.next_due, exp.next_due), _earliest(warned.next_due, sets.next_due))
        pending, next_due = await self._verify_and_commit(src, plan.verify, plan.pending, next_due)

        if len(plan.upserts) >= FREEZE_AFTER_UPSERTS:
            freeze_long_lived()
        self.metrics.files_pending.labels(sid).set(pending)
        self.metrics.files_tracked.labels(sid).set(plan.tracked)
        self.metrics.polls.labels(sid, "ok").inc()
        self._count_expected(self.clock())
        await self._record_poll(True)
        self.polled.set()
        return next_due

    async def _plan(self, src: Adapter, first_start: bool) -> tuple[PollPlan, float]:
        """List the source and compare the listing with the records; returns the plan and its time.

        The listing (a million entries, for a big tree) is freed here a slice at a time, and the records
        of a plan that adds many are frozen, so neither is left for a full collection to walk (``gcpause``).
        """
        sid = self.source_id
        try:
            listing = await src.list()
        except SourceError:
            self.metrics.polls.labels(sid, "error").inc()
            raise
        for warning in listing.warnings:
            log.warning("listing: %s", warning, extra=self._log_extra)
        for bad in listing.bad_names:
            # A hostile or broken server lists the same name on every poll: one warning and one count each.
            if bad not in self._bad_names_seen:
                if len(self._bad_names_seen) >= MAX_BAD_NAMES_REMEMBERED:
                    self._bad_names_seen.clear()
                self._bad_names_seen.add(bad)
                log.warning("listing: %s", bad, extra=self._log_extra)
                self._count_error("bad_name", bad)
        tombstones: dict[str, FileRecord] = {}
        if not first_start and not self._keep_tombstones:
            # A listed path without a record may be a reported file coming back: its tombstone, if it
            # has one, is in the store (looked up a few hundred paths per statement, off the loop).
            unknown = await asyncio.to_thread(unknown_paths, listing.entries, self.records, self.policy)
            if unknown:
                tombstones = await self.store.run(self.store.sync.tombstones, sid, unknown)
        now = self.clock()
        # Off the loop: comparing a million-file listing with the records takes over a second, and
        # streams, the status page and other sources must not wait for it. Nothing else changes
        # ``self.records`` meanwhile: only this task commits.
        plan = await asyncio.to_thread(
            plan_poll,
            listing.entries,
            self.records,
            now,
            self.policy,
            first_start=first_start,
            unlisted_dirs=listing.unlisted_dirs,
            tombstones=tombstones,
        )
        self._listed = len(listing.entries)
        await asyncio.to_thread(drop_in_slices, listing.entries)
        if len(plan.upserts) >= FREEZE_AFTER_UPSERTS:
            freeze_long_lived()
        return plan, now

    async def _verify_and_commit(
        self, src: Adapter, requests: Sequence[VerifyRequest], pending: int, next_due: float | None
    ) -> tuple[int, float | None]:
        """Verify ``requests`` (``_verify_slots`` at a time) and commit the outcomes as they come: each
        commit takes everything verified while the previous one ran (at most ``COMMIT_MAX``). A burst of
        small files then costs a few dozen transactions, not one per ``VERIFY_BATCH``, while a slow
        download is committed, and its event sent, as soon as the store is free."""
        outcomes: asyncio.Queue[Verified | None] = asyncio.Queue()

        jobs = self._verify_jobs(src, requests)

        async def produce() -> None:
            try:
                for i in range(0, len(jobs), VERIFY_BATCH):
                    tasks = [asyncio.ensure_future(job()) for job in jobs[i : i + VERIFY_BATCH]]
                    try:
                        for task in asyncio.as_completed(tasks):
                            for outcome, met in await task:
                                # Encoded now, while the store commits earlier outcomes on its thread,
                                # rather than in a row with the commit that takes it.
                                event = outcome.event if outcome is not None else None
                                outcomes.put_nowait((outcome, met, None if event is None else self._encode(event)))
                    finally:
                        # A download cancelled half-way closes its data connection on the way out; wait
                        # for that, so no connection outlives the adapter (or the loop) it belongs to.
                        await cancel_and_wait(tasks)
            finally:
                outcomes.put_nowait(None)

        producer = asyncio.ensure_future(produce())
        try:
            finished = False
            while not finished:
                batch = [await outcomes.get()]
                while not outcomes.empty() and len(batch) < COMMIT_MAX:
                    batch.append(outcomes.get_nowait())
                finished = batch[-1] is None
                done = [item for item in batch if item is not None]
                if done:
                    pending, next_due = await self._commit_verified(done, pending, next_due)
            await producer  # re-raises what stopped it
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        return pending, next_due

    def _verify_jobs(
        self, src: Adapter, requests: Sequence[VerifyRequest]
    ) -> list[Callable[[], Awaitable[list[tuple[VerifyOutcome | None, Expectation | None]]]]]:
        """The verifications as jobs: small files without a sidecar ``SMALL_BATCH`` at a time when the
        adapter reads them so (and nothing is staged: an upload streams through the event loop), the
        others one by one."""
        small_max = src.small_file_max if self._stager is None else 0
        jobs: list[Callable[[], Awaitable[list[tuple[VerifyOutcome | None, Expectation | None]]]]] = []
        small: list[VerifyRequest] = []
        for req in requests:
            if req.sidecar_path is None and req.entry.size <= small_max:
                small.append(req)
                if len(small) == SMALL_BATCH:
                    jobs.append(functools.partial(self._verify_small, src, small))
                    small = []
            else:
                jobs.append(functools.partial(self._verify_one, src, req))
        if small:
            jobs.append(functools.partial(self._verify_small, src, small))
        return jobs

    async def _verify_one(
        self, src: Adapter, req: VerifyRequest
    ) -> list[tuple[VerifyOutcome | None, Expectation | None]]:
        return [await self._verify(src, req)]

    async def _commit_verified(
        self, outcomes: Sequence[Verified], pending: int, next_due: float | None
    ) -> tuple[int, float | None]:
        """Commit one batch of verification outcomes; returns the pending count and next due time."""
        done = [o for o, _, _ in outcomes if o is not None]
        met = [m for o, m, _ in outcomes if o is not None and o.event is not None and m is not None]
        now = self.clock()
        await self._commit(
            [o.record for o in done],
            (),
            [o.event for o in done if o.event is not None],
            now,
            expectations=met,
            encoded=[e for _, _, e in outcomes if e is not None],
        )
        pending -= sum(1 for o in done if o.record.state is not State.PENDING)
        if any(o.event is not None and o.event.type == "ready" for o in done):
            # A member just became ready: report its set now, not a poll later.
            sets = advance_sets(self.config.expect_sets, self.sets, self.records, self.rules_since, now)
            await self._commit((), (), self._with_staged(sets.events), now, sets=sets.changed)
            next_due = _earliest(next_due, sets.next_due)
        for o in done:
            rec = o.record
            if rec.state is State.PENDING and rec.problem_since is not None:
                next_due = _earliest(next_due, rec.problem_since + self.policy.reject_after_s)
            elif rec.state is State.PENDING:
                next_due = _earliest(next_due, now + self.policy.stable_for_s)
        return pending, next_due

    def _with_staged(self, events: list[EventSpec]) -> list[EventSpec]:
        """Set events list each member's staged object too, when the source stages."""
        if self.config.stage is None:
            return events
        target = self.config.stage.target()

        def member(m: SetMember) -> SetMember:
            if m.checksum is None:
                return m
            where = where_staged(
                target, source_id=self.source_id, path=m.path, generation=m.generation, sha256=m.checksum, size=m.size
            )
            return replace(m, staged=where)

        return [replace(e, members=tuple(member(m) for m in e.members)) if e.members else e for e in events]

    def _stage_client(self) -> contextlib.AbstractAsyncContextManager[Stager | None]:
        stage = self.config.stage
        if stage is None:
            return contextlib.nullcontext()
        assert self._stage_credentials is not None, "stage needs its credential set"
        return Stager(stage.target(), self._stage_credentials, self.config.timeout_s)

    async def _verify(self, src: Adapter, req: VerifyRequest) -> tuple[VerifyOutcome | None, Expectation | None]:
        """Verify one version; with ``stage``, its bytes also go to the bucket, and a ready event is made
        only once its object is complete (a staging failure: nothing now, retried later).

        Which way the bytes go is decided here, and only here. The upload goes straight to the final key
        when that key is known before the bytes are sent: the key template needs no digest (a new
        version's generation is known), or the digest can be had first without a second transfer (a
        local file is hashed by the verification read, then read again from the page cache for the
        upload; a server-side hash). A key that already holds those bytes gets no upload at all. Only a
        remote file without a server hash is read once into a temporary key and copied afterwards:
        reading it twice would double the transfer."""
        stager = self._stager
        if stager is None:
            return await self._verify_once(src, req, None)
        if self.clock() < self._stage_wait_until:
            return None, None  # object storage failed a moment ago: do not read the file for nothing
        target, path, size = stager.target, req.record.path, req.entry.size
        generation = req.record.generation + 1  # the generation the version gets should it be new
        if not target.needs_digest:
            key = target.key(source_id=self.source_id, path=path, sha256="", generation=generation)
            return await self._verify_staging(src, req, stager.upload(size, key))
        if src.read_method == "local":
            outcome, met = await self._verify_once(src, req, None)
            return await self._stage_hashed(src, req, outcome, met, stager)
        known = None
        if not self._server_hash_wrong:
            async with self._verify_slots:
                try:
                    known = await src.server_digest(path, "sha256")
                except SourceError as exc:
                    self._count_error(exc.kind, f"{path}: {exc}")
                    log.warning(
                        "verification failed, will retry: %s", exc, extra={"source": self.source_id, "path": path}
                    )
                    return None, None
        if known is None:
            return await self._verify_staging(src, req, stager.upload(size))
        key = target.key(source_id=self.source_id, path=path, sha256=known, generation=generation)
        try:
            held = await stager.holds(key, known, size)
        except StageError as exc:
            return self._stage_error(path, exc)
        if not held:
            return await self._verify_staging(src, req, stager.upload(size, key, known), expect=known)
        # Nothing to upload, but the server's word is no evidence that its file holds the object's bytes
        # (it could name any object whose digest it knows): the bytes are read and hashed here, and only
        # the same digest lets the event name that object.
        outcome, met = await self._verify_once(src, req, _DISCARD)
        event = _ready_event(outcome)
        if outcome is None or event is None:
            return outcome, met
        if event.checksum != known:
            return await self._server_hash_mismatch(src, req)
        if event.generation != generation:
            return await self._changed_while_read(src, req, "the bytes hashed are not those the server hashed")
        self._stage_backoff.reset()
        staged = where_staged(
            target, source_id=self.source_id, path=path, generation=generation, sha256=known, size=size
        )
        return replace(outcome, event=replace(event, staged=staged)), met

    async def _verify_staging(
        self, src: Adapter, req: VerifyRequest, upload: Upload, expect: str | None = None
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """Verify with the one read also streaming to ``upload``; complete it if the version is ready.
        ``expect``: the digest the upload's key and metadata were made for; other bytes abort it."""
        async with self._upload_slot(req.entry.size):
            if self.clock() < self._stage_wait_until:
                return None, None  # object storage failed while this waited for its turn
            return await self._verify_uploading(src, req, upload, expect)

    def _upload_slot(self, size: int) -> contextlib.AbstractAsyncContextManager[object]:
        """One of ``UPLOAD_SLOTS`` for a file that goes up as a multipart upload; nothing for a smaller one."""
        return self._upload_slots if size > PART_SIZE else contextlib.nullcontext()

    async def _verify_uploading(
        self, src: Adapter, req: VerifyRequest, upload: Upload, expect: str | None
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        finished = False
        try:
            outcome, met = await self._verify_once(src, req, upload)
            event = _ready_event(outcome)
            if outcome is None or event is None or event.checksum is None:
                if upload.failed:
                    self._stage_failed("uploading failed")
                return outcome, met
            if expect is not None and event.checksum != expect:
                return await self._server_hash_mismatch(src, req)
            try:
                staged = await upload.finish(
                    source_id=self.source_id, path=event.path, generation=event.generation, sha256=event.checksum
                )
            except StageError as exc:
                return self._stage_error(event.path, exc)
            finished = True
            self._stage_backoff.reset()
            return replace(outcome, event=replace(event, staged=staged)), met
        finally:
            if not finished:
                # Changed while read, same bytes as before, or a failure: nothing stays in the bucket.
                with contextlib.suppress(StageError):
                    await asyncio.shield(upload.abort())

    async def _stage_hashed(
        self, src: Adapter, req: VerifyRequest, outcome: VerifyOutcome | None, met: Expectation | None, stager: Stager
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """Stage a local version the verification read found ready: its content-addressed key is known,
        so unless that key holds the bytes, a second read (hashing again) streams them straight there."""
        event = _ready_event(outcome)
        if outcome is None or event is None or event.checksum is None or event.size is None:
            return outcome, met
        path, sha256, size = event.path, event.checksum, event.size
        staged = where_staged(
            stager.target, source_id=self.source_id, path=path, generation=event.generation, sha256=sha256, size=size
        )
        try:
            held = await stager.holds(staged.key, sha256, size)
        except StageError as exc:
            return self._stage_error(path, exc)
        if not held:
            async with self._upload_slot(size):
                if self.clock() < self._stage_wait_until:
                    return None, None  # object storage failed while this waited for its turn
                return await self._upload_hashed(src, req, outcome, event, met, stager, staged)
        self._stage_backoff.reset()
        return replace(outcome, event=replace(event, staged=staged)), met

    async def _upload_hashed(
        self,
        src: Adapter,
        req: VerifyRequest,
        outcome: VerifyOutcome,
        event: EventSpec,
        met: Expectation | None,
        stager: Stager,
        staged: Staged,
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """``_stage_hashed``'s second read, streaming to the content-addressed key."""
        path, sha256, size = event.path, staged.sha256, staged.size
        upload = stager.upload(size, staged.key, sha256)
        finished = False
        try:
            async with self._verify_slots:
                again = await src.digest(path, "sha256", None, size, upload)
            after = await src.stat(path)
            if again.value != sha256 or after is None or (after.size, after.mtime) != (size, event.mtime):
                raise FileVanished(f"{path}: changed between hashing and uploading")
            await upload.finish(source_id=self.source_id, path=path, generation=event.generation, sha256=sha256)
            finished = True
        except FileVanished as exc:
            return await self._changed_while_read(src, req, str(exc))
        except StageError as exc:
            return self._stage_error(path, exc)
        except SourceError as exc:
            self._count_error(exc.kind, f"{path}: {exc}")
            log.warning("staging read failed, will retry: %s", exc, extra={"source": self.source_id, "path": path})
            return None, None
        finally:
            if not finished:
                with contextlib.suppress(StageError):
                    await asyncio.shield(upload.abort())
        self.metrics.bytes_hashed.labels(self.source_id).inc(size)
        self._stage_backoff.reset()
        return replace(outcome, event=replace(event, staged=staged)), met

    async def _server_hash_mismatch(
        self, src: Adapter, req: VerifyRequest
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """The bytes read (the file unchanged meanwhile) are not those the server's hash was of: from now
        on this source stages through a temporary key, as for a server that does not hash, so the
        version is reported with the digest of its bytes at the next try instead of never."""
        if not self._server_hash_wrong:
            self._server_hash_wrong = True
            self._count_error("server_hash", f"{req.record.path}: the server's hash is not that of its bytes")
            log.warning(
                "the server's hash of a file is not the hash of the bytes it sent; staging no longer relies on it",
                extra={"source": self.source_id, "path": req.record.path},
            )
        return await self._changed_while_read(src, req, "the bytes read are not those the server hashed")

    async def _changed_while_read(
        self, src: Adapter, req: VerifyRequest, why: str
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """The version is not complete after all: pending again, as when it changes during a read."""
        path = req.record.path
        log.info("changed while being read, pending again: %s", why, extra={"source": self.source_id, "path": path})
        try:
            after = await src.stat(path)
        except SourceError as exc:
            self._count_error(exc.kind, f"{path}: {exc}")
            return None, None
        return after_verify(req, None, after, self.clock(), self.policy), None

    def _stage_error(self, path: str, exc: StageError) -> tuple[None, None]:
        self._count_error(exc.kind, f"{path}: {exc}")
        self._stage_failed(str(exc))
        return None, None

    def _stage_failed(self, why: str) -> None:
        delay = self._stage_backoff.next()
        self._stage_wait_until = self.clock() + delay
        log.warning("staging failed (%s); the event waits, retrying in %.1fs", why, delay, extra=self._log_extra)

    async def _verify_once(
        self, src: Adapter, req: VerifyRequest, sink: Sink | None
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        policy = self.policy
        async with self._verify_slots:
            try:
                found: Verification | Exception = await verify_version(src, req, policy.checksum, policy.validate, sink)
            except Exception as exc:
                found = exc
        return self._decide(req, found)

    async def _verify_small(
        self, src: Adapter, requests: Sequence[VerifyRequest]
    ) -> list[tuple[VerifyOutcome | None, Expectation | None]]:
        """Verify small files together (``Adapter.verify_small``): one slot, one read of them all."""
        policy = self.policy
        async with self._verify_slots:
            try:
                found = await src.verify_small(requests, policy.checksum, policy.validate)
            except Exception as exc:
                found = [exc] * len(requests)
        return [self._decide(req, f) for req, f in zip(requests, found, strict=True)]

    def _decide(
        self, req: VerifyRequest, found: Verification | Exception
    ) -> tuple[VerifyOutcome | None, Expectation | None]:
        """What reading a version (or failing to) decides about it."""
        path = req.record.path
        extra = {"source": self.source_id, "path": path}
        policy = self.policy
        if isinstance(found, SourceError):
            self._count_error(found.kind, f"{path}: {found}")
            log.warning("verification failed, will retry: %s", found, extra=extra)
            return None, None
        if isinstance(found, Exception):
            # A bug or a surprise from a library must not stop every other file of the source (nor
            # end the stream in a crash loop): this file keeps its record and is tried again.
            self._count_error("internal", f"{path}: verification crashed")
            log.error("verification crashed, will retry", exc_info=found, extra=extra)
            return None, None
        digest, after, sidecar_problem = found.digest, found.after, found.sidecar_problem
        if sidecar_problem:
            log.warning("sidecar %s: %s", req.sidecar_path, sidecar_problem, extra=extra)
        if found.vanished:
            log.info("changed while being read, pending again: %s", found.vanished, extra=extra)
        if digest is not None and digest.method != "server":
            self.metrics.bytes_hashed.labels(self.source_id).inc(digest.size)
        now = self.clock()
        match = match_arrival(self.config.expect_files, self.expectations, path, now)
        outcome = after_verify(
            req,
            digest,
            after,
            now,
            policy,
            sidecar_problem=sidecar_problem,
            deadline=match.deadline,
            late=match.late,
            late_seconds=match.late_seconds,
        )
        if outcome.record.problem and outcome.event is None:
            log.warning("not ready: %s", outcome.record.problem, extra=extra)
        return outcome, match.expectation

    def _encode(self, spec: EventSpec) -> NewEvent:
        """An event as the outbox keeps it: its id and payload, and for ``ready`` its settling version."""
        eid, payload = encode_event(self.info, spec)
        version = None
        if spec.type == "ready":
            # The actions go with the version now, so a later settle does not depend on a later config.
            version = SettleVersion(
                spec.path, spec.generation, spec.size, spec.mtime, spec.checksum, self._on_success, self._on_failure
            )
        return NewEvent(eid, spec.type, spec.path, payload, version)

    async def _commit(
        self,
        upserts: Sequence[FileRecord],
        removals: Sequence[str],
        events: Sequence[EventSpec],
        now: float,
        *,
        initialized: bool = False,
        expectations: Sequence[Expectation] = (),
        expectations_dropped: Sequence[Expectation] = (),
        sets: Sequence[SetPeriod] = (),
        sets_dropped: Sequence[SetPeriod] = (),
        encoded: Sequence[NewEvent] | None = None,
    ) -> None:
        """Commit a decision. ``encoded``: the ``events`` already encoded (``_encode``), in order."""
        if not (
            upserts or removals or events or initialized or expectations or expectations_dropped or sets or sets_dropped
        ):
            return
        if encoded is None:
            encoded = [self._encode(spec) for spec in events]
        elif len(encoded) != len(events):
            raise ValueError("encoded events do not match the events")
        store = self.store
        await store.run(
            store.sync.commit,
            self.source_id,
            upserts,
            removals,
            encoded,
            now,
            expectations=expectations,
            initialized=initialized,
            expectations_dropped=expectations_dropped,
            sets=sets,
            sets_dropped=sets_dropped,
            epoch=self.epoch,
        )
        # Only after the commit succeeded does memory follow the database, in slices so that a
        # first start with a million files does not hold the event loop while the dict fills.
        records, keep = self.records, self._keep_tombstones
        for i in range(0, len(upserts), MEMORY_SLICE):
            if i:
                await asyncio.sleep(0)
            for rec in upserts[i : i + MEMORY_SLICE]:
                if rec.state is State.DELETED and not keep:
                    records.pop(rec.path, None)
                else:
                    records[rec.path] = rec
        for path in removals:
            records.pop(path, None)
        for x in expectations:
            self.expectations[(x.rule, x.period)] = x
        for x in expectations_dropped:
            self.expectations.pop((x.rule, x.period), None)
        for y in sets:
            self.sets[(y.rule, y.period)] = y
        for y in sets_dropped:
            self.sets.pop((y.rule, y.period), None)
        # Label lookups once per kind of event, not once per event: a burst commits 1,024 at a time.
        counts = Counter((spec.type, spec.reason or "") for spec in events)
        for (kind, reason), n in counts.items():
            self.metrics.events.labels(self.source_id, EVENT_TYPES[kind], reason).inc(n)
        latency = None
        for spec in events:
            if spec.type == "ready":
                if latency is None:
                    latency = self.metrics.detection_latency.labels(self.source_id)
                latency.observe(max(0.0, now - spec.first_seen))
                log.info(
                    "ready: %s generation %d",
                    spec.reason,
                    spec.generation,
                    extra={"source": self.source_id, "path": spec.path},
                )
            else:
                log.info("%s", spec.type, extra={"source": self.source_id, "path": spec.path})
        if events:
            self.outbox_changed.set()
            await self._refresh_gauges()

    async def prune(self) -> int:
        """Forget what is past its retention, at most every ``PRUNE_EVERY_S``: delivered events (and
        settled versions) and tombstones, ``PRUNE_BATCH`` rows per transaction. Returns rows dropped."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = now
        store, dropped = self.store, 0
        while True:
            n = await store.run(
                store.sync.prune_delivered, self.source_id, now - self.retention_s, PRUNE_BATCH, epoch=self.epoch
            )
            dropped += n
            if n < PRUNE_BATCH:
                break
        while True:
            paths = await store.run(
                store.sync.prune_tombstones, self.source_id, now - self.retention_s, PRUNE_BATCH, epoch=self.epoch
            )
            for path in paths:
                rec = self.records.get(path)
                if rec is not None and rec.state is State.DELETED:
                    del self.records[path]
            dropped += len(paths)
            if len(paths) < PRUNE_BATCH:
                break
        if dropped:
            log.info("pruned %d rows past their retention", dropped, extra=self._log_extra)
        return dropped

    async def _record_poll(self, ok: bool, error: str | None = None) -> None:
        now = self.clock()
        await self.store.run(self.store.sync.record_poll, self.source_id, now, ok, error, epoch=self.epoch)
        if ok:
            self.last_ok_poll = now
            self.metrics.last_ok_poll.labels(self.source_id).set(now)

    async def _refresh_outbox_gauge(self) -> None:
        n = await self.store.run(self.store.sync.undelivered_count, self.source_id)
        self.metrics.outbox_pending.labels(self.source_id).set(n)

    async def _refresh_gauges(self, *, force: bool = False) -> None:
        """The outbox and unsettled gauges, each a count in the store: during a burst (a commit and a
        confirmation every few milliseconds) at most once per ``GAUGES_EVERY_S``, and once more when
        the outbox is drained, so the store's one thread decides and delivers instead of counting."""
        now = time.monotonic()
        if not force and now < self._gauges_due:
            self._gauges_stale = True
            return
        self._gauges_due, self._gauges_stale = now + GAUGES_EVERY_S, False
        await self._refresh_outbox_gauge()
        await refresh_unsettled(self.store, self.metrics, self.source_id)

    def _count_expected(self, now: float) -> None:
        counts = Counter(
            [("file", file_status(x)) for x in self.expectations.values() if todays(x.deadline, x.state in OPEN, now)]
            + [("set", set_status(y)) for y in self.sets.values() if todays(y.deadline, y.state in SET_OPEN, now)]
        )
        for kind, status in EXPECTED_SERIES:
            self.metrics.expected.labels(self.source_id, kind, status).set(counts[(kind, status)])

    # settled versions ----------------------------------------------------------------------------------
    async def run_post_actions(self, src: Adapter) -> None:
        """Move or delete the files of settled versions; what fails for now is tried after the next poll."""
        store = self.store
        rows = await store.run(store.sync.pending_actions, self.source_id)
        for row in rows:
            await self._post_action(src, row)
        if rows:
            await refresh_unsettled(store, self.metrics, self.source_id)

    async def _post_action(self, src: Adapter, row: VersionRow) -> bool:
        """Run one post-action to an end (done, changed, failed); False when it stays pending."""
        version = row.version
        assert row.outcome is not None and row.settled is not None
        spec = version.action_for(row.outcome)
        extra = {"source": self.source_id, "path": version.path}
        store = self.store

        async def finish(state: str, result: str, detail: str | None, target: str | None = None) -> None:
            await store.run(store.sync.finish_action, row.event_id, state, detail, target, self.clock())
            self.metrics.post_actions.labels(self.source_id, spec.action, result).inc()

        target = None
        try:
            if spec.action == "move":
                assert spec.to is not None
                target = render_target(spec.to, version.path, row.settled, spec.timezone)
            entry = await src.stat(version.path)
            server_sum = None
            algorithm = self.policy.checksum
            if entry is not None and version.checksum is not None and algorithm is not None:
                server_sum = await src.server_digest(version.path, algorithm)
            changed = still_the_version(version, entry, server_sum)
            if changed is not None:
                log.info("%s: %s left alone, %s", row.outcome, spec.action, changed, extra=extra)
                await finish("changed", "changed", changed)
                return True
            if target is not None:
                directory = posixpath.dirname(target)
                if directory:
                    await src.makedirs(directory)
                await src.rename(version.path, target)
            else:
                await src.remove(version.path)
        except ValueError as exc:  # a target outside the root
            log.warning("%s: %s refused: %s", row.outcome, spec.action, exc, extra=extra)
            await finish("failed", "failed", str(exc))
            return True
        except ActionRefused as exc:
            log.warning("%s: %s refused: %s", row.outcome, spec.action, exc, extra=extra)
            await finish("failed", "failed", str(exc), target)
            return True
        except FileVanished as exc:
            await finish("changed", "changed", f"changed since reported: {exc}")
            return True
        except SourceError as exc:
            self._count_error(exc.kind, f"{version.path}: {spec.action}: {exc}")
            log.warning("%s: %s failed, will retry: %s", row.outcome, spec.action, exc, extra=extra)
            self.metrics.post_actions.labels(self.source_id, spec.action, "retry").inc()
            await store.run(store.sync.note_action_attempt, row.event_id, str(exc), self.clock())
            return False
        detail = None
        if target is not None:
            # No protocol offers a rename conditional on the file's state, so a write landing between the
            # check above and the rename moves with the file. Look at what arrived, and say so if it is
            # not the settled version (the move is not undone: the target is where the operator looks).
            differs = await self._moved_differs(src, version, target)
            if differs is not None:
                detail = f"moved, but the file changed during the move ({differs})"
                log.warning("%s: %s", row.outcome, detail, extra=extra)
        await finish("done", "ok", detail, target)
        log.info("%s: %s", row.outcome, f"moved to {target}" if target else "deleted", extra=extra)
        rec = self.records.get(version.path)
        if rec is not None and rec.state is State.READY and rec.generation == version.generation:
            # Our own move is no deletion to report: the record becomes a tombstone right away.
            now = self.clock()
            await self._commit([tombstone(rec, now)], (), (), now)
        return True

    @staticmethod
    async def _moved_differs(src: Adapter, version: SettleVersion, target: str) -> str | None:
        """Why the moved file is not the settled version; None when it is, or when it cannot be looked at."""
        try:
            moved = await src.stat(target)
        except SourceError as exc:
            # The move is done; an unreadable target only loses this after-check (and claims nothing).
            log.info("could not look at %s after moving it: %s", target, exc)
            return None
        return still_the_version(version, moved, None)

    def _count_error(self, kind: str, message: str) -> None:
        self.metrics.source_errors.labels(self.source_id, kind).inc()
        self.recent_errors.append((self.clock(), kind, message))

    # delivery ----------------------------------------------------------------------------------------
    async def deliver(
        self, write: Callable[[OutboxRow], Awaitable[None]], alive: Callable[[], bool] = lambda: True
    ) -> None:
        """Write undelivered outbox rows in order; mark them delivered on evidence the client has them.

        gRPC has no application acknowledgement, and a completed write only means the bytes passed
        flow control into the transport. The evidence is the stream surviving, after the write, a full
        keepalive cycle: the server pings whenever the client has been silent for the keepalive time and
        drops the connection when a ping is not answered within the ping timeout, and a ping is answered
        only after everything sent before it was read (one ordered byte stream). So a row still on a live
        stream ``confirm_after_s`` (keepalive + ping timeout + slack) after its write was received by the
        client's transport; a row written into a dead connection is never confirmed, stays in the outbox
        and is sent first on the next stream, with the same id (docs/decisions.md, "Delivery").

        Returns when ``alive()`` turns false (the stream is gone; nothing more can be confirmed).
        """
        store = self.store
        pending = self.unconfirmed
        last_seq = 0
        limit = DELIVER_BATCH
        while True:
            if not alive():
                return
            now = time.monotonic()
            confirmed = []
            while pending and pending[0][1] + self.confirm_after_s <= now:
                confirmed.append(pending.popleft()[0])
            if confirmed:
                await store.run(
                    store.sync.mark_delivered, confirmed, self.clock(), source_id=self.source_id, epoch=self.epoch
                )
                await self._refresh_gauges()
            self.outbox_changed.clear()
            rows = await store.run(store.sync.undelivered, self.source_id, limit, last_seq) if self._write_more else []
            # A full read means a backlog: read more at a time while it lasts. Each read waits for the
            # store's thread, behind the commits of a burst; at one small read per commit, delivery
            # would trail detection by seconds.
            limit = DELIVER_BACKLOG_BATCH if len(rows) == limit else DELIVER_BATCH
            for row in rows:
                await write(row)
                pending.append((row.seq, time.monotonic()))
                last_seq = row.seq
            if rows:
                continue
            if not pending:
                if self._gauges_stale:
                    await self._refresh_gauges(force=True)
                self._settled.set()
            timeout = None if not pending else max(0.0, pending[0][1] + self.confirm_after_s - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox_changed.wait(), timeout)

    async def settle(self, *, write_rest: bool) -> None:
        """Until every row written has been confirmed (call once detection has stopped).

        ``write_rest``: also write, and then confirm, what is still in the outbox; otherwise nothing
        more is written and unwritten rows wait for the next stream.
        """
        self._write_more = write_rest
        self._settled.clear()
        self.outbox_changed.set()  # wake ``deliver`` to look again
        await self._settled.wait()


def freeze_long_lived() -> None:
    """Move what is alive now (above all the file records) out of the cyclic collector's reach.

    Records hold no reference cycles. Without this, the ~100,000 new entries of every large listing
    set off a full collection that walks every record again (about 0.3x a `find` of the tree). No
    collection first: with a million records that alone would hold the event loop for a second, and
    the little garbage frozen with them is not worth it.
    """
    gc.freeze()


async def refresh_unsettled(store: AsyncStore, metrics: Metrics, source_id: str) -> None:
    """Set ``ftpsource_unsettled_versions`` and the oldest one's delivery time from the store."""
    count, oldest = await store.run(store.sync.unsettled, source_id)
    metrics.unsettled.labels(source_id).set(count)
    metrics.unsettled_oldest.labels(source_id).set(oldest or 0)


class _Discard:
    """A sink that drops what it gets: given to a read, it makes the adapter send the bytes (and hash
    them here) rather than ask the server for its hash."""

    read_size = CHUNK_SIZE

    async def write(self, chunk: bytes) -> None:
        return None


_DISCARD = _Discard()


def _ready_event(outcome: VerifyOutcome | None) -> EventSpec | None:
    event = outcome.event if outcome is not None else None
    return event if event is not None and event.type == "ready" else None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


async def cancel_and_wait(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished its cleanup (closing connections), even
    if this is cancelled again meanwhile; that cancellation is re-raised afterwards."""
    for task in tasks:
        task.cancel()
    await until_ended(tasks)


async def run_session(
    watcher: Watcher,
    write: Callable[[OutboxRow], Awaitable[None]],
    alive: Callable[[], bool] = lambda: True,
    *,
    stop: asyncio.Event | None = None,
    settle_timeout_s: float | None = None,
) -> None:
    """Run detection and delivery together until detection fails, ``stop`` is set, or the stream goes.

    Either way detection stops first and what was written is confirmed (``Watcher.settle``) before
    this returns or raises, so ending a stream repeats nothing: on ``stop`` (shutdown) nothing more is
    written; on a detection failure the rest of the outbox is written and confirmed too, so a source
    that keeps failing does not send the same event on every reconnect. ``settle_timeout_s`` bounds
    that wait for a failure; a shutdown's bound is the caller's (it cancels).
    """
    deliver = asyncio.create_task(watcher.deliver(write, alive), name=f"deliver {watcher.source_id}")
    detect = asyncio.create_task(watcher.run(), name=f"watch {watcher.source_id}")
    stopping = asyncio.create_task((stop or asyncio.Event()).wait(), name=f"stop {watcher.source_id}")
    tasks = [deliver, detect, stopping]
    settled: asyncio.Future[None] | None = None
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if deliver.done():
            deliver.result()  # a delivery failure (the state store) is the stream's failure
            return  # the stream is gone
        detect.cancel()
        await asyncio.wait({detect})
        failure = None if detect.cancelled() else detect.exception()
        if isinstance(failure, LeaseLost):
            raise failure  # a newer stream owns the source and its outbox now
        settled = asyncio.ensure_future(watcher.settle(write_rest=failure is not None))
        await asyncio.wait(
            {settled, deliver},
            timeout=None if failure is None else settle_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        settled.cancel()
        if deliver.done():
            deliver.result()
        if failure is not None:
            raise failure
    finally:
        await cancel_and_wait([*tasks, settled] if settled is not None else tasks)
