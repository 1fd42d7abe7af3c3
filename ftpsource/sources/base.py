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
import queue
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Literal, Protocol, Self

from ..config import SourceConfig
from ..credentials import Credentials
from ..errors import FileVanished
from ..paths import PathFilter

__all__ = [
    "CHUNK_SIZE",
    "Digest",
    "Entry",
    "Listing",
    "Source",
    "Verifier",
    "adapter_for",
    "register",
]

CHUNK_SIZE = 1024 * 1024
HASH_QUEUE = 8
# A worker waits on its own file's chunks only, so a full pool delays hashing but cannot deadlock.
_HASH_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ftpsource-hash")
Algorithm = Literal["sha256", "md5"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One regular file as listed. ``mtime`` is seconds since the epoch (UTC).

    Adapters must return the same ``(size, mtime)`` for an unchanged file on every listing, even when
    the protocol only gives coarse times (FTP LIST), so a precision change is never read as a new version.
    """

    path: str
    size: int
    mtime: float


@dataclass(slots=True)
class Listing:
    """A listing of the tree, complete except for ``unlisted_dirs``.

    ``warnings`` name lines or entries that were skipped. ``unlisted_dirs`` are directories (relative,
    no trailing slash) that could not be read; records under them are kept as they are, never read as
    deleted. An adapter raises instead when the root itself or the connection fails.
    """

    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    unlisted_dirs: list[str] = field(default_factory=list)


class Verifier(Protocol):
    """Fed every chunk while hashing; ``finish`` returns a problem description or None (see formats.py)."""

    def update(self, chunk: bytes) -> None: ...

    def finish(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Digest:
    """The outcome of reading a file completely."""

    algorithm: Algorithm | None
    value: str | None
    method: Literal["local", "download", "server"]
    size: int
    problem: str | None = None
    #: the file's mtime right after reading, when the adapter knows it (saves the caller a stat)
    mtime: float | None = None


class Source(abc.ABC):
    """A protocol adapter. Use as ``async with adapter_for(config, creds, filter) as src: ...``."""

    scheme: ClassVar[str]
    #: ``checksum.method`` for content read through ``read``.
    read_method: ClassVar[Literal["local", "download"]] = "download"

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
        self, path: str, algorithm: Algorithm | None, verifier: Verifier | None, expected_size: int
    ) -> Digest:
        """Hash (and verify) the whole file by streaming it; never holds it in memory.

        When there is nothing to verify, a server-side hash is used if the adapter has one.
        Raises ``FileVanished`` when the file shrinks, grows or disappears while being read.
        """
        if algorithm is not None and verifier is None:
            value = await self.server_digest(path, algorithm)
            if value is not None:
                return Digest(algorithm, value, "server", expected_size)
        hasher = hashlib.new(algorithm) if algorithm else None
        # Receiving and hashing overlap: chunks go to a worker thread (hashlib releases the GIL on big
        # buffers), so the event loop stays free for other sources. At most HASH_QUEUE chunks wait.
        loop = asyncio.get_running_loop()
        room = asyncio.Semaphore(HASH_QUEUE)
        chunks_q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def consume() -> int:
            total = 0
            while (chunk := chunks_q.get()) is not None:
                total += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                if verifier is not None:
                    verifier.update(chunk)
                loop.call_soon_threadsafe(room.release)
            return total

        # Its own pool: the default executor also resolves host names, which a connect may need.
        worker = loop.run_in_executor(_HASH_POOL, consume)
        try:
            async with contextlib.aclosing(self.read(path)) as chunks:
                async for chunk in chunks:
                    await room.acquire()
                    chunks_q.put(chunk)
        finally:
            chunks_q.put(None)
            size = await asyncio.shield(worker)
        if size != expected_size:
            raise FileVanished(f"{path}: size changed while reading ({expected_size} -> {size} bytes)")
        problem = verifier.finish() if verifier is not None else None
        return Digest(algorithm, hasher.hexdigest() if hasher else None, self.read_method, size, problem)

    async def read_small(self, path: str, limit: int = 1024 * 1024) -> bytes:
        """Read a small companion file (a sidecar); raises ``FileVanished`` if it is missing."""
        out = bytearray()
        async with contextlib.aclosing(self.read(path)) as chunks:
            async for chunk in chunks:
                out += chunk
                if len(out) > limit:
                    raise FileVanished(f"{path}: larger than {limit} bytes; not a checksum file")
        return bytes(out)


AdapterFactory = Callable[[SourceConfig, Credentials, PathFilter], Source]
_REGISTRY: dict[str, AdapterFactory] = {}


def register(*schemes: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make an adapter available for URL schemes."""

    def deco(cls: type[Source]) -> type[Source]:
        for scheme in schemes:
            _REGISTRY[scheme] = cls
        return cls

    return deco


def adapter_for(config: SourceConfig, credentials: Credentials, path_filter: PathFilter) -> Source:
    """Instantiate the adapter for the config's URL scheme."""
    from . import load_adapters

    load_adapters()
    scheme = config.parsed_url.scheme
    try:
        factory = _REGISTRY[scheme]
    except KeyError:
        raise ValueError(f"no adapter for scheme {scheme!r}") from None
    return factory(config, credentials, path_filter)
