"""Credential sets: ``<credentials dir>/<name>/{username,password,private_key,known_hosts,ca.pem,hosts}``.

Secrets are held in objects whose ``repr`` never shows them, so an accidental log line cannot leak them.
``hosts`` binds a set to the hosts it may be sent to (see ``core.hosts``); a set without it is loaded
with ``hosts=None`` and refused by ``policy.check_credentials_host``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .core.hosts import HostRule, parse_host_rules
from .errors import ConfigError

__all__ = ["Credentials", "Secret", "load_credentials"]


class Secret:
    """A string that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Credentials:
    """What a credential set provides; every field optional. ``hosts`` is None without a hosts file."""

    name: str | None = None
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    private_key: Secret | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    ca_file: Path | None = None
    #: object storage (``stage``): keys, ``endpoint`` (http(s)://host:port) and optional ``region``
    access_key: Secret | None = field(default=None, repr=False)
    secret_key: Secret | None = field(default=None, repr=False)
    endpoint: str | None = None
    region: str | None = None
    hosts: tuple[HostRule, ...] | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"credentials: cannot read {path.name} of the credential set ({reason})"]) from None


def _hosts(name: str, text: str | None) -> tuple[HostRule, ...] | None:
    if text is None:
        return None
    rules, problems = parse_host_rules(text)
    if problems:
        raise ConfigError([f"credentials: hosts file of set {name!r}, {p}" for p in problems])
    return tuple(rules)


def load_credentials(credentials_dir: Path | None, name: str | None) -> Credentials:
    """Load a named credential set, or an empty one when ``name`` is None."""
    if name is None:
        return Credentials()
    if credentials_dir is None:
        raise ConfigError([f"credentials: set {name!r} requested but the server has no --credentials-dir"])
    base = credentials_dir / name
    if not base.is_dir():
        raise ConfigError([f"credentials: no credential set {name!r} in the credentials directory"])
    password = _read(base / "password")
    key = _read(base / "private_key")
    access_key = _read(base / "access_key")
    secret_key = _read(base / "secret_key")
    return Credentials(
        name=name,
        username=_read(base / "username"),
        password=Secret(password) if password is not None else None,
        private_key=Secret(key + "\n") if key is not None else None,
        known_hosts=(base / "known_hosts") if (base / "known_hosts").is_file() else None,
        ca_file=(base / "ca.pem") if (base / "ca.pem").is_file() else None,
        access_key=Secret(access_key) if access_key is not None else None,
        secret_key=Secret(secret_key) if secret_key is not None else None,
        endpoint=_read(base / "endpoint"),
        region=_read(base / "region"),
        hosts=_hosts(name, _read(base / "hosts")),
    )
