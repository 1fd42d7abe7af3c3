"""What the operator, not the author of a stream, allows: which local roots may be read and which
hosts a credential set may be sent to. Checked before any file is opened or connection made."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .config import ParsedURL, ServerSettings, SourceConfig, quote_short
from .core.hosts import host_allowed
from .credentials import Credentials
from .errors import ConfigError, PolicyError

__all__ = [
    "authorize",
    "check_credentials_host",
    "check_endpoint_host",
    "check_exposure",
    "check_local_root",
    "is_loopback_address",
    "real_root",
]


def check_credentials_host(credentials: Credentials, url: ParsedURL) -> None:
    """Raise ``PolicyError`` unless the set's ``hosts`` file lists the URL's host (and port)."""
    if credentials.name is None:
        return
    if credentials.hosts is None:
        raise PolicyError(
            [
                f"credentials: set {credentials.name!r} has no hosts file, so it may not be sent anywhere; "
                f"add <credentials dir>/{credentials.name}/hosts listing, one a line, the hosts "
                "(host or host:port) it is meant for"
            ]
        )
    if url.scheme == "file":
        return  # nothing is sent anywhere
    port = url.effective_port
    if not host_allowed(list(credentials.hosts), url.host, port):
        raise PolicyError(
            [
                f"credentials: set {credentials.name!r} may not be sent to {quote_short(f'{url.host}:{port}', 80)} "
                "(not listed in its hosts file)"
            ]
        )


def check_endpoint_host(credentials: Credentials, endpoint: str) -> None:
    """Like ``check_credentials_host`` for an HTTP(S) endpoint (object storage for ``stage``)."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError([f"credentials: set {credentials.name!r}: endpoint has an invalid port"]) from None
    host = parts.hostname or ""
    if credentials.hosts is None:
        raise PolicyError(
            [
                f"credentials: set {credentials.name!r} has no hosts file, so it may not be sent anywhere; "
                f"add <credentials dir>/{credentials.name}/hosts listing the endpoint's host (host or host:port)"
            ]
        )
    if not host_allowed(list(credentials.hosts), host, port):
        raise PolicyError(
            [
                f"credentials: set {credentials.name!r} may not be sent to {quote_short(f'{host}:{port}', 80)} "
                "(not listed in its hosts file)"
            ]
        )


def real_root(url: ParsedURL) -> str:
    """The local root with every symlink resolved: what is actually read."""
    return os.path.realpath(url.root)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_local_root(url: ParsedURL, allowed: Sequence[Path]) -> None:
    """Raise ``PolicyError`` unless a ``file://`` URL's real path is inside one of the allowed roots."""
    if url.scheme != "file":
        return
    if not allowed:
        raise PolicyError(
            ["url: local directories may not be read by streams on this server (it was started without --allow-root)"]
        )
    real = real_root(url)
    if not any(_inside(real, os.path.realpath(root)) for root in allowed):
        raise PolicyError(
            [f"url: {quote_short(url.root, 80)} is not inside a root this server allows (see --allow-root)"]
        )


def authorize(config: SourceConfig, credentials: Credentials, allowed_roots: Sequence[Path] | None) -> None:
    """Every operator rule for a stream. ``allowed_roots`` None: the operator's own config (``watch``,
    ``check``), which may read its own root."""
    url = config.parsed_url
    if allowed_roots is not None:
        check_local_root(url, allowed_roots)
    check_credentials_host(credentials, url)


def is_loopback_address(listen: str) -> bool:
    """Whether a gRPC listen address (``host:port``, ``[v6]:port``, ``unix:path``) is reachable only
    from this machine. A host name other than ``localhost`` may resolve anywhere, so it is not."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rpartition(":")[0] if ":" in listen else listen
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: ServerSettings) -> None:
    """Refuse to serve beyond loopback without a token, unless ``--no-auth`` says so on purpose."""
    if settings.auth_token_file is not None or settings.no_auth or is_loopback_address(settings.listen):
        return
    raise ConfigError(
        [
            f"--listen {settings.listen} is reachable from other machines and no token is set: "
            "pass --auth-token-file FILE (or FTPSOURCE_AUTH_TOKEN_FILE) so streams need that token, "
            "or --no-auth (FTPSOURCE_NO_AUTH=1) to accept anyone on purpose"
        ]
    )
