"""Typed, validated configuration.

``SourceConfig`` is parsed once, at the edge, from the ``config`` bytes Argo sends (YAML or JSON).
Every problem is reported at once, one ``field: reason`` line each; unknown keys are errors.
Durations are stored as float seconds in ``*_s`` attributes; the YAML keys keep their product names.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
import string
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .core.detect import Policy
from .core.paths import PathFilter, Template
from .core.settle import PostAction, check_target_template, target_excludes
from .core.stage import DEFAULT_KEY, StageTarget, check_key_template, parse_s3_url
from .errors import ConfigError

__all__ = [
    "DEFAULT_EXCLUDE",
    "MAX_CONFIG_BYTES",
    "ExpectRule",
    "ExpectSet",
    "OnFailure",
    "OnSuccess",
    "ParsedURL",
    "ServerSettings",
    "SetPattern",
    "SourceConfig",
    "StageConfig",
    "format_duration",
    "parse_duration",
    "parse_source_config",
    "quote_short",
]

#: The largest config text accepted; a real one is a few hundred bytes.
MAX_CONFIG_BYTES = 64 * 1024
#: Mappings and lists nested deeper than this are refused (the real schema nests three levels).
MAX_DEPTH = 12
#: At most this many YAML nodes (keys, values, lists, mappings); the full schema needs a few hundred.
MAX_NODES = 2048
#: At most this many keys in a mapping or items in a list.
MAX_ITEMS = 128
#: At most this many problems are listed; the rest are counted.
MAX_PROBLEMS = 20
#: A bad value is quoted in an error by at most this many characters.
QUOTE_MAX = 40
MAX_DURATION_S = 10 * 366 * 86400

DEFAULT_EXCLUDE = ["**/.*", "**/*.part", "**/*.tmp", "**/*.filepart"]
SCHEMES = ("file", "ftp", "ftps", "sftp")
DEFAULT_PORTS = {"file": 0, "ftp": 21, "ftps": 21, "sftp": 22}
TEMPLATE_FIELDS = frozenset({"path", "dir", "name", "stem"})
# strftime directives that describe a period; anything else in an expect path is a typo.
STRFTIME_DIRECTIVES = frozenset("aAbBdHIjmMpSUwWyYGuVzZ%")

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def quote_short(value: object, limit: int = QUOTE_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error names a bad value without echoing all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_duration(value: object) -> float:
    """``90s``, ``5m``, ``1h30m``, ``250ms`` or a number of seconds -> seconds (float, >= 0)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {quote_short(value)}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {quote_short(value)}: must not be negative")
        return _bounded(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {quote_short(value)}")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"invalid duration {quote_short(value)}: must not be negative")
    match = _DURATION_RE.match(text) if len(text) <= 32 else None
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {quote_short(value)} (use e.g. 90s, 5m, 1h30m)")
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return _bounded(h * 3600 + m * 60 + s + ms / 1000, value)


def _bounded(seconds: float, value: object) -> float:
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"invalid duration {quote_short(value)}: must be finite and at most {MAX_DURATION_S // 3600}h")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (h or m) else ""]
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]
# Lengths no real config comes near, so that a hostile one cannot make matching or parsing costly.
MAX_PATH = 2048
MAX_SHORT = 256
MAX_LIST = 64
Glob = Annotated[str, Field(max_length=MAX_SHORT)]


# Paths a template is tried on: a companion must stay inside the root for each of them.
_TEMPLATE_PROBES = ("f", "f.csv", ".f", "d/f.csv", "d/e/f", "d.x/f.y.z")


def _check_template(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        names = [fname for _, fname, _, _ in string.Formatter().parse(value) if fname is not None]
    except ValueError as exc:
        raise ValueError(f"invalid template {quote_short(value)}: {exc}") from None
    unknown = sorted({n for n in names if n not in TEMPLATE_FIELDS})
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS))
        raise ValueError(
            f"unknown template field {{{unknown[0][:QUOTE_MAX]}}} in {quote_short(value)} (allowed: {allowed})"
        )
    if not names:
        raise ValueError(f"template {quote_short(value)} uses no field; it would name the same file for every path")
    template = Template(value)
    for probe in _TEMPLATE_PROBES:
        rendered = template.render(probe)
        normal = posixpath.normpath(rendered)
        if rendered.startswith("/") or normal == ".." or normal.startswith("../") or ".." in rendered.split("/"):
            raise ValueError(
                f"template {quote_short(value)} names a file outside the source root "
                f"({quote_short(rendered)} for {probe!r}); companions must be inside the root"
            )
    return value


def _check_strftime(value: str) -> str:
    i = 0
    while i < len(value):
        if value[i] == "%":
            if i + 1 >= len(value) or value[i + 1] not in STRFTIME_DIRECTIVES:
                bad = value[i : i + 2]
                raise ValueError(f"unknown strftime field {bad!r} in {quote_short(value)}")
            i += 2
            continue
        i += 1
    if value.startswith("/"):
        raise ValueError("must be relative to the source root")
    return value


class _Scheduled(BaseModel):
    """What every ``expect`` entry has: deadlines, their tolerance, and an early warning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = Field(max_length=MAX_SHORT)
    grace_s: Duration = Field(default=0.0, alias="grace")
    timezone: str = Field(default="UTC", max_length=MAX_SHORT)
    warn_before_s: Duration | None = Field(default=None, alias="warn_before")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {quote_short(value)} (5 fields: minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {quote_short(value)}") from None
        return value


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {quote_short(value)}") from None
    return value


class OnSuccess(BaseModel):
    """What to do with a file whose Workflow succeeded: ``move`` it to ``to``, ``delete`` it, or ``none``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["move", "delete", "none"] = "none"
    to: str | None = Field(default=None, max_length=MAX_PATH)
    timezone: str = Field(default="UTC", max_length=MAX_SHORT)

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


class ExpectRule(_Scheduled):
    """An expected file: ``path`` must be ready by each ``schedule`` deadline plus ``grace``."""

    path: str = Field(max_length=MAX_PATH)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _check_strftime(value)


class SetPattern(BaseModel):
    """A set member made of several files: ``count`` distinct ready files matching ``pattern``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(max_length=MAX_PATH)
    count: int = Field(ge=1, le=10_000)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        return _check_strftime(value)


def _member_kind(value: Any) -> str:
    return "member-pattern" if isinstance(value, dict | SetPattern) else "member-path"


SetMember = Annotated[
    Annotated[str, Field(max_length=MAX_PATH), Tag("member-path")] | Annotated[SetPattern, Tag("member-pattern")],
    Discriminator(_member_kind),
]


class ExpectSet(_Scheduled):
    """Files expected together: every member of ``files`` ready by each deadline plus ``grace``."""

    set: str = Field(max_length=MAX_SHORT)
    files: list[SetMember] = Field(min_length=1, max_length=MAX_LIST)

    @field_validator("set")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 128)")
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str | SetPattern]) -> list[str | SetPattern]:
        names = [m if isinstance(m, str) else m.pattern for m in value]
        for name in names:
            if isinstance(name, str):
                _check_strftime(name)
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"{quote_short(dup)} is listed twice")
        return value


def _expect_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "expect-set" if "set" in value or "files" in value else "expect-file"
    return "expect-set" if isinstance(value, ExpectSet) else "expect-file"


ExpectEntry = Annotated[
    Annotated[ExpectRule, Tag("expect-file")] | Annotated[ExpectSet, Tag("expect-set")], Discriminator(_expect_kind)
]
# Tags of the unions above: they appear in pydantic's error locations but are not keys anyone wrote.
_UNION_TAGS = frozenset({"expect-file", "expect-set", "member-path", "member-pattern"})


class StageConfig(BaseModel):
    """``stage``: land each ready version's bytes in an S3 bucket, read once with the hashing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(max_length=MAX_PATH)
    credentials: str = Field(max_length=MAX_SHORT)
    key: str = Field(default=DEFAULT_KEY, max_length=MAX_PATH)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_s3_url(value)
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_key_template(value)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
            raise ValueError("must be the name of a directory in the credentials directory")
        return value

    def target(self) -> StageTarget:
        bucket, prefix = parse_s3_url(self.url)
        return StageTarget(bucket, prefix, self.key)


@dataclass(frozen=True, slots=True)
class ParsedURL:
    scheme: str
    host: str
    port: int | None
    username: str | None
    root: str

    @property
    def effective_port(self) -> int:
        """The port connected to: the URL's, or the scheme's default."""
        return self.port or DEFAULT_PORTS[self.scheme]

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
        raise ValueError(f"unsupported scheme {quote_short(parts.scheme)} (use file, ftp, ftps or sftp)")
    if parts.password is not None:
        raise ValueError(
            "a password in the URL is not allowed; put it in a credential set and name it in `credentials`"
        )
    if parts.query or parts.fragment:
        raise ValueError("query strings and fragments are not supported")
    path = unquote(parts.path) or "/"
    if any(c in path for c in "\0\r\n"):
        raise ValueError("the path must not contain NUL, CR or LF")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URLs take an absolute path, like file:///data/in, not {quote_short(value)}")
        if not path.startswith("/"):
            raise ValueError(f"file URL path must be absolute in {quote_short(value)}")
        return ParsedURL("file", "", None, None, path.rstrip("/") or "/")
    if not parts.hostname:
        raise ValueError(f"missing host in {quote_short(value)}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in {quote_short(value)}") from None
    root = "/" + path.strip("/") if path.strip("/") else "/"
    username = unquote(parts.username) if parts.username else None
    # The user name goes into an FTP command line and into logs: no line breaks or other controls.
    if username is not None and any(ord(c) < 0x20 or c == "\x7f" for c in username):
        raise ValueError("the user name must not contain control characters (NUL, CR, LF, ...)")
    return ParsedURL(scheme, parts.hostname, port, username, root)


class SourceConfig(BaseModel):
    """One source, parsed from the ``config`` text of an Argo generic EventSource."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str = Field(max_length=MAX_PATH)
    credentials: str | None = None
    host_key: str | None = Field(default=None, max_length=MAX_SHORT)
    insecure_skip_host_key_check: bool = False
    tls_verify: bool = True
    id: str | None = None
    recursive: bool = True
    include: list[Glob] = Field(default_factory=list, max_length=MAX_LIST)
    exclude: list[Glob] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE), max_length=MAX_LIST)
    poll_interval_s: Duration = Field(default=30.0, alias="poll_interval")
    stable_for_s: Duration = Field(default=30.0, alias="stable_for")
    min_age_s: Duration = Field(default=0.0, alias="min_age")
    min_size: int = Field(default=1, ge=0)
    checksum: Literal["sha256", "md5", "none"] = "sha256"
    marker: str | None = Field(default=None, max_length=MAX_SHORT)
    sidecar: str | None = Field(default=None, max_length=MAX_SHORT)
    validate_: Literal["auto", "none"] = Field(default="auto", alias="validate")
    reject_after_s: Duration = Field(default=3600.0, alias="reject_after")
    existing: Literal["emit", "skip"] = "emit"
    deletes: bool = False
    expect: list[ExpectEntry] = Field(default_factory=list, max_length=MAX_LIST)
    max_connections: int = Field(default=2, ge=1, le=64)
    timeout_s: Duration = Field(default=30.0, alias="timeout")
    on_success: OnSuccess = Field(default_factory=OnSuccess)
    on_failure: OnFailure = Field(default_factory=OnFailure)
    stage: StageConfig | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_url(value)
        return value

    @field_validator("marker", "sidecar")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return _check_template(value)

    @model_validator(mode="after")
    def _stage_needs_sha256(self) -> SourceConfig:
        if self.stage is not None and self.checksum != "sha256":
            raise ValueError("stage: needs `checksum: sha256` (the staged object is named and checked by it)")
        return self

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

    @field_validator("expect")
    @classmethod
    def _unique_sets(cls, value: list[ExpectRule | ExpectSet]) -> list[ExpectRule | ExpectSet]:
        names = [x.set for x in value if isinstance(x, ExpectSet)]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"set {quote_short(dup)} is defined twice")
        return value

    @property
    def expect_files(self) -> list[ExpectRule]:
        return [x for x in self.expect if isinstance(x, ExpectRule)]

    @property
    def expect_sets(self) -> list[ExpectSet]:
        return [x for x in self.expect if isinstance(x, ExpectSet)]

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
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _loc_part(part: object) -> str:
    text = str(part)
    return text if _PLAIN_KEY.fullmatch(text) else quote_short(text)


def _format_errors(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = ".".join(_loc_part(p) for p in err["loc"] if p not in _UNION_TAGS) or "config"
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
                msg = f"{msg}, got {quote_short(err.get('input'))}"
        problems.append(f"{loc}: {msg}")
    return problems


_DURATION_KEYS = {"poll_interval", "stable_for", "min_age", "reject_after", "grace", "timeout", "warn_before"}
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_events(raw: str) -> None:
    """Refuse what a source config never needs and an attacker uses: anchors and aliases (a few
    hundred bytes of nested aliases expand into gigabytes), tags, deep nesting and thousands of
    values (building them costs the allocations that set off the garbage collector, which holds the
    interpreter, event loop included, for tens of milliseconds). One pass over the parser's events,
    before anything is built."""
    nodes = 0
    # Per open collection: [is a mapping, nodes in it so far] (a mapping holds two per key).
    open_collections: list[list[int]] = []
    for event in yaml.parse(raw, Loader=_Loader):
        where = f" at line {event.start_mark.line + 1}" if event.start_mark is not None else ""
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError([f"config: YAML aliases (*name) are not allowed{where}"])
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise ConfigError([f"config: YAML anchors (&name) are not allowed{where}"])
        explicit_tag = isinstance(event, yaml.ScalarEvent) or (
            isinstance(event, yaml.CollectionStartEvent) and not event.implicit
        )
        if explicit_tag and getattr(event, "tag", None) is not None:
            raise ConfigError([f"config: YAML tags (!tag) are not allowed{where}"])
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise ConfigError([f"config: more than {MAX_NODES} keys and values{where}"])
            if open_collections:
                parent = open_collections[-1]
                parent[1] += 1
                if parent[1] > (2 * MAX_ITEMS if parent[0] else MAX_ITEMS):
                    what = "keys in a mapping" if parent[0] else "items in a list"
                    raise ConfigError([f"config: more than {MAX_ITEMS} {what}{where}"])
        if isinstance(event, yaml.CollectionStartEvent):
            open_collections.append([isinstance(event, yaml.MappingStartEvent), 0])
            if len(open_collections) > MAX_DEPTH:
                raise ConfigError([f"config: nested more than {MAX_DEPTH} levels deep{where}"])
        elif isinstance(event, yaml.CollectionEndEvent):
            open_collections.pop()


def _check_keys(data: object, loc: str = "") -> None:
    """Every mapping key must be a string (``1: x``, ``null: x`` and ``true: x`` are typos or tricks)."""
    where = f"{loc}: " if loc else "config: "
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                raise ConfigError([f"{where}keys must be strings, got {quote_short(key)}"])
            _check_keys(value, f"{loc}.{_loc_part(key)}" if loc else _loc_part(key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _check_keys(item, f"{loc}.{i}")


def _load_yaml(raw: str) -> Any:
    try:
        _check_events(raw)
        return yaml.load(raw, Loader=_Loader)  # a safe loader; aliases and tags were refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or "malformed")
        problem = problem if len(problem) <= 80 else problem[:79] + "…"
        raise ConfigError([f"config: malformed YAML{where}: {problem}"]) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A value the YAML library cannot build (an integer of 5,000 digits, a date out of range, ...).
        raise ConfigError([f"config: unreadable value ({type(exc).__name__})"]) from None


def parse_source_config(raw: bytes | str) -> SourceConfig:
    """Parse the YAML/JSON text into a ``SourceConfig`` or raise ``ConfigError`` naming every bad field.

    Input is bounded (``MAX_CONFIG_BYTES``, no anchors, aliases or tags, string keys, ``MAX_DEPTH``
    levels) so that parsing costs at most a few milliseconds, and every message quotes at most a short
    prefix of a bad value.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"config: {size} bytes; at most {MAX_CONFIG_BYTES} are accepted"])
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([f"config: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    if not raw.strip():
        raise ConfigError(["config: empty; at least `url` is required"])
    data = _load_yaml(raw)
    if not isinstance(data, dict):
        raise ConfigError([f"config: expected a mapping of keys, got {type(data).__name__}"])
    _check_keys(data)
    try:
        return SourceConfig.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc)
        if len(problems) > MAX_PROBLEMS:
            problems = [*problems[:MAX_PROBLEMS], f"config: and {len(problems) - MAX_PROBLEMS} more problems"]
        raise ConfigError(problems) from None


@dataclass(frozen=True)
class ServerSettings:
    """``ftpsource serve`` settings, from flags or matching ``FTPSOURCE_*`` environment variables."""

    listen: str = "0.0.0.0:8080"
    metrics_listen: str | None = "0.0.0.0:9090"
    #: A SQLite file, or a ``postgresql://`` URL (several replicas share it; no password in it).
    state: str | Path = "ftpsource.db"
    state_password_file: Path | None = None
    auth_token_file: Path | None = None
    #: a second token that may settle but not open streams (what a Workflow's exit handler holds)
    settle_token_file: Path | None = None
    credentials_dir: Path | None = None
    #: the only local roots a stream may read; none without --allow-root
    allow_roots: tuple[Path, ...] = ()
    #: listen beyond loopback without a token, on purpose
    no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    grace_s: float = 10.0
    keepalive_s: float = 5.0
    #: how long delivered events and tombstones (reported files that are gone) are kept
    retention_s: float = 35 * 86400.0
    loop_stall_s: float = 30.0
