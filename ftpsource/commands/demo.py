"""``ftpsource demo``: every behaviour in under a minute, against an embedded FTP server.

Everything is real except the calendar: an aioftp FTP server on a free loopback port, the ftpsource
gRPC server in-process with its own temporary state, and a gRPC client that calls
``generic.Eventing/StartEventSource`` exactly as Argo's generic EventSource does. Scripted FTP uploads
then show each behaviour; the only shortcut is the server's clock, which the demo fast-forwards to a
deadline instead of waiting for it.

Where moto's standalone S3 server is installed (a dev dependency), a last step starts it in a process
of its own and adds a second source that stages its files in a bucket there; the demo then plays the
Workflow's part: it reads each staged object back, checks its sha256, processes it, and settles it with
``ftpsource settle``, so one file is archived and another quarantined.

A ``Checklist`` holds the events the script expects. Every event the client receives is matched
against it; anything else counts as unexpected. The exit status is 0 only if every expected event
arrived, with the expected fields, and nothing else did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import os
import random
import secrets
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aioftp
import grpc
from botocore.exceptions import BotoCoreError, ClientError

from .._proto import generic_pb2, generic_pb2_grpc
from ..clock import ShiftedClock
from ..config import ServerSettings, parse_source_config
from ..errors import FtpsourceError
from ..metrics import Metrics
from ..server import start_server
from ..store import Store
from .common import add_common

__all__ = [
    "BEHAVIOURS",
    "STAGED",
    "Checklist",
    "Expected",
    "add_parser",
    "moto_missing",
    "process_csv",
    "run",
    "run_demo",
]

EVENT_NAME = "demo"
USER = "demo"
CREDENTIAL_SET = "demo"
STABLE_FOR = "1s"
POLL_INTERVAL = "1s"
GRACE_MIN = 2
WAIT_S = 15.0  # for any single expected thing
DEMO_KEEPALIVE_S = 1.0  # loopback: delivery is confirmed about 3 s after a write
SCRIPT_TIMEOUT_S = 100.0  # for the whole script
BREAK_ENV = "FTPSOURCE_DEMO_BREAK"  # hidden: "identical" makes step 3 wrong on purpose, to show a failing checklist

#: (key, summary line) in the order the demo shows them.
BEHAVIOURS: tuple[tuple[str, str], ...] = (
    ("slow", "1. slow upload: reported once, when complete"),
    ("partial", "2. partial upload not reported; the complete file reported once (new)"),
    ("identical", "3. identical re-upload: nothing emitted"),
    ("corrected", "4. corrected re-upload: reupload, generation 2"),
    ("set", "5. files expected together: one set.complete once every member is in"),
    ("late", "6. expected file missing at its deadline, then ready with late: true"),
    ("set_late", "7. a set at risk before its deadline, incomplete after it, then complete with late: true"),
    ("restart", "8. restart: the file uploaded while down reported once, nothing re-sent"),
)
#: The two sets of the demo config: one completes on time, one is warned about and completes late.
SET_ON_TIME = ("daily-master", ("orders_%Y%m%d.csv", "customers_%Y%m%d.csv"))
SET_LATE = ("daily-stock", ("stock_%Y%m%d.csv", "prices_%Y%m%d.csv"))
WARN_MIN = 5
OTHER = "other"

#: Step 9, shown only where moto's S3 server can run.
STAGED = ("staged", "9. staged in S3, read back intact, processed; one archived, one quarantined")
PARTNER = "partner"  # a second FTP user: its own drop zone, watched by a second source with `stage:`
PARTNER_SOURCE = "partner-landing"
PARTNER_EVENT = "etl"
S3_SET = "s3"
BUCKET = "etl-raw"
STAGE_PREFIX = "landing"
ARCHIVE_TO = "archive/%Y/%m/%d/{name}"
QUARANTINE_TO = "failed/{name}"
# A key pair only the demo's own moto server ever sees.
S3_ACCESS_KEY = "ftpsource-demo"
#: The S3 server's process: moto's threaded server on a free loopback port; it prints the port, and
#: ends when its stdin closes, so it never outlives the demo, however the demo ends.
_MOTO_CHILD = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""

_ABSENT = object()


# --------------------------------------------------------------------------------------------------
# The checklist: pure bookkeeping, no I/O.
# --------------------------------------------------------------------------------------------------
@dataclass
class Expected:
    """One event the script waits for: its type and path, plus fields it must carry."""

    behaviour: str
    type: str  # short type: ready | missing | rejected | deleted | at_risk | set.complete | set.at_risk | ...
    path: str
    note: str
    want: Mapping[str, object] = field(default_factory=dict)
    event: dict[str, Any] | None = None


def _lookup(data: object, dotted: str) -> object:
    cur = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _ABSENT
        cur = cur[part]
    return cur


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:16] + "…'"


def short_type(event: Mapping[str, Any]) -> str:
    return str(event.get("type", "")).removeprefix("ftpsource.").removeprefix("file.")


class Checklist:
    """Expected events per behaviour; every received event is claimed by one or counted unexpected.

    Unexpected events are charged to the behaviour being shown when they arrive (``active``), or to
    ``OTHER`` between steps.
    """

    def __init__(self, behaviours: Sequence[tuple[str, str]] = BEHAVIOURS) -> None:
        self.titles = dict(behaviours)
        self.expected: list[Expected] = []
        self.problems: dict[str, list[str]] = {key: [] for key in [*self.titles, OTHER]}
        self.received: list[dict[str, Any]] = []
        self.active: str | None = None
        self._ids: set[str] = set()

    def expect(
        self, behaviour: str, type: str, path: str, note: str, want: Mapping[str, object] | None = None
    ) -> Expected:
        exp = Expected(behaviour, type, path, note, dict(want or {}))
        self.expected.append(exp)
        return exp

    def fail(self, behaviour: str | None, problem: str) -> None:
        self.problems[behaviour or OTHER].append(problem)

    def receive(self, event: dict[str, Any]) -> tuple[Expected | None, list[str]]:
        """Claim ``event`` for the first waiting expectation of its type and path.

        Returns the expectation (None if the event was not expected) and the problems found.
        """
        self.received.append(event)
        kind, path, eid = short_type(event), str(event.get("subject", "")), str(event.get("id", ""))
        charge = self.active or OTHER
        if eid in self._ids:
            problem = f"{kind} {path} sent again (same id {eid[:8]}…)"
            self.problems[charge].append(problem)
            return None, [problem]
        self._ids.add(eid)
        for exp in self.expected:
            if exp.event is None and exp.type == kind and exp.path == path:
                exp.event = event
                problems = []
                for key, wanted in exp.want.items():
                    got = _lookup(event.get("data"), key)
                    if got != wanted:
                        shown = "absent" if got is _ABSENT else _short(got)
                        problems.append(f"{kind} {path}: {key} is {shown}, expected {_short(wanted)}")
                self.problems[exp.behaviour].extend(problems)
                return exp, problems
        problem = f"unexpected {kind} event for {path}"
        self.problems[charge].append(problem)
        return None, [problem]

    def results(self) -> list[tuple[str, bool, list[str]]]:
        """``(title, ok, problems)`` per behaviour, plus unexpected events outside any step."""
        out: list[tuple[str, bool, list[str]]] = []
        for key, title in self.titles.items():
            problems = list(self.problems[key])
            problems += [
                f"no {exp.type} event for {exp.path}"
                for exp in self.expected
                if exp.behaviour == key and exp.event is None
            ]
            out.append((title, not problems, problems))
        if self.problems[OTHER]:
            out.append(("no other events", False, list(self.problems[OTHER])))
        return out

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results())


# --------------------------------------------------------------------------------------------------
# Presentation helpers
# --------------------------------------------------------------------------------------------------
def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _hhmm(rfc: object) -> str:
    if not isinstance(rfc, str):
        return "?"
    try:
        return datetime.fromisoformat(rfc.replace("Z", "+00:00")).strftime("%H:%M UTC")
    except ValueError:
        return rfc


def describe_event(event: Mapping[str, Any]) -> str:
    """The details column of one timeline line."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    assert isinstance(data, dict)
    kind = short_type(event)
    if kind == "missing":
        return f"deadline {_hhmm(data.get('deadline'))} passed without it"
    if kind.startswith("set."):
        return _describe_set(kind, data)
    parts = []
    if kind == "ready":
        parts.append(f"{data.get('reason')} gen {data.get('generation')}")
    elif "generation" in data:
        parts.append(f"gen {data.get('generation')}")
    checksum = data.get("checksum")
    if isinstance(checksum, dict):
        parts.append(f"{checksum.get('algorithm')} {str(checksum.get('value', ''))[:6]}…")
    if data.get("late"):
        late_s = data.get("late_seconds")
        late = _fmt_duration(float(late_s)) if isinstance(late_s, int | float) else "?"
        parts.append(f"late: true, {late} after {_hhmm(data.get('deadline'))}")
    if data.get("problem"):
        parts.append(f"problem: {data['problem']}")
    return "  ".join(parts)


def _describe_set(kind: str, data: Mapping[str, Any]) -> str:
    deadline = _hhmm(data.get("deadline"))
    members = data.get("members") or data.get("present") or []
    names = ", ".join(str(m.get("path")) for m in members if isinstance(m, dict)) or "none"
    if kind in ("set.at_risk", "set.incomplete"):
        missing = ", ".join(str(m) for m in data.get("missing") or [])
        when = "before" if kind == "set.at_risk" else "after"
        return f"{when} its {deadline} deadline: missing {missing}; present: {names}"
    late = f"late: true, after {deadline}" if data.get("late") else f"on time for {deadline}"
    return f"gen {data.get('generation')}  {late}  members: {names}"


def _csv(rng: random.Random, rows: int, header: str) -> bytes:
    lines = [header]
    for i in range(rows):
        lines.append(f"2026-11-26,{rng.randrange(1, 500):03d},{i},{rng.randrange(1, 10**6) / 100:.2f}")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Files:
    report_v1: bytes
    report_v2: bytes
    orders_gz: bytes
    sales: bytes
    inventory: bytes

    @classmethod
    def make(cls) -> Files:
        rng = random.Random(6)
        report = _csv(rng, 6000, "date,store,row,amount")
        lines = report.split(b"\n")
        lines[42] = lines[42].rsplit(b",", 1)[0] + b",1234.56"  # the correction
        orders = gzip.compress(_csv(rng, 8000, "date,customer,order,total"), mtime=0)
        return cls(
            report_v1=report,
            report_v2=b"\n".join(lines),
            orders_gz=orders,
            sales=_csv(rng, 200, "date,store,row,amount"),
            inventory=_csv(rng, 300, "date,sku,row,qty"),
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partner_files() -> dict[str, bytes]:
    """Step 9's two uploads: payments.csv processes; refunds.csv has a row its processing rejects."""
    rng = random.Random(9)
    payments = _csv(rng, 400, "date,account,row,amount")
    lines = _csv(rng, 120, "date,account,row,amount").split(b"\n")
    lines[37] = lines[37].rsplit(b",", 1)[0] + b",n/a"
    return {"payments.csv": payments, "refunds.csv": b"\n".join(lines)}


def process_csv(data: bytes) -> tuple[int, float]:
    """Step 9's stand-in for an ETL step: (rows, total of the last column); ValueError names a bad row."""
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    header = next(reader, None)
    if not header:
        raise ValueError("empty file")
    rows, total = 0, 0.0
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ValueError(f"line {number}: {len(row)} fields, expected {len(header)}")
        try:
            total += float(row[-1])
        except ValueError:
            raise ValueError(f'line {number}: {header[-1]} "{row[-1]}" is not a number') from None
        rows += 1
    return rows, total


def moto_missing() -> str | None:
    """Why moto's standalone S3 server cannot run here (None if it can): step 9 needs it."""
    for module in ("moto", "flask", "flask_cors", "werkzeug"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{module} is not installed"
    return None


def demo_start(now: float) -> float:
    """05:58:30 UTC of today or tomorrow (never in the past): the 06:00 deadline is 90 s away."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=5, minute=58, second=30, microsecond=0)
    if day.timestamp() <= now:
        day += timedelta(days=1)
    return day.timestamp()


@contextlib.contextmanager
def _quiet_logs(show: bool = False) -> Iterator[None]:
    """The demo narrates; server logs would interleave. ``--debug`` or ``FTPSOURCE_LOG_LEVEL`` shows them."""
    if show or os.environ.get("FTPSOURCE_LOG_LEVEL"):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ftpsource", "aioftp")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class DemoError(Exception):
    """A setup step failed; the message is one line."""


# --------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------
class Demo:
    def __init__(self, tmp: Path, keep_running: bool) -> None:
        self.tmp = tmp
        self.keep_running = keep_running
        self.t0 = time.monotonic()
        self.s3_skip = moto_missing()
        self.check = Checklist(BEHAVIOURS if self.s3_skip else (*BEHAVIOURS, STAGED))
        self.files = Files.make()
        self.broken = os.environ.get(BREAK_ENV, "")
        self.password = secrets.token_urlsafe(12)
        self.clock = ShiftedClock(demo_start(time.time()))
        self.day = datetime.fromtimestamp(self.clock(), UTC).replace(hour=6, minute=0, second=0)
        self.ftp_root = tmp / "ftp"
        self.creds = tmp / "creds"
        self.state = tmp / "state.db"
        self.ftp_server: Any = None
        self.ftp_port = 0
        self.running: Any = None  # ftpsource.server.RunningServer
        self.grpc_port = 0
        self.reader: Any = None  # ftpsource.store.Store, read access for proofs
        self.source_id = ""
        self.config_text = ""
        self.channel: Any = None
        self.call: Any = None
        self.pump: asyncio.Task[None] | None = None
        self.stream_no = 0
        self.stream_ids: dict[int, list[str]] = {}
        self.closing = False
        self.free_mode = False  # after the script: print events without judging them
        self.uploaded_at: dict[str, float] = {}
        # step 9: the partner's drop zone, the S3 server and the second stream
        self.partner_root = tmp / "partner"
        self.partner_password = secrets.token_urlsafe(12)
        self.s3_secret = secrets.token_urlsafe(18)
        self.s3_proc: asyncio.subprocess.Process | None = None
        self.s3_task: asyncio.Task[None] | None = None
        self.s3_endpoint = ""
        self.partner_call: Any = None
        self.partner_pump: asyncio.Task[None] | None = None

    # output ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def line(self, text: str) -> None:
        print(text, flush=True)

    def say(self, text: str) -> None:
        self.line(f"  {self.elapsed():+6.1f}s  · {text}")

    def section(self, title: str, *explain: str) -> None:
        self.line("")
        self.line(title)
        for text in explain:
            self.line(f"   {text}")

    # setup -------------------------------------------------------------------------------------
    async def start_ftp(self) -> None:
        self.ftp_root.mkdir()
        self.partner_root.mkdir()
        users = [
            aioftp.User(USER, self.password, base_path=self.ftp_root, home_path="/"),
            aioftp.User(PARTNER, self.partner_password, base_path=self.partner_root, home_path="/"),
        ]
        self.ftp_server = aioftp.Server(users)
        try:
            await self.ftp_server.start("127.0.0.1", 0)
        except OSError as exc:
            raise DemoError(f"cannot start the embedded FTP server: {exc.strerror or exc}") from None
        self.ftp_port = int(self.ftp_server.address[1])
        # hosts: each set may be sent to the embedded server only (a set without it cannot be used).
        hosts = f"127.0.0.1:{self.ftp_port}"
        self.write_credentials(CREDENTIAL_SET, username=USER, password=self.password, hosts=hosts)
        self.write_credentials(PARTNER, username=PARTNER, password=self.partner_password, hosts=hosts)

    def write_credentials(self, name: str, **files: str) -> None:
        cred = self.creds / name
        cred.mkdir(parents=True)
        for key, value in files.items():
            path = cred / key
            path.write_text(value + "\n", encoding="utf-8")
            path.chmod(0o600)

    async def start_s3(self) -> None:
        """moto's S3 server in a process of its own, the bucket, and the credential set ``stage`` uses."""
        log = self.tmp / "moto.log"
        with log.open("wb") as err:
            self.s3_proc = proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _MOTO_CHILD,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT_S):
                port = (await proc.stdout.readline()).strip()
        except TimeoutError:
            raise DemoError(f"moto's S3 server did not start within {WAIT_S:.0f}s") from None
        if not port.isdigit():
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            raise DemoError(f"moto's S3 server did not start: {lines[-1] if lines else 'no output'}")
        self.s3_endpoint = f"http://127.0.0.1:{int(port)}"
        self.write_credentials(
            S3_SET,
            access_key=S3_ACCESS_KEY,
            secret_key=self.s3_secret,
            endpoint=self.s3_endpoint,
            hosts=self.s3_endpoint.removeprefix("http://"),
        )
        try:
            async with self.s3_client() as s3:
                await s3.create_bucket(Bucket=BUCKET)
        except (BotoCoreError, ClientError) as exc:
            raise DemoError(f"cannot create the bucket {BUCKET}: {exc}") from None

    def s3_client(self) -> Any:
        """An S3 client to the demo's server, as the Workflow's artifact step would hold one."""
        # Imported here: every command module is imported by the CLI, and `serve` need not carry it.
        import aiobotocore.session
        from aiobotocore.config import AioConfig

        session = aiobotocore.session.get_session()
        return session.create_client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=self.s3_secret,
            config=AioConfig(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=WAIT_S),
        )

    async def stop_s3(self) -> None:
        if self.s3_task is not None:
            self.s3_task.cancel()
            with contextlib.suppress(BaseException):
                await self.s3_task
            self.s3_task = None
        proc, self.s3_proc = self.s3_proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the server's cue to stop
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def partner_config(self) -> str:
        return (
            f"id: {PARTNER_SOURCE}\n"
            f"url: ftp://127.0.0.1:{self.ftp_port}/\n"
            f"credentials: {PARTNER}\n"
            f"poll_interval: {POLL_INTERVAL}\n"
            f"stable_for: {STABLE_FOR}\n"
            "checksum: sha256\n"
            "stage:\n"
            f"  url: s3://{BUCKET}/{STAGE_PREFIX}\n"
            f"  credentials: {S3_SET}\n"
            "on_success:\n"
            "  action: move\n"
            f'  to: "{ARCHIVE_TO}"\n'
            "on_failure:\n"
            "  action: move\n"
            f'  to: "{QUARANTINE_TO}"\n'
        )

    def source_config(self, *, expect: bool = True) -> str:
        text = (
            f"url: ftp://127.0.0.1:{self.ftp_port}/\n"
            f"credentials: {CREDENTIAL_SET}\n"
            f"poll_interval: {POLL_INTERVAL}\n"
            f"stable_for: {STABLE_FOR}\n"
            "reject_after: 10m\n"
        )
        if expect:
            text += f'expect:\n  - path: "sales_%Y%m%d.csv"\n    schedule: "0 6 * * *"\n    grace: {GRACE_MIN}m\n'
            for (name, files), warn in ((SET_ON_TIME, ""), (SET_LATE, f"    warn_before: {WARN_MIN}m\n")):
                members = ", ".join(f'"{f}"' for f in files)
                text += f'  - set: {name}\n    files: [{members}]\n    schedule: "0 6 * * *"\n    grace: {GRACE_MIN}m\n'
                text += warn
        return text

    def server_settings(self, listen: str) -> ServerSettings:
        # The demo's one source is behind FTP: like `serve` without --allow-root, no stream may read a
        # local directory of this machine. Loopback only, so no token is needed. The metrics port is
        # for the status page (--keep-running prints its URL).
        return ServerSettings(
            listen=listen,
            metrics_listen="127.0.0.1:0",
            state=self.state,
            credentials_dir=self.creds,
            allow_roots=(),
            keepalive_s=DEMO_KEEPALIVE_S,
        )

    async def start_ftpsource(self, port: int = 0) -> None:

        settings = self.server_settings(f"127.0.0.1:{port}")
        try:
            self.running = await start_server(settings, Metrics(), clock=self.clock)
        except (FtpsourceError, RuntimeError) as exc:
            if port == 0:
                raise DemoError(f"cannot start the ftpsource gRPC server: {exc}") from None
            # The old port was taken in the meantime: Argo would be pointed at the Service anyway.
            settings = self.server_settings("127.0.0.1:0")
            self.running = await start_server(settings, Metrics(), clock=self.clock)
        self.grpc_port = int(self.running.port)

    async def connect(self) -> None:
        """Open a StartEventSource stream as Argo's generic EventSource does."""

        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.call, self.pump = self.open_stream(EVENT_NAME, self.config_text)

    def open_stream(self, name: str, config: str) -> tuple[Any, asyncio.Task[None]]:
        """One more StartEventSource stream on the channel (one per EventSource event, as in Argo)."""
        stub = generic_pb2_grpc.EventingStub(self.channel)  # type: ignore[no-untyped-call]
        call = stub.StartEventSource(generic_pb2.EventSource(name=name, config=config.encode()))
        self.stream_no += 1
        self.stream_ids[self.stream_no] = []
        pump = asyncio.create_task(self._pump(call, self.stream_no), name=f"demo stream {self.stream_no}")
        return call, pump

    async def disconnect(self) -> None:
        self.closing = True
        for call in (self.call, self.partner_call):
            if call is not None:
                call.cancel()
        for pump in (self.pump, self.partner_pump):
            if pump is not None:
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(pump, 5.0)
        if self.channel is not None:
            await self.channel.close()
        self.call = self.channel = self.pump = self.partner_call = self.partner_pump = None

    async def _pump(self, call: Any, number: int) -> None:
        try:
            async for msg in call:
                try:
                    event = json.loads(msg.payload)
                except ValueError:
                    self.check.fail(self.check.active, "an event payload is not JSON")
                    continue
                self.stream_ids[number].append(str(event.get("id", "")))
                self._show(event)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            if not self.closing:
                self.say(f"stream ended: {code} ({exc.details()})")
                if code != "UNAVAILABLE" or self.check.active != "restart":
                    self.check.fail(self.check.active, f"stream ended: {code}: {exc.details()}")
        except asyncio.CancelledError:
            pass

    def _show(self, event: dict[str, Any]) -> None:
        kind, path = short_type(event), str(event.get("subject", ""))
        head = f"  {self.elapsed():+6.1f}s  {kind:<14} {path:<22} {describe_event(event)}"
        if self.free_mode:
            self.line(head)
            return
        exp, problems = self.check.receive(event)
        note = f"  ({exp.note})" if exp is not None and exp.note else ""
        self.line(head + note)
        for problem in problems:
            self.line(f"            ✗ {problem}")

    # helpers -----------------------------------------------------------------------------------
    async def upload(self, name: str, data: bytes, *, chunks: int = 1, pause: float = 0.0, user: str = USER) -> None:
        """A real FTP upload (STOR) to the embedded server, optionally slow: chunks with pauses."""
        # The server lists mtimes to the second: keep rewrites of one name at least a second apart.
        since = time.monotonic() - self.uploaded_at.get(name, -10.0)
        if since < 1.1:
            await asyncio.sleep(1.1 - since)
        size = -(-len(data) // chunks)
        password = self.partner_password if user == PARTNER else self.password
        try:
            async with (
                asyncio.timeout(WAIT_S + chunks * pause),
                aioftp.Client.context("127.0.0.1", self.ftp_port, user, password) as client,
                client.upload_stream(name) as stream,
            ):
                for i in range(chunks):
                    await stream.write(data[i * size : (i + 1) * size])
                    if pause and i < chunks - 1:
                        await asyncio.sleep(pause)
        except (OSError, TimeoutError, aioftp.AIOFTPException) as exc:
            raise DemoError(f"FTP upload of {name} failed: {exc!r}") from None
        self.uploaded_at[name] = time.monotonic()

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait(self, exp: Expected, timeout: float = WAIT_S) -> bool:
        if await self.until(lambda: exp.event is not None, timeout):
            return True
        self.say(f"✗ no {exp.type} event for {exp.path} within {timeout:.0f}s")
        return False

    def record(self, path: str) -> Any:
        return self.reader.get_record(self.source_id, path)

    def all_delivered(self, source_id: str = "") -> bool:
        rows = [s for s in self.reader.list_sources() if s.id == (source_id or self.source_id)]
        return bool(rows) and rows[0].undelivered == 0

    # the script --------------------------------------------------------------------------------
    async def setup(self) -> None:

        await self.start_ftp()
        if self.s3_skip is None:
            # Started now, ready long before step 9: moto takes a second or two to import.
            self.s3_task = asyncio.create_task(self.start_s3(), name="demo S3 server")
        self.config_text = self.source_config()
        self.source_id = parse_source_config(self.config_text).source_id(EVENT_NAME)
        await self.start_ftpsource()
        self.reader = Store(self.state)
        self.header()
        name, files = SET_LATE
        self.check.expect(
            "set_late",
            "set.at_risk",
            name,
            f"{WARN_MIN} min before its deadline, nothing there",
            {"set": name, "missing": [self.day.strftime(f) for f in files], "present": []},
        )
        await self.connect()
        # The first poll has run once the source is registered with a successful listing.
        if not await self.until(
            lambda: any(s.id == self.source_id and s.last_ok_poll for s in self.reader.list_sources())
        ):
            raise DemoError("ftpsource did not list the FTP server within 15s")
        self.say(f"client connected; ftpsource listed ftp://127.0.0.1:{self.ftp_port}/ (empty)")

    def header(self) -> None:
        start = datetime.fromtimestamp(self.clock(), UTC)
        self.line("ftpsource demo: every behaviour in about 30 seconds, against real servers on this machine")
        self.line("")
        self.line(f"  FTP server  ftp://127.0.0.1:{self.ftp_port}/  embedded aioftp server, user {USER}")
        self.line(f"  ftpsource   gRPC 127.0.0.1:{self.grpc_port}, state {self.state}")
        if self.s3_skip is None:
            self.line("  S3 server   moto's standalone server, in a process of its own, for step 9")
        self.line("  client      calls generic.Eventing/StartEventSource as Argo's generic EventSource does")
        self.line("              and prints each event it receives:  +time  type  path  details  (what it shows)")
        self.line("")
        self.line("  Source config the client sends:")
        for text in self.config_text.splitlines():
            self.line(f"    {text}")
        self.line("")
        self.line(f"  The server runs on a demo clock starting at {start:%Y-%m-%d %H:%M:%S} UTC, so the 06:00")
        self.line("  deadline is near; step 6 fast-forwards it. Uploads are real FTP transfers.")
        if self.broken:
            self.line(f"  ({BREAK_ENV}={self.broken}: a step is deliberately wrong; the demo must fail)")
        self.line("")

    async def step_slow(self) -> None:
        self.section(
            "1. Slow upload",
            "report.csv is written in 12 chunks, 0.25 s apart. While it grows nothing is reported;",
            f"once its size and mtime stay unchanged for {STABLE_FOR}, ftpsource hashes it and reports it.",
        )
        self.check.active = "slow"
        data = self.files.report_v1
        exp = self.check.expect(
            "slow",
            "ready",
            "report.csv",
            "complete after slow upload",
            {"reason": "new", "generation": 1, "size": len(data), "checksum.value": sha256(data)},
        )
        self.say(f"uploading report.csv slowly ({len(data):,} bytes)")
        await self.upload("report.csv", data, chunks=12, pause=0.25)
        self.say("upload finished")
        await self.wait(exp)

    async def step_partial(self) -> None:
        self.section(
            "2. Partial upload, then the complete file",
            "orders.csv.gz arrives cut off (the producer's connection dropped). It is stable, but the",
            "gzip check fails, so it is not reported. Then the producer uploads the complete file.",
        )
        self.check.active = "partial"
        full = self.files.orders_gz
        cut = full[: len(full) * 6 // 10]
        self.say(f"uploading a truncated orders.csv.gz ({len(cut):,} of {len(full):,} bytes)")
        await self.upload("orders.csv.gz", cut)

        def judged() -> bool:
            rec = self.record("orders.csv.gz")
            return rec is not None and rec.size == len(cut) and rec.problem is not None

        if await self.until(judged):
            self.say(f"ftpsource checked it and holds it back: {self.record('orders.csv.gz').problem}")
        else:
            self.check.fail("partial", "ftpsource did not flag the truncated file within 15s")
            self.say("✗ ftpsource did not flag the truncated file")
        exp = self.check.expect(
            "partial",
            "ready",
            "orders.csv.gz",
            "the complete file, reported once",
            {"reason": "new", "generation": 1, "size": len(full), "checksum.value": sha256(full)},
        )
        self.say("uploading the complete orders.csv.gz")
        await self.upload("orders.csv.gz", full)
        await self.wait(exp)

    async def step_identical(self) -> None:
        self.section(
            "3. Identical re-upload",
            "report.csv is uploaded again with the same bytes (new mtime). ftpsource re-checks it,",
            "finds the sha256 of generation 1, and emits nothing.",
        )
        self.check.active = "identical"
        before = self.record("report.csv")
        data = self.files.report_v1
        if self.broken == "identical":
            data = data + b"2026-11-26,999,0,0.00\n"
        self.say("uploading report.csv again")
        await self.upload("report.csv", data)

        def reverified() -> bool:
            rec = self.record("report.csv")
            return (
                rec is not None
                and before is not None
                and rec.state == "ready"
                and rec.mtime != before.mtime
                and rec.ready_mtime == rec.mtime
            )

        if not await self.until(reverified):
            self.check.fail("identical", "ftpsource did not re-check the re-upload within 15s")
            self.say("✗ ftpsource did not re-check the re-upload")
            return
        rows = self.reader.history(self.source_id, "report.csv")
        emitted = len(rows) - 1  # generation 1's ready event
        rec = self.record("report.csv")
        self.say(f"ftpsource re-checked report.csv: generation {rec.generation}, {len(rows)} event(s) in its outbox")
        if emitted == 0:
            self.say("identical bytes: nothing emitted")
        else:
            self.check.fail("identical", f"ftpsource emitted {emitted} event(s) for the identical re-upload")
            self.say(f"✗ identical bytes, yet {emitted} event(s) emitted")

    async def step_corrected(self) -> None:
        self.section(
            "4. Corrected re-upload",
            "report.csv is uploaded with one corrected row: new bytes under the same name.",
        )
        self.check.active = "corrected"
        v1, v2 = self.files.report_v1, self.files.report_v2
        exp = self.check.expect(
            "corrected",
            "ready",
            "report.csv",
            "new bytes: the workflow runs again",
            {
                "reason": "reupload",
                "generation": 2,
                "checksum.value": sha256(v2),
                "previous.checksum.value": sha256(v1),
            },
        )
        self.say("uploading the corrected report.csv")
        await self.upload("report.csv", v2)
        await self.wait(exp)

    async def step_set(self) -> None:
        name, files = SET_ON_TIME
        paths = [self.day.strftime(f) for f in files]
        self.section(
            "5. Files expected together",
            f"The config expects the set {name} ({', '.join(files)}) by 06:00.",
            "Each member gets its own ready event; the set gets one set.complete, with every member,",
            "once all are in.",
        )
        self.check.active = "set"
        data = {p: _csv(random.Random(p), 50, "date,key,row,value") for p in paths}
        for path in paths:
            self.check.expect("set", "ready", path, "a member", {"generation": 1, "checksum.value": sha256(data[path])})
        done = self.check.expect(
            "set",
            "set.complete",
            name,
            "every member in, before the deadline",
            {"set": name, "generation": 1, "late": False, "deadline": f"{self.day:%Y-%m-%dT%H:%M:%S}Z"},
        )
        for path in paths:
            self.say(f"uploading {path}")
            await self.upload(path, data[path])
        if await self.wait(done):
            got = sorted(m["path"] for m in done.event["data"]["members"]) if done.event else []
            if got != sorted(paths):
                self.check.fail("set", f"set.complete lists {got}, expected {sorted(paths)}")

    async def step_set_late(self) -> None:
        name, files = SET_LATE
        paths = [self.day.strftime(f) for f in files]
        self.section(
            "7. A set at risk, then late",
            f"{name} was reported at risk when the demo started ({WARN_MIN} min before its 06:00 deadline)",
            "and incomplete when the clock passed deadline + grace. Its members arrive now.",
        )
        self.check.active = "set_late"
        data = {p: _csv(random.Random(p), 50, "date,key,row,value") for p in paths}
        for path in paths:
            self.check.expect("set_late", "ready", path, "a member", {"generation": 1})
        done = self.check.expect(
            "set_late", "set.complete", name, "complete, after its grace", {"set": name, "generation": 1, "late": True}
        )
        for path in paths:
            self.say(f"uploading {path}")
            await self.upload(path, data[path])
        await self.wait(done)

    async def step_late(self) -> None:
        name = f"sales_{self.day:%Y%m%d}.csv"
        self.section(
            "6. Expected file missing at its deadline, then arriving late",
            f"The config expects sales_%Y%m%d.csv every day by 06:00 UTC (+{GRACE_MIN}m grace): today {name}.",
            "It has not arrived. Rather than wait, the demo fast-forwards the server's clock.",
        )
        self.check.active = "late"
        deadline = self.day.timestamp()
        missing = self.check.expect(
            "late",
            "missing",
            name,
            "not there at its deadline",
            {"expected_path": name, "deadline": f"{self.day:%Y-%m-%dT%H:%M:%S}Z"},
        )
        set_name, set_files = SET_LATE
        self.check.expect(
            "set_late",
            "set.incomplete",
            set_name,
            "its grace passed with members missing",
            {"set": set_name, "missing": [self.day.strftime(f) for f in set_files]},
        )
        late = self.check.expect(
            "late",
            "ready",
            name,
            "arrived after the deadline",
            {"reason": "new", "generation": 1, "late": True, "checksum.value": sha256(self.files.sales)},
        )
        target = deadline + GRACE_MIN * 60 + 1
        jump = target - self.clock()
        self.clock.advance(jump)
        self.running.app.wake_all()
        self.say(
            f"fast-forwarding the demo clock by {_fmt_duration(jump)} to "
            f"{datetime.fromtimestamp(target, UTC):%H:%M:%S} UTC (deadline + grace passed)"
        )
        if await self.wait(missing):
            self.say(f"the producer finally uploads {name}")
            await self.upload(name, self.files.sales)
            await self.wait(late)

    async def step_restart(self) -> None:
        self.section(
            "8. Restart in the middle: nothing lost, nothing repeated",
            "The gRPC server stops; a file arrives while it is down; a new server starts on the same",
            "state file and the client reconnects (Argo retries every 5 s).",
        )
        self.check.active = "restart"
        if await self.until(self.all_delivered, 10.0):
            self.say("every event so far is confirmed delivered (outbox empty)")
        else:
            self.check.fail("restart", "the outbox did not drain before the restart")
        port = self.grpc_port
        self.say("stopping the ftpsource gRPC server")
        await self.running.stop(2.0)
        if self.pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.pump), 5.0)
        await self.disconnect()
        self.closing = False
        exp = self.check.expect(
            "restart",
            "ready",
            "inventory.csv",
            "uploaded while ftpsource was down",
            {"reason": "new", "generation": 1, "checksum.value": sha256(self.files.inventory)},
        )
        self.say("uploading inventory.csv while ftpsource is down")
        await self.upload("inventory.csv", self.files.inventory)
        await self.start_ftpsource(port)
        self.say(f"ftpsource started again on the same state file (port {self.grpc_port})")
        before = {eid for ids in self.stream_ids.values() for eid in ids}
        await self.connect()
        self.say("client reconnected")
        await self.wait(exp)
        if await self.until(self.all_delivered, 10.0):
            new = self.stream_ids[self.stream_no]
            resent = [eid for eid in new if eid in before]
            if resent:
                self.check.fail("restart", f"{len(resent)} event(s) sent again after the restart")
            self.say(f"outbox empty again; this stream carried {len(new)} event(s), {len(resent)} re-sent")
        else:
            self.check.fail("restart", "the outbox did not drain after the restart")

    async def step_staged(self) -> None:
        if self.s3_skip is not None:
            self.line("")
            self.line(f"9. Staged, processed, settled: skipped, moto's S3 server cannot run here ({self.s3_skip})")
            return
        self.section(
            "9. Staged in S3, processed, then archived or quarantined",
            f"A second source watches FTP user {PARTNER}'s drop zone with `stage:`. The read that hashes a",
            f"file also lands its bytes in the bucket {BUCKET} (moto's S3 server, in a process of its own on",
            "loopback); only then is the ready event sent, its data.staged saying where. Then the demo plays",
            "the Workflow: it reads the staged object (not the FTP file), checks its sha256, processes it,",
            "and reports how that ended with `ftpsource settle`, as a Workflow's exit handler does. The",
            "source archives the file that processed and quarantines the one that did not.",
        )
        self.check.active = "staged"
        try:
            if self.s3_task is not None:
                await self.s3_task
        except DemoError as exc:
            self.check.fail("staged", str(exc))
            self.say(f"✗ {exc}")
            return
        config = self.partner_config()
        self.say(f"S3 server up at {self.s3_endpoint} with the bucket {BUCKET}; the second source's config:")
        for text in config.splitlines():
            self.line(f"              {text}")
        self.partner_call, self.partner_pump = self.open_stream(PARTNER_EVENT, config)
        if not await self.until(
            lambda: any(s.id == PARTNER_SOURCE and s.last_ok_poll for s in self.reader.list_sources())
        ):
            self.check.fail("staged", "ftpsource did not list the partner's drop zone within 15s")
            return
        files = partner_files()
        waiting = {
            name: self.check.expect(
                "staged",
                "ready",
                name,
                "staged, then reported",
                {
                    "generation": 1,
                    "checksum.value": sha256(data),
                    "staged.bucket": BUCKET,
                    "staged.sha256": sha256(data),
                    "staged.size": len(data),
                },
            )
            for name, data in files.items()
        }
        for name, data in files.items():
            self.say(f"{PARTNER} uploads {name} ({len(data):,} bytes)")
            await self.upload(name, data, user=PARTNER)
        if not all([await self.wait(exp) for exp in waiting.values()]):
            return
        outcomes: dict[str, tuple[str, str, str]] = {}  # name: (event id, outcome, message)
        try:
            async with self.s3_client() as s3:
                for name, exp in waiting.items():
                    assert exp.event is not None
                    result = await self.run_workflow(s3, name, exp.event, files[name])
                    if result is None:
                        return
                    outcomes[name] = (str(exp.event["id"]), *result)
        except (BotoCoreError, ClientError) as exc:
            self.check.fail("staged", f"cannot read the staged objects: {exc}")
            self.say(f"✗ cannot read the staged objects: {exc}")
            return
        # The Workflows run once Argo has the events; ftpsource records that at the stream's next
        # keepalive. Waiting for it keeps the lifecycle below in the order it has in a cluster.
        if not await self.until(lambda: self.all_delivered(PARTNER_SOURCE), 10.0):
            self.check.fail("staged", "the ready events were not confirmed delivered within 10s")
        self.say("each Workflow's exit handler reports how it ended:")
        for outcome in outcomes.values():
            if not await self.settle(*outcome):
                return
        await self.show_post_actions(outcomes, files)

    async def run_workflow(
        self, s3: Any, name: str, event: Mapping[str, Any], uploaded: bytes
    ) -> tuple[str, str] | None:
        """Read the staged object, check it, process it: (outcome, message), or None if it went wrong."""
        data_field = event.get("data") or {}
        staged, want = data_field.get("staged") or {}, _lookup(data_field, "checksum.value")
        key = str(staged.get("key"))
        self.say(f"Workflow for {name} (event {str(event.get('id'))[:8]}…): reads s3://{BUCKET}/{key}")
        reply = await s3.get_object(Bucket=BUCKET, Key=key)
        async with reply["Body"] as body:
            data = await body.read()
        if sha256(data) != want or data != uploaded:
            self.check.fail("staged", f"{name}: the staged object's bytes are not the ones reported")
            self.say(f"✗ {len(data):,} bytes, sha256 {sha256(data)[:12]}…, not what the event reported")
            return None
        self.say(f"  {len(data):,} bytes, sha256 {sha256(data)[:12]}…: the checksum in the event")
        try:
            rows, total = process_csv(data)
        except ValueError as exc:
            self.say(f"  processing fails: {exc}  → failed")
            return "failed", f"processing failed: {exc}"
        self.say(f"  processed {rows} rows, amounts total {total:,.2f}  → succeeded")
        return "succeeded", f"{rows} rows loaded"

    async def settle(self, event_id: str, outcome: str, message: str) -> bool:
        """Run ``ftpsource settle`` as a Workflow's exit handler does; only the process is saved."""
        argv = ["settle", "--server", f"127.0.0.1:{self.grpc_port}", event_id, outcome, "--message", message]
        self.say(f"$ ftpsource {shlex.join(argv)}")
        code, output = await asyncio.to_thread(self.command, argv)
        for text in output.splitlines():
            self.line(f"              {text}")
        if code != 0:
            self.check.fail("staged", f"ftpsource settle {outcome} exited {code}")
            return False
        return True

    async def show_post_actions(self, outcomes: Mapping[str, tuple[str, str, str]], files: Mapping[str, bytes]) -> None:
        """Wait for the source to act on each settle; prove it on disk; show ``ftpsource state show``."""

        def latest(name: str) -> Any:
            versions = self.reader.versions(PARTNER_SOURCE, name)
            return versions[-1] if versions else None

        def acted() -> bool:
            return all((v := latest(name)) is not None and v.action_state not in (None, "pending") for name in outcomes)

        if not await self.until(acted):
            self.check.fail("staged", "the source did not act on the settles within 15s")
            self.say("✗ the source did not act on the settles")
            return
        for name, (_, outcome, _) in outcomes.items():
            v = latest(name)
            verb, folder = ("archived", "archive/") if outcome == "succeeded" else ("quarantined", "failed/")
            target = self.partner_root / (v.target or "")
            if (
                v.action_state == "done"
                and str(v.target).startswith(folder)
                and target.is_file()
                and target.read_bytes() == files[name]
                and not (self.partner_root / name).exists()
            ):
                self.say(f"{name} {verb}: the FTP server now has {v.target}, and no {name}")
            else:
                problem = f"{name} was not {verb} ({v.action_state}: {v.action_detail or v.target})"
                self.check.fail("staged", problem)
                self.say(f"✗ {problem}")
        for name in outcomes:
            self.say(f"$ ftpsource state show --state {self.state} {PARTNER_SOURCE} {name}")
            self.state_show(name)

    def state_show(self, path: str) -> None:
        """The lifecycle part of ``ftpsource state show`` for a file of the partner's source."""
        code, output = self.command(["state", "show", "--state", str(self.state), PARTNER_SOURCE, path])
        if code != 0:
            self.check.fail("staged", f"state show {path} exited {code}: {output}")
        lifecycle = output[output.find("versions:") :] if "versions:" in output else output
        for line in lifecycle.splitlines():
            self.line(f"              {line}")

    def command(self, argv: Sequence[str]) -> tuple[int, str]:
        """A command of this command line, run in this process (a new one would take seconds to start
        on a busy machine): its exit status and what it printed."""
        from ..cli import build_parser  # not at the top: the command line is built from this module too

        args = build_parser().parse_args(argv)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = int(args.handler(args))
        except FtpsourceError as exc:
            code = 2
            out.write(f"ftpsource {args.command}: {exc}\n")
        return code, out.getvalue().rstrip()

    async def script(self) -> None:
        await self.setup()
        for step in (
            self.step_slow,
            self.step_partial,
            self.step_identical,
            self.step_corrected,
            self.step_set,
            self.step_late,
            self.step_set_late,
            self.step_restart,
            self.step_staged,
        ):
            await step()
        self.check.active = None

    def summary(self) -> bool:
        self.line("")
        self.line("Summary")
        for title, ok, problems in self.check.results():
            self.line(f"  {'✓' if ok else '✗'} {title}")
            for problem in problems:
                self.line(f"      {problem}")
        ok = self.check.ok
        n = len(self.check.received)
        verdict = "all expected, nothing else" if ok else "NOT as expected"
        self.line(f"  {n} events received: {verdict}.  total time {self.elapsed():.1f} s")
        return ok

    def keep_running_help(self) -> None:
        exe = Path(sys.executable).parent / "ftpsource"
        command = str(exe) if exe.exists() else f"{sys.executable} -m ftpsource.cli"
        watch = self.tmp / "watch.yaml"
        watch.write_text(self.source_config(expect=False), encoding="utf-8")
        p, pw = self.ftp_port, self.password
        self.line("")
        self.line("The servers stay up; Ctrl-C stops them and deletes the temporary files.")
        self.line(f"  FTP server   127.0.0.1:{p}, user {USER}, password {pw}  (files in {self.ftp_root})")
        if self.s3_endpoint:
            self.line(f"  FTP user     {PARTNER}, password {self.partner_password}  (files in {self.partner_root})")
            self.line(f"  S3 server    {self.s3_endpoint}  bucket {BUCKET}, access key {S3_ACCESS_KEY}")
            self.line(f"               (secret key in {self.creds / S3_SET / 'secret_key'})")
        self.line(f"  ftpsource    gRPC 127.0.0.1:{self.grpc_port}; this client keeps printing its events below")
        if self.running is not None and self.running.metrics_port:
            self.line(f"  status page  http://127.0.0.1:{self.running.metrics_port}/  (sources, pending files, today's")
            self.line("               expectations and sets, latest events; /status.json for scripts)")
        self.line("Upload a file:")
        self.line(f"  lftp -u {USER},{pw} -p {p} 127.0.0.1 -e 'put file.csv; bye'")
        self.line(f"  curl -T file.csv ftp://{USER}:{pw}@127.0.0.1:{p}/")
        self.line("Or run a source of your own against it (its own state, events as JSON lines):")
        self.line(f"  {command} watch {watch} --credentials-dir {self.creds} --state {self.tmp / 'watch.db'}")
        self.line("")

    async def close(self) -> None:
        self.closing = True
        await self.stop_s3()
        if self.running is not None:
            with contextlib.suppress(Exception):
                await self.running.stop(1.0)
            self.running = None
        with contextlib.suppress(Exception):
            await self.disconnect()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
            self.reader = None
        if self.ftp_server is not None:
            # Let sessions end on their own first: cancelling aioftp's connection tasks trips a
            # Python 3.11 asyncio bug (a done-callback calls ``exception()`` on a cancelled task).
            await self.until(lambda: not self.ftp_server.connections, 3.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ftp_server.close(), 5.0)
            self.ftp_server = None


async def _run(keep_running: bool) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    stop = asyncio.Event()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if demo.free_mode:
            stop.set()
        elif main is not None and not interrupted:
            interrupted = True
            main.cancel()

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.CancelledError):
            return  # a task cancelled during shutdown; nothing went wrong
        print(f"ftpsource demo: {context.get('message')}: {exc!r}", file=sys.stderr, flush=True)

    loop.set_exception_handler(on_loop_error)
    with tempfile.TemporaryDirectory(prefix="ftpsource-demo-") as tmp:
        demo = Demo(Path(tmp), keep_running)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
        try:
            try:
                await asyncio.wait_for(demo.script(), SCRIPT_TIMEOUT_S)
            except TimeoutError:
                demo.check.fail(None, f"the script did not finish within {SCRIPT_TIMEOUT_S:.0f}s")
            ok = demo.summary()
            if keep_running:
                demo.keep_running_help()
                demo.free_mode = True
                await stop.wait()
                demo.line("stopping")
            return 0 if ok else 1
        except asyncio.CancelledError:
            if not interrupted:
                raise
            demo.line("\ninterrupted")
            return 130
        finally:
            await demo.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)


def run_demo(keep_running: bool = False, show_logs: bool = False) -> int:
    """Run the demo; 0 only if every expected event arrived and nothing else did."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        with contextlib.suppress(ValueError):
            sys.stdout.reconfigure(errors="replace")
    with _quiet_logs(show_logs):
        try:
            return asyncio.run(_run(keep_running))
        except DemoError as exc:
            print(f"ftpsource demo: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            return 130


def run(args: argparse.Namespace) -> int:
    return run_demo(keep_running=args.keep_running, show_logs=args.debug)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="embedded FTP server, gRPC server and scripted uploads (under a minute)")
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the servers up afterwards and print how to use them"
    )
    add_common(demo)
    demo.set_defaults(handler=run)
