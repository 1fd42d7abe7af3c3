"""PURE: where a version's bytes land in object storage (``stage``).

The object key is ``<prefix>/<key template>``; the default template is content-addressed,
``sha256/{sha256}``, so identical bytes from any path or source share one object.
"""

from __future__ import annotations

import posixpath
import re
import string
from dataclasses import dataclass

from .model import Staged

__all__ = [
    "DEFAULT_KEY",
    "KEY_FIELDS",
    "StageTarget",
    "check_key_template",
    "parse_s3_url",
    "render_key",
    "where_staged",
]

DEFAULT_KEY = "sha256/{sha256}"
KEY_FIELDS = frozenset({"source_id", "path", "name", "sha256", "generation"})
# S3's bucket naming rules (as MinIO enforces them): 3-63 lowercase letters, digits, '.', '-'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, slots=True)
class StageTarget:
    bucket: str
    prefix: str  # without leading or trailing '/'; may be empty
    key_template: str

    def key(self, *, source_id: str, path: str, sha256: str, generation: int) -> str:
        return render_key(self, source_id=source_id, path=path, sha256=sha256, generation=generation)

    @property
    def needs_digest(self) -> bool:
        """Whether the key is known only once every byte was hashed."""
        return "{sha256}" in self.key_template


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``; raises ``ValueError`` naming the problem."""
    if not url.startswith("s3://"):
        raise ValueError("must be an s3://bucket/prefix URL")
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError("bucket: 3-63 lowercase letters, digits, '.' and '-'")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError("prefix: no empty, '.' or '..' segments")
    return bucket, prefix


def check_key_template(template: str) -> str:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"invalid key template {template!r}: {exc}") from None
    unknown = sorted(fields - KEY_FIELDS)
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in sorted(KEY_FIELDS))
        raise ValueError(f"unknown key field {{{unknown[0]}}} (allowed: {allowed})")
    if not fields & {"sha256", "path", "name"}:
        raise ValueError("the key must use {sha256}, {path} or {name}; every file would get the same object")
    if "{sha256}" not in template and "{generation}" not in template:
        raise ValueError("the key must use {sha256} or {generation}, or a new version would replace the old one")
    if template.startswith("/") or any(c < " " for c in template):
        raise ValueError("must be relative to the prefix, without control characters")
    # The fields never render to '.', '..' or '' (names are checked, ids start with a letter or
    # digit); the template's own text must not either, or a key could leave its prefix once an
    # HTTP client or the store folds the segments.
    sample = template.format(**dict.fromkeys(KEY_FIELDS, "x"))
    if any(part in ("", ".", "..") for part in sample.split("/")):
        raise ValueError("must stay under the prefix: no empty, '.' or '..' segments")
    return template


def render_key(target: StageTarget, *, source_id: str, path: str, sha256: str, generation: int) -> str:
    name = posixpath.basename(path)
    values = {"source_id": source_id, "path": path, "name": name, "sha256": sha256, "generation": generation}
    key = target.key_template.format(**values)
    return f"{target.prefix}/{key}" if target.prefix else key


def where_staged(target: StageTarget, *, source_id: str, path: str, generation: int, sha256: str, size: int) -> Staged:
    """Where a staged version's bytes are: the key is rendered from the version alone, so this is the
    same ``Staged`` its ready event carried (as long as the ``stage`` config has not changed since)."""
    key = target.key(source_id=source_id, path=path, sha256=sha256, generation=generation)
    return Staged(f"s3://{target.bucket}/{key}", target.bucket, key, size, sha256)
