"""PURE: what happens to a reported file version when its Workflow settles it.

The action (``move``, ``delete`` or ``none``) for each outcome is fixed when the ready event is
made and stored with the version, so a settle that arrives later does not depend on the config of
whichever stream runs then. A ``move`` target is a template relative to the source root: the fields
``{path}``, ``{dir}``, ``{name}``, ``{stem}`` of the file, and strftime fields of the settle time.

Before anything is touched the file must still be the settled version (``still_the_version``); a
file that changed since it was reported is left alone.
"""

from __future__ import annotations

import json
import posixpath
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

from .model import Entry
from .paths import split_path

__all__ = [
    "ActionKind",
    "Outcome",
    "PostAction",
    "SettleVersion",
    "check_target_template",
    "render_target",
    "still_the_version",
    "target_excludes",
]

ActionKind = Literal["move", "delete", "none"]
Outcome = Literal["succeeded", "failed"]

_FIELDS = frozenset({"path", "dir", "name", "stem"})
_NAMING_FIELDS = frozenset({"path", "name", "stem"})
_DIRECTIVE = re.compile(r"%.")
_GLOB_SPECIAL = re.compile(r"([*?\[\]{}!|()@+\\])")


@dataclass(frozen=True, slots=True)
class PostAction:
    """One outcome's action: ``move`` to ``to`` (rendered in ``timezone``), ``delete`` or ``none``."""

    action: ActionKind = "none"
    to: str | None = None
    timezone: str = "UTC"

    def to_json(self) -> str:
        return json.dumps({"action": self.action, "to": self.to, "timezone": self.timezone}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PostAction:
        raw = json.loads(text)
        return cls(raw["action"], raw.get("to"), raw.get("timezone") or "UTC")


@dataclass(frozen=True, slots=True)
class SettleVersion:
    """What is recorded with a ready event so that it can be settled later."""

    path: str
    generation: int
    size: int
    mtime: float
    checksum: str | None
    on_success: PostAction
    on_failure: PostAction

    @property
    def expects_settle(self) -> bool:
        """Whether a Workflow is expected to settle it (some outcome does something)."""
        return self.on_success.action != "none" or self.on_failure.action != "none"

    def action_for(self, outcome: Outcome) -> PostAction:
        return self.on_success if outcome == "succeeded" else self.on_failure


def _parse(template: str) -> list[tuple[str, str | None]]:
    try:
        return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from None


def check_target_template(template: str) -> str:
    """Validate a ``to`` template; raises ``ValueError`` naming the problem."""
    parts = _parse(template)
    fields = {f for _, f in parts if f is not None}
    unknown = sorted(f for f in fields if f not in _FIELDS)
    if unknown:
        raise ValueError(
            f"unknown template field {{{unknown[0]}}} in {template!r} (allowed: {{path}}, {{dir}}, {{name}}, {{stem}})"
        )
    if not fields & _NAMING_FIELDS:
        raise ValueError(
            f"{template!r} names no file ({{name}}, {{stem}} or {{path}}); every file would get the same name"
        )
    if any(ord(c) < 0x20 or c == "\x7f" for c in template):
        raise ValueError("must not contain control characters")
    if template.startswith("/"):
        raise ValueError("must be relative to the source root")
    if ".." in template.split("/"):
        raise ValueError("must stay inside the source root (no '..')")
    for literal, _ in parts:
        for directive in _DIRECTIVE.findall(literal):
            if directive[1] not in "aAbBdHIjmMpSUwWyYGuVzZ%":
                raise ValueError(f"unknown strftime field {directive!r} in {template!r}")
    # Render a sample to catch what only shows once filled in (e.g. a target that is the root itself).
    render_target(template, "dir/file.csv", 0.0, "UTC")
    return template


def render_target(template: str, path: str, at: float, timezone: str) -> str:
    """The target path of ``path`` under ``template`` at settle time ``at``; raises ``ValueError``
    when it would leave the source root."""
    when = datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo(timezone))
    values = split_path(path)
    out = []
    # strftime applies to the template's own text only: a '%' in a file name stays as it is.
    for literal, field in _parse(template):
        out.append(when.strftime(literal) if literal else "")
        if field is not None:
            out.append(values[field])
    target = posixpath.normpath("".join(out))
    if target.startswith(("/", "../")) or target in (".", "", ".."):
        raise ValueError(f"target {target!r} is outside the source root")
    return target


def _glob_literal(text: str) -> str:
    escaped = _GLOB_SPECIAL.sub(r"\\\1", text.replace("%%", "\0"))
    return re.sub(r"(%.)+", "*", escaped).replace("\0", "%")


def target_excludes(template: str) -> list[str]:
    """Globs that cover every target ``template`` can produce, so moved files are never detected.

    A fixed leading directory (``archive/`` of ``archive/%Y/{name}``) is excluded as a whole, which
    also keeps listings from descending into it; otherwise the template itself becomes a glob.
    """
    parts = _parse(template)
    fixed = (parts[0][0] if parts else "").split("%", 1)[0]
    fixed_dir = posixpath.normpath(fixed.rsplit("/", 1)[0]) if "/" in fixed else ""
    if fixed_dir and fixed_dir != ".":
        escaped = _GLOB_SPECIAL.sub(r"\\\1", fixed_dir)
        return [escaped, f"{escaped}/**"]
    glob = []
    for literal, field in parts:
        glob.append(_glob_literal(literal))
        if field is not None:
            glob.append({"path": "**/*", "dir": "**"}.get(field, "*"))
    return ["".join(glob)]


def still_the_version(version: SettleVersion, now: Entry | None, server_checksum: str | None) -> str | None:
    """Why the file is no longer the settled version, or None when it still is."""
    if now is None:
        return "changed since reported: the file is gone"
    if now.size != version.size or now.mtime != version.mtime:
        return (
            f"changed since reported: size/mtime now {now.size}/{now.mtime!r}, "
            f"reported {version.size}/{version.mtime!r}"
        )
    if server_checksum is not None and version.checksum is not None and server_checksum != version.checksum:
        return "changed since reported: the server's checksum differs"
    return None
