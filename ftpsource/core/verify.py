"""Verifiers fed while a file is hashed: the sidecar checksum and format checks, combined.

A sidecar is just another verifier: it hashes the same stream with the sidecar's algorithm (which may
differ from the configured ``checksum``) and compares at the end, so the file is read once.
"""

from __future__ import annotations

import hashlib
import posixpath

from .formats import SidecarError, parse_sidecar
from .model import Verifier

__all__ = ["CombinedVerifier", "SidecarVerifier", "build_verifier"]


class SidecarVerifier:
    def __init__(self, algorithm: str, expected: str, sidecar_name: str) -> None:
        self._hasher = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._expected = expected.lower()
        self._sidecar_name = sidecar_name

    def update(self, chunk: bytes) -> None:
        self._hasher.update(chunk)

    def finish(self) -> str | None:
        actual = self._hasher.hexdigest()
        if actual == self._expected:
            return None
        # Says which sidecar, never what it holds: its content may be anything the uploader chose.
        return f"{self._algorithm} mismatch with sidecar {self._sidecar_name}: the file does not match it"


class CombinedVerifier:
    def __init__(self, verifiers: list[Verifier]) -> None:
        self._verifiers = verifiers

    def update(self, chunk: bytes) -> None:
        for v in self._verifiers:
            v.update(chunk)

    def finish(self) -> str | None:
        problems = [p for p in (v.finish() for v in self._verifiers) if p]
        return "; ".join(problems) if problems else None


def build_verifier(
    format_verifier: Verifier | None, sidecar_content: bytes | None, path: str, sidecar_path: str
) -> tuple[Verifier | None, str | None]:
    """Combine the format check with the sidecar check.

    Returns ``(verifier, problem)``; ``problem`` is set when the sidecar itself is unusable, in which
    case the version cannot be ready (it waits, then is rejected after ``reject_after``).
    """
    sidecar_name = posixpath.basename(sidecar_path)
    if sidecar_content is None:
        return format_verifier, f"sidecar {sidecar_name} disappeared before it could be read"
    try:
        expected = parse_sidecar(sidecar_content, posixpath.basename(path))
    except SidecarError as exc:
        return format_verifier, f"{sidecar_name}: {exc}"
    check = SidecarVerifier(expected.algorithm, expected.value, sidecar_name)
    if format_verifier is None:
        return check, None
    return CombinedVerifier([format_verifier, check]), None
