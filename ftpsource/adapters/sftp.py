"""SFTP through asyncssh: ``sftp://``.

One SSH connection per adapter carries up to ``max_connections`` concurrent SFTP operations. The
server's host key must be trusted before any password or key is offered: it is checked against the
credential set's ``known_hosts`` or the pinned ``host_key`` fingerprint; with neither, the adapter
refuses to connect (naming the fingerprint it saw) unless ``insecure_skip_host_key_check`` is set.

Listings are recursive ``READDIR`` walks that keep regular files (and, like the local adapter,
symlinks to regular files; linked directories are not followed), with the integer-second mtime SFTPv3
gives, which is stable from poll to poll. Every network step runs
under ``timeout_s``; failures are translated into ``ftpsource.errors`` types without secrets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import posixpath
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import asyncssh
from asyncssh.constants import FILEXFER_TYPE_DIRECTORY, FILEXFER_TYPE_REGULAR, FILEXFER_TYPE_SYMLINK
from asyncssh.encryption import get_default_encryption_algs

from ..core.model import Entry, Listing
from ..errors import ActionRefused, FileVanished, PermanentSourceError, SourceError, TransientSourceError
from .base import CHUNK_SIZE, child_path, register, unlistable_dir
from .remote import RemoteAdapter

__all__ = ["SftpAdapter"]

log = logging.getLogger(__name__)

_GONE = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)
#: Pieces of a download requested ahead of the one being hashed (each is several SFTP requests).
READS_IN_FLIGHT = 4
#: asyncssh's ciphers, AES-GCM first: with AES instructions (on any server CPU of the last decade) it
#: costs one OpenSSL call per packet, where ChaCha20-Poly1305, asyncssh's first choice, costs several.
#: OpenSSH offers both; the order only decides which of the shared ones is used.
_ENCRYPTION = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    *(alg.decode() for alg in get_default_encryption_algs() if b"-gcm@" not in alg),
)


class _HostKeyCheck(asyncssh.SSHClient):
    """Checks the server key against the pinned fingerprint and remembers what the server presented."""

    def __init__(self, pinned: str | None) -> None:
        self.pinned = pinned
        self.seen: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        # Called only for keys that known_hosts (if any) did not already trust.
        self.seen = key.get_fingerprint("sha256")
        if self.pinned is None:
            return False
        algorithm = "md5" if self.pinned.upper().startswith("MD5:") else "sha256"
        return _same_fingerprint(key.get_fingerprint(algorithm), self.pinned)


def _same_fingerprint(actual: str, pinned: str) -> bool:
    prefix, _, value = pinned.partition(":")
    actual_prefix, _, actual_value = actual.partition(":")
    if prefix.upper() != actual_prefix.upper():
        return False
    if prefix.upper() == "MD5":
        return value.lower() == actual_value.lower()
    return value.rstrip("=") == actual_value.rstrip("=")


def _no_known_hosts(
    host: str, addr: str, port: int
) -> tuple[Sequence[asyncssh.SSHKey], Sequence[asyncssh.SSHKey], Sequence[asyncssh.SSHKey]]:
    # Trust nothing up front, so every key goes through _HostKeyCheck (never ~/.ssh/known_hosts).
    return [], [], []


@register("sftp")
class SftpAdapter(RemoteAdapter):
    """SFTP adapter. ``timeout_s`` bounds every network step (connect, each request, each chunk)."""

    scheme = "sftp"

    def _setup(self) -> None:
        self._user = self.url.username or self.credentials.username
        self._connect_lock = asyncio.Lock()
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None

    # errors ------------------------------------------------------------------------------------------
    def _translate_protocol(self, exc: BaseException, action: str) -> SourceError | None:
        where = self._where()
        if isinstance(exc, asyncssh.PermissionDenied):
            return PermanentSourceError(
                f"{where}: login as {self._user!r} refused ({self._auth_methods()})", kind="auth"
            )
        if isinstance(exc, asyncssh.ConnectionLost | asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
            return TransientSourceError(f"{where}: connection lost while {action}", kind="connect")
        if isinstance(exc, asyncssh.DisconnectError):
            message = f"{where}: disconnected while {action}: {exc.reason}"
            return TransientSourceError(self._scrub(message), kind="connect")
        if isinstance(exc, asyncssh.ChannelOpenError):
            return TransientSourceError(self._scrub(f"{where}: {action}: {exc.reason}"), kind="connect")
        if isinstance(exc, asyncssh.SFTPError):
            return TransientSourceError(self._scrub(f"{where}: {action}: {exc.reason}"), kind="protocol")
        return None

    def _on_error(self, mapped: SourceError, exc: BaseException) -> None:
        if mapped.kind == "connect" or isinstance(exc, TimeoutError):
            self._drop_connection()

    def _auth_methods(self) -> str:
        methods = []
        if self.credentials.password is not None:
            methods.append("password")
        if self.credentials.private_key is not None:
            methods.append("private key")
        return "tried " + " and ".join(methods) if methods else "no password or private key in the credential set"

    # connection --------------------------------------------------------------------------------------
    def _client_keys(self) -> list[asyncssh.SSHKey]:
        if self.credentials.private_key is None:
            return []
        text = self.credentials.private_key.reveal()
        try:
            return [asyncssh.import_private_key(text)]
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            passphrase = self.credentials.password.reveal() if self.credentials.password is not None else None
            if passphrase is not None:
                # An encrypted key: the credential set's password is its passphrase.
                with contextlib.suppress(asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
                    return [asyncssh.import_private_key(text, passphrase)]
            raise PermanentSourceError(
                f"{self._where()}: the private key of the credential set cannot be loaded ({type(exc).__name__})",
                kind="auth",
            ) from None

    def _known_hosts(self) -> str | object | None:
        if self.config.insecure_skip_host_key_check:
            return None
        if self.credentials.known_hosts is not None:
            return str(self.credentials.known_hosts)
        return _no_known_hosts

    async def _connect(self) -> asyncssh.SFTPClient:
        where = self._where()
        if self._user is None:
            raise PermanentSourceError(
                f"{where}: no username; put it in the URL (sftp://user@host/dir) or in the credential set",
                kind="auth",
            )
        if (
            not self.config.insecure_skip_host_key_check
            and self.credentials.known_hosts is None
            and self.config.host_key is None
        ):
            seen = await self._probe_host_key()
            hint = f"; the server presented {seen}" if seen else ""
            raise PermanentSourceError(
                f"{where}: refusing to connect without a way to verify the server's host key{hint}. Add a "
                "known_hosts file to the credential set, pin the key with host_key: 'SHA256:...' (from "
                f"ssh-keyscan -p {self._port} {self._host} | ssh-keygen -lf -), or set "
                "insecure_skip_host_key_check: true",
                kind="hostkey",
            )
        checker = _HostKeyCheck(self.config.host_key)
        password = self.credentials.password.reveal() if self.credentials.password is not None else None
        conn: asyncssh.SSHClientConnection | None = None
        try:
            with self._errors("connecting"):
                client_keys = self._client_keys()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        conn = await asyncssh.connect(
                            self._host,
                            self._port,
                            username=self._user,
                            password=password,
                            client_keys=client_keys,
                            known_hosts=self._known_hosts(),
                            client_factory=lambda: checker,
                            agent_path=None,
                            config=None,
                            gss_auth=False,
                            gss_kex=False,
                            preferred_auth="publickey,keyboard-interactive,password",
                            keepalive_interval=max(self.timeout_s, 15.0),
                            keepalive_count_max=3,
                            encryption_algs=_ENCRYPTION,
                        )
                        sftp = await conn.start_sftp_client()
                except asyncssh.HostKeyNotVerifiable as exc:
                    raise PermanentSourceError(self._host_key_message(checker.seen), kind="hostkey") from exc
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        self.stats["connect"] += 1
        self._conn, self._sftp = conn, sftp
        return sftp

    def _host_key_message(self, seen: str | None) -> str:
        trusted = []
        if self.credentials.known_hosts is not None:
            trusted.append("the credential set's known_hosts")
        if self.config.host_key is not None:
            trusted.append(f"the pinned host_key {self.config.host_key}")
        if len(trusted) == 1:
            match = f"it does not match {trusted[0]}"
        else:
            match = f"it matches neither {' nor '.join(trusted)}"
        return (
            f"{self._where()}: host key {seen or '(unknown)'} of {self._host} is not trusted: {match}. "
            "If the server's key really changed, update the trusted key"
        )

    async def _probe_host_key(self) -> str | None:
        """The server's host key fingerprint, learned without authenticating."""
        checker = _HostKeyCheck(None)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout_s):
                conn = await asyncssh.connect(
                    self._host,
                    self._port,
                    username=self._user,
                    known_hosts=_no_known_hosts,
                    client_factory=lambda: checker,
                    client_keys=[],
                    password=None,
                    agent_path=None,
                    config=None,
                    gss_auth=False,
                    gss_kex=False,
                )
                conn.abort()  # pragma: no cover - the key check rejects every key
        return checker.seen

    async def _client(self) -> asyncssh.SFTPClient:
        if self._closed:
            raise TransientSourceError(f"{self._where()}: adapter is closed", kind="closed")
        async with self._connect_lock:
            if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
                return self._sftp
            self._drop_connection()
            return await self._connect()

    def _drop_connection(self) -> None:
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.abort()

    @contextlib.asynccontextmanager
    async def _session(self, action: str) -> AsyncIterator[asyncssh.SFTPClient]:
        async with self._slots:
            sftp = await self._client()
            with self._errors(action):
                yield sftp

    async def close(self) -> None:
        self._closed = True
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2.0)

    # paths -------------------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        root = self.url.root
        return posixpath.join(root, rel) if rel else root

    # listing -----------------------------------------------------------------------------------------
    async def _read_dir(self, sftp: asyncssh.SFTPClient, path: str) -> list[asyncssh.SFTPName]:
        names: list[asyncssh.SFTPName] = []
        iterator = sftp.scandir(path.encode("utf-8")).__aiter__()
        try:
            while True:
                async with asyncio.timeout(self.timeout_s):
                    try:
                        names.append(await iterator.__anext__())
                    except StopAsyncIteration:
                        return names
        finally:
            # Closes the directory handle; bounded, since the connection may be the thing that failed.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(self.timeout_s, 5.0)):
                    await iterator.aclose()  # type: ignore[attr-defined]

    def _root_unlistable(self, exc: asyncssh.SFTPError) -> PermanentSourceError:
        return PermanentSourceError(
            f"{self._where()}: root directory {self.url.root!r} cannot be listed: {exc.reason}", kind="root"
        )

    async def list(self) -> Listing:
        listing = Listing([])
        where = self._where()
        async with self._session("listing") as sftp:
            root = self.url.root
            try:
                async with asyncio.timeout(self.timeout_s):
                    attrs = await sftp.stat(root)
            except _GONE as exc:
                raise self._root_unlistable(exc) from exc
            if attrs.type != FILEXFER_TYPE_DIRECTORY:
                raise PermanentSourceError(f"{where}: root {root!r} is not a directory", kind="root")
            queue: collections.deque[str] = collections.deque([""])
            while queue:
                rel = queue.popleft()
                try:
                    names = await self._read_dir(sftp, self._abs(rel))
                except _GONE as exc:
                    unlistable_dir(listing, rel, str(exc.reason), self._root_unlistable(exc))
                    continue
                for item in names:
                    kind = item.attrs.type
                    # Servers list "." and ".." as directories; a regular file of that name is hostile.
                    child = child_path(listing, rel, item.filename, is_dir=kind != FILEXFER_TYPE_REGULAR)
                    if child is None:
                        continue
                    if kind == FILEXFER_TYPE_DIRECTORY:
                        if self.path_filter.descend(child):
                            queue.append(child)
                        continue
                    attrs = item.attrs
                    if kind == FILEXFER_TYPE_SYMLINK:
                        # Like the local adapter: a link to a regular file counts as that file.
                        try:
                            async with asyncio.timeout(self.timeout_s):
                                attrs = await sftp.stat(self._abs(child))
                        except (*_GONE, asyncssh.SFTPFailure):
                            continue  # dangling link
                        if attrs.type != FILEXFER_TYPE_REGULAR:
                            continue  # links to directories are not followed
                    if attrs.type != FILEXFER_TYPE_REGULAR:
                        log.debug("%s: skipping %r (not a regular file)", where, child)
                        continue
                    if attrs.size is None or attrs.mtime is None:
                        listing.warnings.append(f"skipped {child!r}: the server gave no size or mtime")
                        continue
                    listing.entries.append(Entry(child, attrs.size, float(attrs.mtime)))
        for message in listing.warnings:
            log.warning("%s: %s", where, message)
        return listing

    async def stat(self, path: str) -> Entry | None:
        async with self._session(f"checking {path!r}") as sftp:
            try:
                async with asyncio.timeout(self.timeout_s):
                    attrs = await sftp.stat(self._abs(path))
            except (*_GONE, asyncssh.SFTPFailure):
                return None
            if attrs.type != FILEXFER_TYPE_REGULAR or attrs.size is None or attrs.mtime is None:
                return None
            return Entry(path, attrs.size, float(attrs.mtime))

    # settling ----------------------------------------------------------------------------------------
    async def makedirs(self, directory: str) -> None:
        async with self._session(f"creating directory {directory!r}") as sftp:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await sftp.makedirs(self._abs(directory), exist_ok=True)
            except (*_GONE, asyncssh.SFTPFailure) as exc:
                raise ActionRefused(f"cannot create directory {directory!r}: {exc.reason}") from exc

    async def rename(self, path: str, target: str) -> None:
        # SFTP v3 servers refuse to replace a file, but not every server is v3-strict: look first.
        if await self.stat(target) is not None:
            raise ActionRefused(f"cannot move {path!r} to {target!r}: the target exists")
        async with self._session(f"moving {path!r}") as sftp:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await sftp.rename(self._abs(path), self._abs(target))
            except asyncssh.SFTPNoSuchFile as exc:
                raise FileVanished(f"{path}: disappeared before it could be moved") from exc
            except (asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure) as exc:
                raise ActionRefused(f"cannot move {path!r} to {target!r}: {exc.reason}") from exc

    async def remove(self, path: str) -> None:
        async with self._session(f"deleting {path!r}") as sftp:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await sftp.remove(self._abs(path))
            except asyncssh.SFTPNoSuchFile as exc:
                raise FileVanished(f"{path}: disappeared before it could be deleted") from exc
            except (asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure) as exc:
                raise ActionRefused(f"cannot delete {path!r}: {exc.reason}") from exc

    # content -----------------------------------------------------------------------------------------
    async def read(self, path: str) -> AsyncGenerator[bytes, None]:
        """The file in ``CHUNK_SIZE`` pieces, with ``READS_IN_FLIGHT`` of them requested ahead.

        One read at a time would leave the link idle for a round trip (and the server idle while we
        hash) after every piece; with several outstanding, as ``sftp``'s and rclone's transfers keep
        them, the download runs at the speed of the link or of SHA-256, whichever is slower.
        asyncssh splits each piece into requests the server accepts and only returns a short piece at
        the end of the file.
        """
        async with self._session(f"downloading {path!r}") as sftp:
            try:
                async with asyncio.timeout(self.timeout_s):
                    handle = await sftp.open(self._abs(path), "rb")
            except (*_GONE, asyncssh.SFTPFailure) as exc:
                raise FileVanished(f"{path}: cannot be opened: {exc.reason}") from exc
            ahead: collections.deque[asyncio.Future[bytes]] = collections.deque()
            offset = 0
            in_flight = 1  # until the first piece comes back full: a small file costs one request
            try:
                while True:
                    while len(ahead) < in_flight:
                        ahead.append(asyncio.ensure_future(handle.read(CHUNK_SIZE, offset)))
                        offset += CHUNK_SIZE
                    in_flight = READS_IN_FLIGHT
                    try:
                        async with asyncio.timeout(self.timeout_s):
                            chunk = await ahead.popleft()
                    except asyncssh.SFTPError as exc:
                        raise FileVanished(f"{path}: download failed part-way: {exc.reason}") from exc
                    except (TimeoutError, OSError, asyncssh.DisconnectError) as exc:
                        self._drop_connection()
                        raise FileVanished(f"{path}: download failed part-way ({type(exc).__name__})") from exc
                    if chunk:
                        yield chunk
                    if len(chunk) < CHUNK_SIZE:
                        return
            finally:
                if ahead:
                    # Let reads past the end finish rather than cancel them: asyncssh would leave the
                    # sub-requests of a cancelled read behind with an unretrieved error.
                    finished, late = await asyncio.wait(ahead, timeout=min(self.timeout_s, 5.0))
                    for pending in late:
                        pending.cancel()
                    for done in finished:
                        if not done.cancelled():
                            done.exception()  # retrieved: errors past the end mean nothing
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(min(self.timeout_s, 5.0)):
                        await handle.close()
