"""What FTP and SFTP adapters share: connection settings, secret scrubbing and error translation.

Protocol-specific failures are mapped by ``_translate_protocol``; everything a socket can raise
(timeouts, refused, reset, other OS errors) is mapped here once, after it.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterator

from ..config import SourceConfig
from ..core.paths import PathFilter
from ..credentials import Credentials
from ..errors import SourceError, TransientSourceError
from .base import Adapter

__all__ = ["RemoteAdapter"]

log = logging.getLogger(__name__)


class RemoteAdapter(Adapter):
    """Base of network adapters. ``timeout_s`` bounds every network step (connect, command, chunk)."""

    def __init__(
        self,
        config: SourceConfig,
        credentials: Credentials,
        path_filter: PathFilter,
        *,
        timeout_s: float | None = None,
        hash_timeout_s: float | None = None,
    ) -> None:
        super().__init__(config, credentials, path_filter)
        self.timeout_s = timeout_s if timeout_s is not None else config.timeout_s
        # A server hash reads the whole file before it answers.
        self.hash_timeout_s = hash_timeout_s if hash_timeout_s is not None else 10 * self.timeout_s
        #: protocol requests sent, for debugging
        self.stats: collections.Counter[str] = collections.Counter()
        self._host = self.url.host
        self._port = self.url.effective_port
        secrets = (credentials.password, credentials.private_key)
        # Very short "secrets" would scrub ordinary words from messages; nobody uses them.
        self._secrets = [s.reveal() for s in secrets if s is not None and len(s.reveal()) >= 3]
        self._slots = asyncio.Semaphore(config.max_connections)
        self._closed = False
        self._setup()

    @abc.abstractmethod
    def _setup(self) -> None:
        """The protocol's own connection state, set up at the end of ``__init__``."""

    def _where(self) -> str:
        return f"{self.url.scheme}://{self._host}:{self._port}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @abc.abstractmethod
    def _translate_protocol(self, exc: BaseException, action: str) -> SourceError | None:
        """Map a protocol library's failure; None to fall through to the socket-level mapping."""

    def _translate(self, exc: BaseException, action: str) -> SourceError | None:
        """Map a third-party failure to a ``SourceError``; None for exceptions that are not ours to map."""
        if isinstance(exc, SourceError):
            return exc
        where = self._where()
        if isinstance(exc, TimeoutError):
            return TransientSourceError(f"{where}: {action} timed out after {self.timeout_s:g}s", kind="timeout")
        mapped = self._translate_protocol(exc, action)
        if mapped is not None:
            return mapped
        if isinstance(exc, ConnectionRefusedError):
            return TransientSourceError(f"{where}: connection refused", kind="connect")
        if isinstance(exc, asyncio.IncompleteReadError | EOFError | ConnectionError):
            return TransientSourceError(f"{where}: connection lost while {action}", kind="connect")
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            return TransientSourceError(self._scrub(f"{where}: {action}: {reason}"), kind="connect")
        return None

    def _on_error(self, mapped: SourceError, exc: BaseException) -> None:
        """Called before a translated error is raised (e.g. to drop a broken connection)."""

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            mapped = self._translate(exc, action)
            if mapped is None or mapped is exc:
                raise
            self._on_error(mapped, exc)
            raise mapped from exc
