"""FTP and FTPS (explicit TLS) through aioftp: ``ftp://`` and ``ftps://``.

aioftp drives the control connection (connect, AUTH TLS, login, commands); data connections are
opened here, because aioftp completes the TLS handshake of a data connection before it sends the
transfer command, and servers that only start TLS after the command (vsftpd, proftpd) then hang.

Listing walks the tree with ``CWD`` + ``MLSD``, falling back to ``LIST`` (parsed by ``listparse``) on
servers without MLSD. A directory's listing is parsed line by line as it arrives, giving the event
loop a turn after every chunk, and is refused (with the directory named) past ``MAX_DIR_ENTRIES``
lines, ``MAX_DIR_BYTES`` or a line over ``MAX_LINE_BYTES``. ``LIST`` times are coarse (minute or day),
so exact times come from ``MDTM`` where the server has it, asked only when a file's ``(size, LIST
time)`` changes, ``_MDTM_WINDOW`` commands sent back to back per pooled connection; an unchanged file
gets the same ``Entry`` on every poll. A transfer abandoned part-way leaves the control connection in
an unknown state in aioftp (it may still owe a reply), so that connection is discarded rather than reused.

Every network step runs under ``timeout_s``; failures are translated at this boundary into
``ftpsource.errors`` types, and their messages never contain the password.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import logging
import posixpath
import re
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import aioftp

from ..core.listing import ListEntry, parse_list_line, parse_mdtm, parse_mlsx_line
from ..core.model import Algorithm, Entry, Listing
from ..errors import ActionRefused, FileVanished, PermanentSourceError, SourceError, TransientSourceError
from .base import CHUNK_SIZE, child_path, register, unlistable_dir
from .remote import RemoteAdapter

__all__ = ["FtpAdapter"]

log = logging.getLogger(__name__)

# Idle pooled connections older than this are checked with NOOP before reuse (servers drop idle sessions).
_IDLE_CHECK_S = 10.0
_LIST_READ_SIZE = 64 * 1024
_HASH_NAMES: dict[str, str] = {"sha256": "SHA-256", "md5": "MD5"}
_HEX_LENGTH: dict[str, int] = {"sha256": 64, "md5": 32}

# One directory's listing may hold at most this many lines, of at most MAX_LINE_BYTES each (a real
# line is a name of at most 255 bytes plus its facts), and MAX_DIR_BYTES in all: a server that sends
# an endless or garbage listing is refused with the directory named, before it can fill memory.
MAX_DIR_ENTRIES = 1_000_000
MAX_DIR_BYTES = 256 * 1024 * 1024
MAX_LINE_BYTES = 8 * 1024
# Lines skipped (unparseable, unusable names) that are described one by one, per directory; the rest
# are counted in one warning.
_PROBLEMS_PER_DIR = 20
# MDTM commands sent back to back on one connection before their replies are read.
_MDTM_WINDOW = 32
# Settling the listed files, and freeing what the last listing kept, give the loop back this often.
_SETTLE_SLICE = 4096
_MISSING = object()


class _ListingRefused(Exception):
    """A directory's listing broke a limit (the message says which); nothing it sent is used."""


class _Lines:
    """Splits a listing into lines as its chunks arrive, holding only the unfinished last line."""

    def __init__(self, max_lines: int, max_bytes: int) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.lines = 0
        self.size = 0
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise _ListingRefused(f"the listing is longer than {self.max_bytes:,} bytes")
        lines = (self._tail + chunk if self._tail else chunk).split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_LINE_BYTES or any(len(line) > MAX_LINE_BYTES + 1 for line in lines):
            raise _ListingRefused(f"a line is longer than {MAX_LINE_BYTES:,} bytes: not a directory listing")
        self.lines += len(lines)
        if self.lines > self.max_lines:
            raise _ListingRefused(f"more than {self.max_lines:,} entries")
        return lines

    def end(self) -> list[bytes]:
        tail, self._tail = self._tail, b""
        if not tail:
            return []
        self.lines += 1
        if self.lines > self.max_lines:
            raise _ListingRefused(f"more than {self.max_lines:,} entries")
        return [tail]


@dataclass(slots=True)
class _Walk:
    """One listing in progress: what is found so far, and the per-line parse memo."""

    listing: Listing
    now: datetime
    previous: dict[bytes, _Facts | None]
    parsed: dict[bytes, _Facts | None] = field(default_factory=dict)
    files: list[tuple[str, _Facts]] = field(default_factory=list)
    need_mdtm: list[str] = field(default_factory=list)
    queue: collections.deque[str] = field(default_factory=lambda: collections.deque([""]))


async def _free(*containers: list[Any] | dict[Any, Any]) -> None:
    """Empty big containers a slice at a time: freeing 100,000s of objects at once holds the loop."""
    for container in containers:
        while container:
            if isinstance(container, dict):
                for _ in range(min(_SETTLE_SLICE, len(container))):
                    container.popitem()
            else:
                del container[-_SETTLE_SLICE:]
            await asyncio.sleep(0)


def _line_key(raw: bytes, is_mlsd: bool) -> bytes:
    # A digest, not the line: the memo outlives the listing and must not keep a copy of its text.
    return hashlib.blake2b(raw, digest_size=16, person=b"mlsd" if is_mlsd else b"list").digest()


@dataclass(frozen=True, slots=True)
class _Features:
    """What FEAT announced (RFC 2389): command name -> parameters."""

    raw: dict[str, str]

    @classmethod
    def parse(cls, lines: list[str]) -> _Features:
        raw: dict[str, str] = {}
        for line in lines:
            # Feature lines start with a space; the first and last lines are the 211 text.
            if not line.startswith(" "):
                continue
            name, _, params = line.strip().partition(" ")
            if name and name.lower() != "end":
                raw[name.upper()] = params.strip()
        return cls(raw)

    def has(self, name: str) -> bool:
        return name in self.raw

    @property
    def hash_algorithms(self) -> frozenset[str]:
        if "HASH" not in self.raw:
            return frozenset()
        return frozenset(a.strip().rstrip("*").upper() for a in self.raw["HASH"].split(";") if a.strip())


# What an adapter keeps per listed line and per file between polls is held in plain tuples of plain
# values: the garbage collector stops tracking those, so the full collections that a large listing
# sets off do not walk 100,000s of them (a ``ListEntry`` or a dataclass stays tracked for life).
#: a ``ListEntry``'s fields: (name, kind, size, mtime, resolution_s)
_Facts = tuple[str, str, int | None, float | None, int]
#: the mtime given for a path, with the LIST facts it was derived from: (size, list_mtime, resolution_s, mtime)
_Memo = tuple[int, float, int, float]


class _Connection:
    """One logged-in control connection. ``clean`` is False while a reply or transfer is outstanding."""

    def __init__(self, client: aioftp.Client, host: str, tls: bool) -> None:
        self.client = client
        self.host = host
        self.tls = tls
        self.clean = True
        self.features = _Features({})
        self.idle_since = time.monotonic()
        self._passive = ["EPSV", "PASV"]

    async def cmd(
        self, command: str | None, expected: str | tuple[str, ...], wait: str | tuple[str, ...] = ()
    ) -> tuple[str, list[str]]:
        self.clean = False
        try:
            code, info = await self.client.command(command, expected, wait)
        except aioftp.StatusCodeError:
            self.clean = True  # the whole reply was read; the session is still in step
            raise
        self.clean = True
        return str(code), info

    async def pipeline(self, commands: list[str]) -> list[tuple[str, list[str]]]:
        """Send ``commands`` back to back, then read their replies in order (RFC 959 lets a client
        send before the previous reply; the server answers each in turn)."""
        if any("\r" in c or "\n" in c for c in commands):
            raise ValueError("a command must not contain CR or LF")
        self.clean = False
        await self.client.stream.write("".join(c + "\r\n" for c in commands).encode("utf-8"))
        replies = []
        for _ in commands:
            code, info = await self.client.parse_response()
            replies.append((str(code), info))
        self.clean = True
        return replies

    async def _passive_port(self) -> int:
        while True:
            command = self._passive[0]
            try:
                _, info = await self.cmd(command, "229" if command == "EPSV" else "227")
            except aioftp.StatusCodeError as exc:
                if len(self._passive) > 1 and _code(exc).startswith("50"):
                    self._passive.pop(0)
                    continue
                raise
            if command == "EPSV":
                return aioftp.Client.parse_epsv_response(info[-1])[1]
            # The address in a PASV reply is often wrong behind NAT; the control host is not.
            return aioftp.Client.parse_pasv_response(info[-1])[1]

    async def open_data(self, command: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """Open a passive data connection for ``command``; returns (reader, writer, already_finished)."""
        port = await self._passive_port()
        reader, writer = await asyncio.open_connection(self.host, port)
        try:
            self.clean = False
            await self.client.command(command)
            handshake: asyncio.Future[None] | None = None
            if self.tls:
                ssl_object = self.client.stream.writer.transport.get_extra_info("ssl_object")
                # Reuse the control session: servers such as vsftpd insist on it (require_ssl_reuse).
                context = aioftp.SSLSessionBoundContext(
                    ssl.PROTOCOL_TLS_CLIENT, context=ssl_object.context, session=ssl_object.session
                )
                # Servers differ in whether they start TLS before or after the 150 reply: do both at once.
                handshake = asyncio.ensure_future(writer.start_tls(context, server_hostname=self.host))
            try:
                code, _ = await self.cmd(None, ("1xx", "2xx"))
            except BaseException:
                if handshake is not None:
                    handshake.cancel()
                    await asyncio.gather(handshake, return_exceptions=True)
                raise
            if handshake is not None:
                await handshake
        except BaseException:
            writer.close()
            raise
        done = code.startswith("2")
        self.clean = done
        return reader, writer, done

    def close(self) -> None:
        self.client.close()


class _DirReader:
    """Parses one directory's listing line by line as it arrives; adds what it found to the walk only
    once the whole listing has arrived (a refused listing adds nothing)."""

    def __init__(self, adapter: FtpAdapter, walk: _Walk, rel: str) -> None:
        self._adapter = adapter
        self._walk = walk
        self._rel = rel
        self._files: list[tuple[str, _Facts]] = []
        self._dirs: list[str] = []
        self._need_mdtm: list[str] = []
        self._problems = 0
        self._hidden = 0
        self._overflow = Listing([])

    def take(self, is_mlsd: bool, lines: list[bytes]) -> None:
        walk, rel = self._walk, self._rel
        previous, parsed = walk.previous, walk.parsed
        for raw in lines:
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            key = _line_key(raw, is_mlsd)
            facts = previous.get(key, _MISSING)
            if facts is _MISSING:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self._child(raw, False)  # described as a bad name
                    continue
                try:
                    entry = parse_mlsx_line(line) if is_mlsd else parse_list_line(line, now=walk.now)
                except ValueError as exc:
                    self._warn(f"{rel or '.'}: skipped a line that could not be parsed ({exc})")
                    continue
                facts = None if entry is None else entry[:]
            assert facts is None or type(facts) is tuple
            parsed[key] = facts
            if facts is None:
                continue
            name, kind, size, mtime, _ = facts
            if kind not in ("file", "dir"):
                continue  # links, devices, and MLSD's entries for the directory itself and its parent
            child = self._child(name, kind == "dir")
            if child is None:
                continue
            if kind == "dir":
                if self._adapter.path_filter.descend(child):
                    self._dirs.append(child)
            elif size is not None and mtime is not None:
                self._files.append((child, facts))
                if self._adapter._needs_mdtm(child, facts):
                    self._need_mdtm.append(child)

    def _child(self, name: str | bytes, is_dir: bool) -> str | None:
        target = self._walk.listing if self._problems < _PROBLEMS_PER_DIR else self._overflow
        before = len(target.bad_names)
        child = child_path(target, self._rel, name, is_dir=is_dir)
        if len(target.bad_names) > before:
            self._problems += 1
            if target is self._overflow:
                self._hidden += 1
                target.bad_names.clear()
        return child

    def _warn(self, warning: str) -> None:
        self._problems += 1
        if self._problems <= _PROBLEMS_PER_DIR:
            self._walk.listing.warnings.append(warning)
        else:
            self._hidden += 1

    def commit(self) -> None:
        walk = self._walk
        walk.files.extend(self._files)
        walk.need_mdtm.extend(self._need_mdtm)
        walk.queue.extend(self._dirs)
        if self._hidden:
            walk.listing.warnings.append(
                f"{self._rel or '.'}: skipped {self._hidden:,} more lines that could not be parsed or named "
                "unusable entries"
            )


def _code(exc: aioftp.StatusCodeError) -> str:
    return str(exc.received_codes[-1]) if exc.received_codes else "000"


def _refused(exc: aioftp.StatusCodeError) -> bool:
    """A permanent (5xx) or "file unavailable" (450) reply: the thing asked for is not there for us."""
    code = _code(exc)
    return code.startswith("5") or code == "450"


def _reply(exc: aioftp.StatusCodeError) -> str:
    info = exc.info if isinstance(exc.info, list) else [exc.info]
    text = " ".join(str(i).strip() for i in info if str(i).strip())
    return f"{_code(exc)} {text}".strip()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), 2.0)


@register("ftp", "ftps")
class FtpAdapter(RemoteAdapter):
    """FTP/FTPS adapter. ``timeout_s`` bounds every network step (connect, command, chunk)."""

    scheme = "ftp"

    def _setup(self) -> None:
        credentials = self.credentials
        self._tls = self.url.scheme == "ftps"
        self._user = self.url.username or credentials.username or "anonymous"
        self._password = credentials.password.reveal() if credentials.password is not None else ""
        if not self._password and self._user == "anonymous":
            self._password = "ftpsource@"
        self._idle: list[_Connection] = []
        self._parsed: dict[bytes, _Facts | None] = {}
        self._parsed_day: date | None = None
        self._features: _Features | None = None
        self._mlsd: bool | None = None  # None: not tried yet
        self._list_command = "LIST -a"
        self._mdtm_ok = True
        self._mdtm_window = _MDTM_WINDOW
        self._mdtm_pipelined = True  # False once a server failed to answer MDTMs sent back to back
        self._mdtm_pipelined_ok = False  # True once one has answered them
        self._memo: dict[str, _Memo] = {}
        # The last listing's entries: an unchanged file gets the same object again, so a steady listing
        # allocates nothing the garbage collector has to track (and sets off no full collection).
        self._last: dict[str, Entry] = {}
        #: limits of one directory's listing (see ``MAX_DIR_ENTRIES``)
        self.max_dir_entries = MAX_DIR_ENTRIES
        self.max_dir_bytes = MAX_DIR_BYTES

    # errors ------------------------------------------------------------------------------------------
    def _translate_protocol(self, exc: BaseException, action: str) -> SourceError | None:
        where = self._where()
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentSourceError(
                self._scrub(
                    f"{where}: TLS certificate not trusted ({exc.verify_message}); put the issuing CA in ca.pem "
                    "of the credential set, or set tls_verify: false"
                ),
                kind="tls",
            )
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or str(exc)
            return TransientSourceError(self._scrub(f"{where}: TLS error while {action}: {reason}"), kind="tls")
        if isinstance(exc, aioftp.StatusCodeError):
            code = _code(exc)
            kind = "connect" if code == "421" else "protocol"
            return TransientSourceError(self._scrub(f"{where}: {action}: server replied {_reply(exc)}"), kind=kind)
        if isinstance(exc, UnicodeDecodeError):
            return TransientSourceError(f"{where}: {action}: server reply is not UTF-8", kind="protocol")
        if isinstance(exc, aioftp.AIOFTPException | ValueError):
            return TransientSourceError(self._scrub(f"{where}: {action}: {exc}"), kind="protocol")
        return None

    # connections -------------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        cafile = str(self.credentials.ca_file) if self.credentials.ca_file is not None else None
        context = ssl.create_default_context(cafile=cafile)
        if not self.config.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _connect(self) -> _Connection:
        client = aioftp.Client(encoding="utf-8")
        conn = _Connection(client, self._host, self._tls)
        where = self._where()
        phase = "connecting"
        try:
            async with asyncio.timeout(self.timeout_s):
                await client.connect(self._host, self._port)
                if self._tls:
                    phase = "negotiating TLS"
                    try:
                        await conn.cmd("AUTH TLS", "234")
                    except aioftp.StatusCodeError as exc:
                        raise PermanentSourceError(
                            f"{where}: server does not offer explicit TLS (AUTH TLS: {_reply(exc)})", kind="tls"
                        ) from exc
                    await client.stream.start_tls(self._ssl_context(), server_hostname=self._host)
                    await conn.cmd("PBSZ 0", "200")
                    await conn.cmd("PROT P", "200")
                phase = "logging in"
                try:
                    await client.login(self._user, self._password)
                except aioftp.StatusCodeError as exc:
                    if _code(exc).startswith("4"):
                        raise
                    raise PermanentSourceError(
                        self._scrub(f"{where}: login as {self._user!r} refused: {_reply(exc)}"), kind="auth"
                    ) from exc
                phase = "negotiating features"
                try:
                    _, info = await conn.cmd("FEAT", "2xx")
                    conn.features = _Features.parse(info)
                except aioftp.StatusCodeError:
                    conn.features = _Features({})
                if conn.features.has("UTF8"):
                    with contextlib.suppress(aioftp.StatusCodeError):
                        await conn.cmd("OPTS UTF8 ON", "2xx")
                await conn.cmd("TYPE I", "200")
        except Exception as exc:
            client.close()
            mapped = self._translate(exc, phase)
            if mapped is None or mapped is exc:
                raise
            raise mapped from exc
        except BaseException:
            client.close()
            raise
        self.stats["connect"] += 1
        if self._features is None:
            self._features = conn.features
        return conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        if self._closed:
            raise TransientSourceError(f"{self._where()}: adapter is closed", kind="closed")
        async with self._slots:
            conn: _Connection | None = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if time.monotonic() - candidate.idle_since > _IDLE_CHECK_S:
                    try:
                        async with asyncio.timeout(min(self.timeout_s, 5.0)):
                            await candidate.cmd("NOOP", "2xx")
                    except Exception:
                        candidate.close()
                        continue
                    except BaseException:
                        candidate.close()
                        raise
                conn = candidate
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            except BaseException:
                self._release(conn, reuse=conn.clean)
                raise
            self._release(conn, reuse=True)

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        if reuse and conn.clean and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        try:
            for conn in idle:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await conn.cmd("QUIT", "2xx")
                conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.client.stream.writer.wait_closed(), 2.0)
        finally:
            # Cancelled while saying goodbye to one: the others are closed all the same.
            for conn in idle:
                conn.close()

    # paths -------------------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        root = self.url.root
        return posixpath.join(root, rel) if rel else root

    # listing -----------------------------------------------------------------------------------------
    async def _stream(
        self, conn: _Connection, command: str, lines: _Lines, take: Callable[[list[bytes]], None]
    ) -> None:
        """Run a listing command, handing its lines to ``take`` a chunk at a time as they arrive.

        The loop gets a turn after every chunk. A listing that breaks a limit of ``lines`` raises
        ``_ListingRefused`` with the session still in step when the server confirms the abort.
        """
        async with asyncio.timeout(self.timeout_s):
            reader, writer, done = await conn.open_data(command)
        refused: _ListingRefused | None = None
        try:
            while True:
                async with asyncio.timeout(self.timeout_s):
                    chunk = await reader.read(_LIST_READ_SIZE)
                if not chunk:
                    take(lines.end())
                    break
                self.stats["list_chunks"] += 1
                take(lines.feed(chunk))
                # A fast server keeps the reader's buffer full, so reading would never wait: yield here.
                await asyncio.sleep(0)
        except _ListingRefused as exc:
            refused = exc
        finally:
            await _close_writer(writer)
        if refused is None:
            if not done:
                async with asyncio.timeout(self.timeout_s):
                    await conn.cmd(None, "2xx", "1xx")
            return
        if not done:
            # The server answers the abandoned transfer with 426 or 451 (or 226): once that reply is
            # read the session is in step. If it never comes, ``conn`` stays marked out of step.
            with contextlib.suppress(TimeoutError, OSError, aioftp.AIOFTPException, ValueError):
                async with asyncio.timeout(min(self.timeout_s, 5.0)):
                    await conn.cmd(None, "2xx", "1xx")
        raise refused

    async def _list_dir(self, conn: _Connection, take: Callable[[bool, list[bytes]], None]) -> None:
        """List the current directory, handing its lines to ``take(is_mlsd, lines)`` as they arrive."""
        if self._mlsd is not False:
            lines = self._lines()
            try:
                await self._stream(conn, "MLSD", lines, functools.partial(take, True))
            except aioftp.StatusCodeError as exc:
                if self._mlsd is None and _code(exc) in ("500", "502") and not lines.size:
                    log.debug("%s: no MLSD (%s); listing with LIST", self._where(), _reply(exc))
                    self._mlsd = False
                else:
                    raise
            else:
                self._mlsd = True
                return
        try:
            await self._stream(conn, self._list_command, self._lines(), functools.partial(take, False))
            return
        except aioftp.StatusCodeError as exc:
            # "LIST -a" shows dot files (a marker may be one); a server that takes "-a" for a path
            # refuses it, and then plain LIST has to do.
            if self._list_command == "LIST" or not _code(exc).startswith("5"):
                raise
        await self._stream(conn, "LIST", self._lines(), functools.partial(take, False))
        self._list_command = "LIST"

    def _lines(self) -> _Lines:
        return _Lines(self.max_dir_entries, self.max_dir_bytes)

    async def _walk(self, conn: _Connection, walk: _Walk) -> None:
        """List directories from ``walk.queue`` on ``conn`` until none is left or ``conn`` is out of step."""
        where = self._where()
        while walk.queue and conn.clean:
            rel = walk.queue.popleft()
            entered = False
            reader = _DirReader(self, walk, rel)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await conn.cmd(f"CWD {self._abs(rel)}", "2xx")
                entered = True
                await self._list_dir(conn, reader.take)
            except aioftp.StatusCodeError as exc:
                if not _refused(exc):
                    raise
                root_error: SourceError
                if entered:
                    # The root exists but its listing was refused: retry later, never read it as empty.
                    root_error = TransientSourceError(
                        f"{where}: listing the root directory failed: {_reply(exc)}", kind="list"
                    )
                else:
                    root_error = PermanentSourceError(
                        f"{where}: root directory {self.url.root!r} cannot be entered: {_reply(exc)}", kind="root"
                    )
                unlistable_dir(walk.listing, rel, _reply(exc), root_error)
                continue
            except _ListingRefused as exc:
                root_error = TransientSourceError(f"{where}: cannot list the root directory: {exc}", kind="list")
                unlistable_dir(walk.listing, rel, str(exc), root_error)
                continue
            reader.commit()

    def _settle(self, path: str, facts: _Facts, exact: float | None, into: dict[str, _Memo] | None = None) -> Entry:
        """The mtime to report for a listed file, stable while its LIST facts stay the same; what it
        remembers goes ``into`` the next listing's memo (by default, the current one)."""
        _, _, size, list_mtime, resolution_s = facts
        assert size is not None and list_mtime is not None
        if resolution_s <= 1:
            return Entry(path, size, list_mtime)
        memo = self._memo.get(path)
        if exact is not None:
            mtime = exact
        elif memo is not None and memo[:3] == (size, list_mtime, resolution_s):
            mtime = memo[3]
        elif (
            memo is not None
            and memo[0] == size
            and resolution_s > memo[2]
            and memo[1] - memo[1] % resolution_s == list_mtime
        ):
            # ``ls`` switched to the coarser year form (file older than six months): same file.
            mtime = memo[3]
        else:
            mtime = list_mtime
        remembered = (size, list_mtime, resolution_s, mtime)
        (self._memo if into is None else into)[path] = memo if memo == remembered else remembered
        return Entry(path, size, mtime)

    def _needs_mdtm(self, path: str, facts: _Facts) -> bool:
        _, _, size, list_mtime, resolution_s = facts
        if resolution_s <= 1 or not self._mdtm_ok:
            return False
        features = self._features
        if features is not None and not features.has("MDTM"):
            return False
        memo = self._memo.get(path)
        return memo is None or memo[:3] != (size, list_mtime, resolution_s)

    async def _mdtm(self, conn: _Connection, path: str) -> float | None:
        """The exact mtime of ``path``; None when the server cannot tell (vanished, unsupported)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                _, info = await conn.cmd(f"MDTM {self._abs(path)}", "213")
        except aioftp.StatusCodeError as exc:
            if _code(exc) in ("500", "502", "504"):
                self._mdtm_ok = False
            return None
        self.stats["mdtm"] += 1
        try:
            return parse_mdtm(info[-1])
        except ValueError:
            return None

    async def _mdtm_batch(self, conn: _Connection, paths: list[str], results: dict[str, float | None]) -> None:
        """Exact mtimes of ``paths`` into ``results``: their MDTMs sent back to back, the replies read after."""
        commands = [f"MDTM {self._abs(path)}" for path in paths]
        async with asyncio.timeout(self.timeout_s):
            replies = await conn.pipeline(commands)
        self.stats["mdtm_round_trips"] += 1
        for path, (code, info) in zip(paths, replies, strict=True):
            mtime: float | None = None
            if code == "213":
                self.stats["mdtm"] += 1
                with contextlib.suppress(ValueError):
                    mtime = parse_mdtm(info[-1])
            elif code in ("500", "502", "504"):
                self._mdtm_ok = False
            results[path] = mtime

    async def _exact_mtimes(self, paths: list[str]) -> dict[str, float | None]:
        """Exact mtimes of ``paths`` over up to ``max_connections`` pooled connections, each sending
        ``_MDTM_WINDOW`` MDTMs back to back; a server that does not answer that goes one at a time."""
        results: dict[str, float | None] = {}
        pending = collections.deque(paths)

        async def one_at_a_time(conn: _Connection, batch: list[str]) -> None:
            for path in batch:
                results[path] = await self._mdtm(conn, path)
                self.stats["mdtm_round_trips"] += 1

        async def worker() -> None:
            while pending and self._mdtm_ok:
                async with self._connection() as conn:
                    while pending and self._mdtm_ok and conn.clean:
                        batch = [pending.popleft() for _ in range(min(self._mdtm_window, len(pending)))]
                        if len(batch) == 1 or not self._mdtm_pipelined:
                            await one_at_a_time(conn, batch)
                            continue
                        try:
                            await self._mdtm_batch(conn, batch, results)
                        except (TimeoutError, OSError, aioftp.AIOFTPException, ValueError):
                            if self._mdtm_pipelined_ok:
                                raise
                            # Never answered back-to-back commands (some servers drop what follows the
                            # first): this connection is out of step; go one at a time from now on.
                            log.info("%s: MDTMs sent back to back went unanswered; asking one at a time", self._where())
                            self._mdtm_pipelined = False
                            conn.clean = False
                            pending.extendleft(reversed(batch))
                        else:
                            self._mdtm_pipelined_ok = True
                        await asyncio.sleep(0)

        workers = max(1, min(self.config.max_connections, (len(paths) + 19) // 20))
        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return results

    async def list(self) -> Listing:
        now = datetime.now(UTC)
        # Parsing LIST lines is most of a steady listing's cost, and an unchanged file gives the same
        # line every time: reuse last listing's parse per line. LIST omits the year of recent files,
        # which is inferred from today, so the memo lives for one UTC day at most.
        kept = self._parsed
        walk = _Walk(Listing([]), now, kept if self._parsed_day == now.date() else {})
        with self._errors("listing"):
            while walk.queue:
                # A connection left out of step by a refused listing is dropped; the walk goes on on another.
                async with self._connection() as conn:
                    await self._walk(conn, walk)
            self._parsed, self._parsed_day = walk.parsed, now.date()
            exact = await self._exact_mtimes(walk.need_mdtm) if walk.need_mdtm else {}
        memo: dict[str, _Memo] = {}
        last: dict[str, Entry] = {}
        previous = self._last
        entries: list[Entry] = []
        for start in range(0, len(walk.files), _SETTLE_SLICE):
            for path, facts in walk.files[start : start + _SETTLE_SLICE]:
                before = previous.get(path)
                entry = self._settle(path if before is None else before.path, facts, exact.get(path), memo)
                if before is not None and before.size == entry.size and before.mtime == entry.mtime:
                    entry = before
                last[entry.path] = entry
                entries.append(entry)
            await asyncio.sleep(0)
        old = (kept, self._memo, self._last)
        self._memo, self._last = memo, last  # files no longer listed are forgotten
        walk.listing.entries = entries
        await _free(walk.files, walk.need_mdtm, exact, *old)
        return walk.listing

    async def stat(self, path: str) -> Entry | None:
        with self._errors(f"checking {path!r}"):
            async with self._connection() as conn:
                features = conn.features
                absolute = self._abs(path)
                if features.has("MLST"):
                    info = await self._ask(conn, f"MLST {absolute}", "2xx")
                    if info is None:
                        return None
                    facts = [line for line in info[1:] if line.startswith(" ") and "=" in line]
                    if not facts:
                        return None
                    entry = parse_mlsx_line(facts[0])
                    if entry.kind != "file" or entry.size is None or entry.mtime is None:
                        return None
                    return Entry(path, entry.size, entry.mtime)
                if self._mdtm_ok and features.has("MDTM") and features.has("SIZE"):
                    info = await self._ask(conn, f"SIZE {absolute}", "213")
                    if info is None:
                        return None
                    size = int(info[-1].strip())
                    mtime = await self._mdtm(conn, path)
                    if mtime is not None:
                        return Entry(path, size, mtime)
                    if self._mdtm_ok:
                        return None  # vanished between SIZE and MDTM
                return await self._stat_by_listing(conn, path)

    async def _ask(self, conn: _Connection, command: str, expected: str) -> Sequence[str] | None:
        """A command's reply lines, or None when the server says the thing is not there for us."""
        try:
            async with asyncio.timeout(self.timeout_s):
                _, info = await conn.cmd(command, expected)
        except aioftp.StatusCodeError as exc:
            if _refused(exc):
                return None
            raise
        return info

    async def _stat_by_listing(self, conn: _Connection, path: str) -> Entry | None:
        parent, name = posixpath.split(path)
        now = datetime.now(UTC)
        found: list[ListEntry] = []

        def take(is_mlsd: bool, lines: list[bytes]) -> None:
            for raw in lines:
                try:
                    line = raw.rstrip(b"\r").decode("utf-8")
                    entry = parse_mlsx_line(line) if is_mlsd else parse_list_line(line, now=now)
                except ValueError:  # includes UnicodeDecodeError
                    continue
                if entry is not None and entry.name == name:
                    found.append(entry)

        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.cmd(f"CWD {self._abs(parent)}", "2xx")
            await self._list_dir(conn, take)
        except aioftp.StatusCodeError as exc:
            if _refused(exc):
                return None
            raise
        except _ListingRefused as exc:
            raise TransientSourceError(
                f"{self._where()}: cannot list directory {parent or '.'!r}: {exc}", kind="list"
            ) from exc
        if not found:
            return None
        entry = found[0]
        if entry.kind != "file" or entry.size is None or entry.mtime is None:
            return None
        return self._settle(path, entry, None)

    # content -----------------------------------------------------------------------------------------
    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        absolute = self._abs(path)
        with self._errors(f"downloading {path!r}"):
            async with self._connection() as conn:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        reader, writer, done = await conn.open_data(f"RETR {absolute}")
                except aioftp.StatusCodeError as exc:
                    raise FileVanished(f"{path}: cannot be downloaded: {_reply(exc)}") from exc
                complete = False
                try:
                    while True:
                        try:
                            async with asyncio.timeout(self.timeout_s):
                                chunk = await reader.read(CHUNK_SIZE)
                        except (TimeoutError, OSError, ssl.SSLError) as exc:
                            raise FileVanished(f"{path}: download failed part-way ({type(exc).__name__})") from exc
                        if not chunk:
                            break
                        yield chunk
                    await _close_writer(writer)
                    if not done:
                        try:
                            async with asyncio.timeout(self.timeout_s):
                                await conn.cmd(None, "2xx", "1xx")
                        except aioftp.StatusCodeError as exc:
                            raise FileVanished(f"{path}: download failed: {_reply(exc)}") from exc
                        except (TimeoutError, OSError) as exc:
                            raise FileVanished(f"{path}: download not confirmed ({type(exc).__name__})") from exc
                    complete = True
                finally:
                    if not complete:
                        # Abandoned or failed mid-transfer: this control connection is out of step.
                        conn.clean = False
                        writer.close()

    # settling ----------------------------------------------------------------------------------------
    async def makedirs(self, directory: str) -> None:
        with self._errors(f"creating directory {directory!r}"):
            async with self._connection() as conn:
                current = ""
                for part in directory.split("/"):
                    current = posixpath.join(current, part)
                    try:
                        async with asyncio.timeout(self.timeout_s):
                            await conn.cmd(f"MKD {self._abs(current)}", "2xx")
                    except aioftp.StatusCodeError as exc:
                        # Servers answer 550 for "exists" and for "not allowed" alike; a rename into a
                        # directory that could not be made is refused next, with the server's reason.
                        if not _refused(exc):
                            raise

    async def rename(self, path: str, target: str) -> None:
        # RNTO replaces an existing file on most servers: look first.
        if await self.stat(target) is not None:
            raise ActionRefused(f"cannot move {path!r} to {target!r}: the target exists")
        with self._errors(f"moving {path!r}"):
            async with self._connection() as conn:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await conn.cmd(f"RNFR {self._abs(path)}", "350")
                        await conn.cmd(f"RNTO {self._abs(target)}", "2xx")
                except aioftp.StatusCodeError as exc:
                    if _refused(exc):
                        raise ActionRefused(self._scrub(f"cannot move {path!r} to {target!r}: {_reply(exc)}")) from exc
                    raise

    async def remove(self, path: str) -> None:
        with self._errors(f"deleting {path!r}"):
            async with self._connection() as conn:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await conn.cmd(f"DELE {self._abs(path)}", "2xx")
                except aioftp.StatusCodeError as exc:
                    if _refused(exc):
                        raise ActionRefused(self._scrub(f"cannot delete {path!r}: {_reply(exc)}")) from exc
                    raise

    async def server_digest(self, path: str, algorithm: Algorithm) -> str | None:
        features = self._features
        if features is None:
            with self._errors("connecting"):
                async with self._connection() as conn:
                    features = conn.features
        name = _HASH_NAMES[algorithm]
        absolute = self._abs(path)
        if name in features.hash_algorithms:
            commands = [f"OPTS HASH {name}", f"HASH {absolute}"]
        elif features.has("X" + name.replace("-", "")) and not re.search(r"\s", absolute):
            # XSHA256/XMD5 split their argument on spaces (file, start, end).
            commands = [f"X{name.replace('-', '')} {absolute}"]
        else:
            return None
        with self._errors(f"hashing {path!r} on the server"):
            async with self._connection() as conn:
                try:
                    async with asyncio.timeout(self.hash_timeout_s):
                        for command in commands[:-1]:
                            await conn.cmd(command, "2xx")
                        _, info = await conn.cmd(commands[-1], "2xx")
                except aioftp.StatusCodeError as exc:
                    log.debug("%s: server hash unavailable for %s: %s", self._where(), path, _reply(exc))
                    return None
                except TimeoutError:
                    conn.close()
                    conn.clean = False
                    log.info("%s: server hash of %s timed out; downloading instead", self._where(), path)
                    return None
        match = re.search(rf"\b([0-9a-fA-F]{{{_HEX_LENGTH[algorithm]}}})\b", info[-1])
        if match is None:
            return None
        self.stats["server_hash"] += 1
        return match.group(1).lower()
