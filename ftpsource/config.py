"""Typed, validated configuration.

``SourceConfig`` is parsed once, at the edge, from the ``config`` bytes Argo sends (YAML or JSON).
Every problem is reported at once, one ``field: reason`` line each; unknown keys are errors.
Durations are stored as float seconds in ``*_s`` attributes; the YAML keys keep their product names.
"""

from __future__ import annotations

import hashlib
import re
import string
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

import yaml
from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core.detect import Policy
from .core.paths import PathFilter, Template
from .core.settle import PostAction, check_target_template, target_excludes
from .errors import ConfigError

__all__ = [
    "DEFAULT_EXCLUDE",
    "ExpectRule",
    "OnFailure",
    "OnSuccess",
    "ParsedURL",
    "ServerSettings",
    "SourceConfig",
    "format_duration",
    "parse_duration",
    "parse_source_config",
]

DEFAULT_EXCLUDE = ["**/.*", "**/*.part", "**/*.tmp", "**/*.filepart"]
SCHEMES = ("file", "ftp", "ftps", "sftp")
TEMPLATE_FIELDS = frozenset({"path", "dir", "name", "stem"})
# strftime directives that describe a period; anything else in an expect path is a typo.
STRFTIME_DIRECTIVES = frozenset("aAbBdHIjmMpSUwWyYGuVzZ%")

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(value: object) -> float:
    """``90s``, ``5m``, ``1h30m``, ``250ms`` or a number of seconds -> seconds (float, >= 0)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    match = _DURATION_RE.match(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {value!r} (use e.g. 90s, 5m, 1h30m)")
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (h or m) else ""]
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_template(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        names = [fname for _, fname, _, _ in string.Formatter().parse(value) if fname is not None]
    except ValueError as exc:
        raise ValueError(f"invalid template {value!r}: {exc}") from None
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
        raise ValueError(f"unknown template field {{{unknown[0]}}} in {value!r} (allowed: {allowed})")
    if not names:
        raise ValueError(f"template {value!r} uses no field; it would name the same file for every path")
    return value


class ExpectRule(BaseModel):
    """An expected file: ``path`` must be ready by each ``schedule`` deadline plus ``grace``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    schedule: str
    grace_s: Duration = Field(default=0.0, alias="grace")
    timezone: str = "UTC"

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        i = 0
        while i < len(value):
            if value[i] == "%":
                if i + 1 >= len(value) or value[i + 1] not in STRFTIME_DIRECTIVES:
                    bad = value[i : i + 2]
                    raise ValueError(f"unknown strftime field {bad!r} in {value!r}")
                i += 2
                continue
            i += 1
        if value.startswith("/"):
            raise ValueError("must be relative to the source root")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r} (5 fields: minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


class OnSuccess(BaseModel):
    """What to do with a file whose Workflow succeeded: ``move`` it to ``to``, ``delete`` it, or ``none``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["move", "delete", "none"] = "none"
    to: str | None = None
    timezone: str = "UTC"

    @field_validator("to")
    @classmethod
    def _to(cls, value: str | None) -> str | None:
        return None if value is None else check_target_template(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @model_validator(mode="after")
    def _target(self) -> OnSuccess:
        if self.action == "move" and self.to is None:
            raise ValueError("`move` needs `to`, a target template such as 'archive/%Y%m%d/{name}'")
        if self.action != "move" and self.to is not None:
            raise ValueError(f"`to` only goes with `action: move`, not {self.action!r}")
        return self

    def spec(self) -> PostAction:
        return PostAction(self.action, self.to, self.timezone)


class OnFailure(OnSuccess):
    """What to do with a file whose Workflow failed: ``move`` it (quarantine) or ``none``; never delete."""

    action: Literal["move", "none"] = "none"


@dataclass(frozen=True, slots=True)
class ParsedURL:
    scheme: str
    host: str
    port: int | None
    username: str | None
    root: str

    def display(self) -> str:
        """The URL without credentials, as it appears in events."""
        root = quote(self.root, safe="/")
        if self.scheme == "file":
            return f"file://{root}"
        netloc = self.host if self.port is None else f"{self.host}:{self.port}"
        if ":" in self.host and not self.host.startswith("["):
            netloc = f"[{self.host}]" if self.port is None else f"[{self.host}]:{self.port}"
        if self.username:
            netloc = f"{self.username}@{netloc}"
        return f"{self.scheme}://{netloc}{root}"


def parse_url(value: str) -> ParsedURL:
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported scheme {parts.scheme!r} in {value!r} (use file, ftp, ftps or sftp)")
    if parts.password is not None:
        raise ValueError(
            "a password in the URL is not allowed; put it in a credential set and name it in `credentials`"
        )
    if parts.query or parts.fragment:
        raise ValueError("query strings and fragments are not supported")
    path = unquote(parts.path) or "/"
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs take an absolute path, like file:///data/in, not {value!r}")
        if not path.startswith("/"):
            raise ValueError(f"file URL path must be absolute in {value!r}")
        return ParsedURL("file", "", None, None, path.rstrip("/") or "/")
    if not parts.hostname:
        raise ValueError(f"missing host in {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {value!r}") from None
    root = "/" + path.strip("/") if path.strip("/") else "/"
    return ParsedURL(scheme, parts.hostname, port, unquote(parts.username) if parts.username else None, root)


class SourceConfig(BaseModel):
    """One source, parsed from the ``config`` text of an Argo generic EventSource."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str
    credentials: str | None = None
    host_key: str | None = None
    insecure_skip_host_key_check: bool = False
    tls_verify: bool = True
    id: str | None = None
    recursive: bool = True
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    poll_interval_s: Duration = Field(default=30.0, alias="poll_interval")
    stable_for_s: Duration = Field(default=30.0, alias="stable_for")
    min_age_s: Duration = Field(default=0.0, alias="min_age")
    min_size: int = Field(default=1, ge=0)
    checksum: Literal["sha256", "md5", "none"] = "sha256"
    marker: str | None = None
    sidecar: str | None = None
    validate_: Literal["auto", "none"] = Field(default="auto", alias="validate")
    reject_after_s: Duration = Field(default=3600.0, alias="reject_after")
    existing: Literal["emit", "skip"] = "emit"
    deletes: bool = False
    expect: list[ExpectRule] = Field(default_factory=list)
    max_connections: int = Field(default=2, ge=1, le=64)
    timeout_s: Duration = Field(default=30.0, alias="timeout")
    on_success: OnSuccess = Field(default_factory=OnSuccess)
    on_failure: OnFailure = Field(default_factory=OnFailure)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_url(value)
        return value

    @field_validator("marker", "sidecar")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @field_validator("poll_interval_s", "timeout_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 50ms")
        return value

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("SHA256:", "MD5:")):
            raise ValueError("expected a fingerprint like 'SHA256:…' (ssh-keygen -lf key.pub)")
        return value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 128)")
        return value

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("must be the name of a directory in the credentials directory")
        return value

    @property
    def parsed_url(self) -> ParsedURL:
        return parse_url(self.url)

    @property
    def display_url(self) -> str:
        return self.parsed_url.display()

    def policy(self) -> Policy:
        """The decision-relevant part of this config, for the core."""
        return Policy(
            stable_for_s=self.stable_for_s,
            min_age_s=self.min_age_s,
            min_size=self.min_size,
            checksum=None if self.checksum == "none" else self.checksum,
            reject_after_s=self.reject_after_s,
            existing=self.existing,
            deletes=self.deletes,
            validate=self.validate_ == "auto",
            marker=Template(self.marker) if self.marker else None,
            sidecar=Template(self.sidecar) if self.sidecar else None,
            path_filter=PathFilter(self.include, [*self.exclude, *self.target_excludes()], self.recursive),
        )

    def target_excludes(self) -> list[str]:
        """Globs of where ``on_success``/``on_failure`` move files: never detected as new files."""
        return [glob for rule in (self.on_success, self.on_failure) if rule.to for glob in target_excludes(rule.to)]

    def source_id(self, event_name: str) -> str:
        """The state key: ``id`` if set, else the event name plus a hash of the URL."""
        if self.id:
            return self.id
        digest = hashlib.sha256(self.display_url.encode()).hexdigest()[:10]
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", event_name or "source")[:64]
        return f"{safe}-{digest}"


_INLINE_SECRET_KEYS = {"password", "passwd", "private_key", "secret", "token"}


def _format_errors(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        loc = loc.removesuffix("_s") if loc.endswith("_s") and loc[:-2] in _DURATION_KEYS else loc
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(err["loc"][-1])
            if key in _INLINE_SECRET_KEYS:
                msg = (
                    "secrets never go inline; put it in <credentials dir>/<name>/"
                    f"{'private_key' if key == 'private_key' else 'password'} and set `credentials: <name>`"
                )
            else:
                msg = "unknown key"
        elif kind == "missing":
            msg = "required"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if kind in {"literal_error"}:
                msg = f"{msg}, got {err.get('input')!r}"
        problems.append(f"{loc}: {msg}")
    return problems


_DURATION_KEYS = {"poll_interval", "stable_for", "min_age", "reject_after", "grace", "timeout"}


def parse_source_config(raw: bytes | str) -> SourceConfig:
    """Parse the YAML/JSON text into a ``SourceConfig`` or raise ``ConfigError`` naming every bad field."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([f"config: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if not raw.strip():
        raise ConfigError(["config: empty; at least `url` is required"])
    try:
        data: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed"
        raise ConfigError([f"config: malformed YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config: expected a mapping of keys, got {type(data).__name__}"])
    try:
        return SourceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


@dataclass(frozen=True)
class ServerSettings:
    """``ftpsource serve`` settings, from flags or matching ``FTPSOURCE_*`` environment variables."""

    listen: str = "0.0.0.0:8080"
    metrics_listen: str | None = "0.0.0.0:9090"
    state: Path = Path("ftpsource.db")
    auth_token_file: Path | None = None
    credentials_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    grace_s: float = 10.0
    keepalive_s: float = 30.0
