"""PURE path logic: include/exclude globs and marker/sidecar templates.

Paths are relative to the source root, ``/``-separated, without a leading slash.
Globs follow the product contract: they match the whole relative path and ``**`` spans directories,
so ``*.csv`` matches only top-level files and ``**/*.csv`` matches at any depth.
"""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Iterable, Mapping

from wcmatch import glob as wcglob

__all__ = ["PathFilter", "Template", "split_path"]

# wcmatch's translated globs cost several microseconds per path (a lookahead per character), and
# every poll asks about the same paths again: verdicts are memoised. The memo is dropped whenever it
# outgrows twice the latest listing (at least MEMO_MIN, at most MEMO_MAX paths), so it follows the live
# tree when names keep changing (a busy drop zone with daily turnover) instead of growing to the cap;
# a tree bigger than MEMO_MAX simply pays the regex again.
MEMO_MIN = 10_000
MEMO_MAX = 250_000


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    pats = list(patterns)
    if not pats:
        return None
    regexes, _ = wcglob.translate(pats, flags=wcglob.GLOBSTAR | wcglob.DOTGLOB)
    return re.compile("|".join(f"(?:{r})" for r in regexes))


class PathFilter:
    """Decides which relative paths are candidates and which directories are worth descending into."""

    def __init__(self, include: Iterable[str], exclude: Iterable[str], recursive: bool) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude)
        self.recursive = recursive
        self._wanted: dict[str, bool] = {}
        self._memo_limit = MEMO_MAX

    def descend(self, rel_dir: str) -> bool:
        """Whether to list a subdirectory. Excluded directories (e.g. hidden ones) are pruned."""
        if not self.recursive:
            return False
        return self._exclude is None or self._exclude.match(rel_dir) is None

    @property
    def verdicts(self) -> Mapping[str, bool]:
        """The verdicts ``wanted`` reached so far: a hot loop's way past the call for a known path."""
        return self._wanted

    def expect(self, listed: int) -> None:
        """Size the memo for a listing of ``listed`` paths (called once per poll)."""
        self._memo_limit = min(MEMO_MAX, max(MEMO_MIN, 2 * listed))

    def wanted(self, rel_path: str) -> bool:
        verdict = self._wanted.get(rel_path)
        if verdict is None:
            verdict = self._match(rel_path)
            if len(self._wanted) >= self._memo_limit:
                self._wanted.clear()
            self._wanted[rel_path] = verdict
        return verdict

    def in_scope(self, rel_path: str) -> bool:
        """Whether a listing would show ``rel_path`` and the filters select it: every directory on the
        way is descended into (``recursive``, excluded directories) and the path itself is wanted."""
        if not self.wanted(rel_path):
            return False
        parts = rel_path.split("/")[:-1]
        return all(self.descend("/".join(parts[: i + 1])) for i in range(len(parts)))

    def _match(self, rel_path: str) -> bool:
        if self._exclude is not None and self._exclude.match(rel_path) is not None:
            return False
        return self._include is None or self._include.match(rel_path) is not None


def split_path(path: str) -> dict[str, str]:
    """The template fields of a relative path: ``path``, ``dir`` (``.`` at the root), ``name``, ``stem``."""
    directory, name = posixpath.split(path)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return {"path": path, "dir": directory or ".", "name": name, "stem": stem}


class Template:
    """A marker or sidecar template such as ``{path}.done``, ``{dir}/_SUCCESS`` or ``{path}.sha256``.

    ``render`` names the companion of a data file; ``matches`` tells whether a listed path *is* a
    companion file (so it is never reported as data itself).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        body = template
        prefix = ""
        if body.startswith("{dir}/"):
            # "{dir}" renders as "." at the root, where the companion is just the bare name.
            body, prefix = body[len("{dir}/") :], "(?:.+/)?"
        pattern = prefix
        for literal, field, _, _ in string.Formatter().parse(body):
            pattern += re.escape(literal)
            if field is not None:
                pattern += "[^/]+" if field in ("name", "stem") else ".+"
        self._regex = re.compile(pattern)
        self.per_directory = "{path}" not in template and "{name}" not in template and "{stem}" not in template

    def render(self, path: str) -> str:
        out = self.template.format(**split_path(path))
        return out[2:] if out.startswith("./") else out

    def matches(self, path: str) -> bool:
        return self._regex.fullmatch(path) is not None
