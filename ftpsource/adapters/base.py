"""The one small async interface every protocol adapter implements, and the scheme registry.

An adapter lists a tree completely or raises; it never returns a partial listing, so a cut-off
listing can never be read as deletions. Third-party errors are translated here, at the boundary,
into ``ftpsource.errors`` types.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal, Protocol, Self

from ..config import SourceConfig
from ..core.detect import VerifyRequest
from ..core.formats import verifier_for
from ..core.listing import name_problem, quote_name
from ..core.model import Algorithm, Digest, Entry, Listing, Verifier
from ..core.paths import PathFilter
from ..core.verify import build_verifier
from ..credentials import Credentials
from ..errors import ActionRefused, FileVanished, SourceError

__all__ = [
    "CHUNK_SIZE",
    "Adapter",
    "AdapterFactory",
    "Sink",
    "Verification",
    "adapter_factory",
    "child_path",
    "content_verifier",
    "register",
    "unlistable_dir",
    "verify_version",
]

CHUNK_SIZE = 1024 * 1024
# Jobs are single chunks (see ``Adapter.digest``), so a busy pool delays a chunk by milliseconds only.
_HASH_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ftpsource-hash")


class Adapter(abc.ABC):
    """A protocol adapter. Use as ``async with adapter_for(config, creds, filter) as src: ...``."""

    scheme: ClassVar[str]
    #: ``checksum.method`` for content read through ``read``.
    read_method: ClassVar[Literal["local", "download"]] = "download"
    #: Files up to this size (without a sidecar) may be verified several at a time by ``verify_small``;
    #: 0: one at a time through ``verify_version``.
    small_file_max: ClassVar[int] = 0

    def __init__(self, config: SourceConfig, credentials: Credentials, path_filter: PathFilter) -> None:
        self.config = config
        self.credentials = credentials
        self.path_filter = path_filter
        self.url = config.parsed_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def list(self) -> Listing:
        """Every regular file under the root (descending where ``path_filter.descend`` allows).

        Files are not filtered by include/exclude here: markers and sidecars must be visible.
        Raises ``SourceError`` on any failure; never returns a partial listing.
        """

    @abc.abstractmethod
    async def stat(self, path: str) -> Entry | None:
        """The current state of one file, or None if it does not exist."""

    @abc.abstractmethod
    def read(self, path: str) -> AsyncGenerator[bytes, None]:
        """Stream the file's bytes in chunks. Raises ``FileVanished`` if it disappears part-way."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the tree may have changed, or after ``timeout`` seconds.

        Remote adapters can only poll, so the default just sleeps; the local adapter is woken by inotify.
        """
        await asyncio.sleep(timeout)

    def file_url(self, path: str) -> str:
        """The full URL of a file, without secrets."""
        base = self.url.display().rstrip("/")
        return f"{base}/{path}"

    async def server_digest(self, path: str, algorithm: Algorithm) -> str | None:
        """A hash computed by the server (FTP HASH/XSHA256/XMD5), or None when unavailable."""
        return None

    async def digest(
        self,
        path: str,
        algorithm: Algorithm | None,
        verifier: Verifier | None,
        expected_size: int,
        sink: Sink | None = None,
    ) -> Digest:
        """Hash (and verify) the whole file by streaming it; never holds it in memory.

        ``sink`` also gets every chunk (``stage`` uploads them). When there is nothing to verify or
        upload, a server-side hash is used if the adapter has one.
        Raises ``FileVanished`` when the file shrinks, grows or disappears while being read.
        """
        if algorithm is not None and verifier is None and sink is None:
            value = await self.server_digest(path, algorithm)
            if value is not None:
                return Digest(algorithm, value, "server", expected_size)
        hasher = hashlib.new(algorithm) if algorithm else None
        # Receiving and hashing overlap: while one chunk is hashed in a worker thread (hashlib releases
        # the GIL on big buffers) the next is received, so the event loop stays free for other sources.
        # Each pool job is one chunk, never a whole file: however many downloads run at once, none waits
        # for a thread held by another file's download, so no data connection idles for want of one.
        loop = asyncio.get_running_loop()

        def feed(chunk: bytes) -> None:
            if hasher is not None:
                hasher.update(chunk)
            if verifier is not None:
                verifier.update(chunk)

        size = 0
        hashing: asyncio.Future[None] | None = None
        try:
            async with contextlib.aclosing(self.read(path)) as chunks:
                async for chunk in chunks:
                    size += len(chunk)
                    if hashing is not None:
                        await hashing  # in order, and at most one chunk waiting per file
                    # Its own pool: the default executor also resolves host names, which a connect may need.
                    hashing = loop.run_in_executor(_HASH_POOL, feed, chunk)
                    if sink is not None:
                        await sink.write(chunk)
        finally:
            if hashing is not None:
                await asyncio.shield(hashing)
        if size != expected_size:
            raise FileVanished(f"{path}: size changed while reading ({expected_size} -> {size} bytes)")
        problem = verifier.finish() if verifier is not None else None
        return Digest(algorithm, hasher.hexdigest() if hasher else None, self.read_method, size, problem)

    # settling: what ``on_success``/``on_failure`` do to a file -----------------------------------------
    async def makedirs(self, directory: str) -> None:
        """Create ``directory`` (relative to the root) and its missing parents."""
        raise ActionRefused(f"{self.scheme}: creating directories is not supported")

    async def rename(self, path: str, target: str) -> None:
        """Move ``path`` to ``target`` (both relative to the root; the target's directory exists).

        Never replaces an existing file: raises ``ActionRefused`` when ``target`` exists or the server
        refuses; ``SourceError`` when the connection fails (worth retrying).
        """
        raise ActionRefused(f"{self.scheme}: moving files is not supported")

    async def remove(self, path: str) -> None:
        """Delete ``path``. Raises ``ActionRefused`` when the server refuses."""
        raise ActionRefused(f"{self.scheme}: deleting files is not supported")

    async def verify_small(
        self, requests: Sequence[VerifyRequest], checksum: Algorithm | None, validate: bool
    ) -> Sequence[Verification | Exception]:
        """``verify_version`` of each request (files of at most ``small_file_max`` bytes, no sidecar),
        in order; a file's failure is its item, not raised, so it costs none of the others."""
        out: list[Verification | Exception] = []
        for req in requests:
            try:
                out.append(await verify_version(self, req, checksum, validate))
            except Exception as exc:
                out.append(exc)
        return out

    async def read_small(self, path: str, limit: int = 1024 * 1024) -> bytes:
        """Read a small companion file (a sidecar); raises ``FileVanished`` if it is missing."""
        out = bytearray()
        async with contextlib.aclosing(self.read(path)) as chunks:
            async for chunk in chunks:
                out += chunk
                if len(out) > limit:
                    raise FileVanished(f"{path}: larger than {limit} bytes; not a checksum file")
        return bytes(out)


class Sink(Protocol):
    """Gets every chunk a digest reads, in order (the stage upload)."""

    #: the chunk size it takes best (an adapter that reads locally reads this much at a time)
    read_size: int

    async def write(self, chunk: bytes) -> None: ...


def child_path(listing: Listing, rel: str, name: str | bytes, *, is_dir: bool = False) -> str | None:
    """The relative path of a listed entry of directory ``rel``, or None when it must be skipped.

    Every adapter's names pass here: the entries a directory lists for itself and its parent are
    dropped quietly; a name that is not UTF-8 or fails ``core.listing.name_problem`` is skipped and
    described in ``listing.bad_names`` (the watcher warns once and counts ``bad_name``).
    """
    if is_dir and name in (".", "..", b".", b".."):
        return None
    where = rel.rstrip("/") or "."
    try:
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        else:
            # os.scandir decodes bytes that are not UTF-8 as surrogate escapes: such a str encodes to
            # no UTF-8 either, and a record or event holding it could never be written.
            name.encode("utf-8")
    except UnicodeError:
        listing.bad_names.append(f"{where}: skipped an entry whose name is not UTF-8: {quote_name(name)}")
        return None
    problem = name_problem(name)
    if problem is not None:
        listing.bad_names.append(f"{where}: skipped an entry whose name {problem}: {quote_name(name)}")
        return None
    return f"{rel.rstrip('/')}/{name}" if rel else name


def unlistable_dir(listing: Listing, rel: str, reason: str, root_error: SourceError) -> None:
    """A directory that could not be listed. The root raises ``root_error`` (a listing without it says
    nothing); a subdirectory is kept as it was (``unlisted_dirs``, never read as deleted), with a warning."""
    if not rel:
        raise root_error
    rel = rel.rstrip("/")
    listing.unlisted_dirs.append(rel)
    listing.warnings.append(f"cannot list directory {rel!r}: {reason}")


AdapterFactory = Callable[[SourceConfig, Credentials, PathFilter], Adapter]
_REGISTRY: dict[str, AdapterFactory] = {}


def register(*schemes: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make an adapter available for URL schemes."""

    def deco(cls: type[Adapter]) -> type[Adapter]:
        for scheme in schemes:
            _REGISTRY[scheme] = cls
        return cls

    return deco


def adapter_factory(scheme: str) -> AdapterFactory:
    """The registered adapter class for a URL scheme."""
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise ValueError(f"no adapter for scheme {scheme!r}") from None


@dataclass(frozen=True, slots=True)
class Verification:
    """What reading one version found: ``digest`` is None when the file changed or vanished while
    being read (``vanished`` says how); ``after`` is the file as it stood right after reading."""

    digest: Digest | None
    after: Entry | None
    sidecar_problem: str | None
    vanished: str | None


def content_verifier(path: str, validate: bool) -> Verifier | None:
    """What checks a file's content while it is hashed (its format's verifier), if ``validate``."""
    return verifier_for(path) if validate else None


async def verify_version(
    adapter: Adapter, req: VerifyRequest, checksum: Algorithm | None, validate: bool, sink: Sink | None = None
) -> Verification:
    """Read a version once: its sidecar (if any), then every byte through the hash and verifiers.

    Raises ``SourceError`` when the server fails; a file that changes or vanishes is not an error.
    """
    path = req.record.path
    verifier = content_verifier(path, validate)
    sidecar_problem: str | None = None
    if req.sidecar_path is not None:
        try:
            content: bytes | None = await adapter.read_small(req.sidecar_path)
        except FileVanished:
            content = None
        verifier, sidecar_problem = build_verifier(verifier, content, path, req.sidecar_path)
    try:
        digest = await adapter.digest(path, checksum, verifier, req.entry.size, sink)
    except FileVanished as exc:
        return Verification(None, await adapter.stat(path), sidecar_problem, str(exc))
    if digest.mtime is not None:
        return Verification(digest, Entry(path, digest.size, digest.mtime), sidecar_problem, None)
    return Verification(digest, await adapter.stat(path), sidecar_problem, None)
