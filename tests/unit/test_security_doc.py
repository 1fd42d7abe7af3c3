"""docs/security.md names, for each line of the threat model, the tests that prove it: they must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_named_in_the_security_page_exists() -> None:
    references = REFERENCE.findall(DOC)
    assert len(references) > 20
    missing = [f"{f}::{name}" for f, name in references if not (REPO / f).is_file() or name not in _tests_in(REPO / f)]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_line_of_the_threat_model_names_a_proof() -> None:
    actors = DOC[DOC.index("## The network") : DOC.index("## Not covered")]
    rows = [line for line in actors.splitlines() if line.startswith("| ") and not line.startswith(("| can", "|---"))]
    assert rows
    unproven = [row[:80] for row in rows if not REFERENCE.search(row)]
    assert not unproven, f"threat-model lines without a test: {unproven}"
