"""The decision core stays pure: no I/O library and nothing from ftpsource outside ``core``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "ftpsource" / "core"

#: Top-level modules the core may never import: I/O, concurrency, databases, network, processes.
FORBIDDEN = frozenset(
    {
        "asyncio",
        "sqlite3",
        "psycopg",
        "asyncpg",
        "grpc",
        "grpc_health",
        "socket",
        "ssl",
        "http",
        "urllib3",
        "aioftp",
        "asyncssh",
        "ftplib",
        "inotify_simple",
        "threading",
        "concurrent",
        "multiprocessing",
        "subprocess",
        "os",
        "shutil",
        "io",
        "pathlib",
        "tempfile",
        "select",
        "selectors",
        "signal",
        "requests",
        "httpx",
        "boto3",
        "aiobotocore",
        "obstore",
        "prometheus_client",
        "logging",
        "time",
    }
)


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) of every import in a module, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


MODULES = sorted(CORE.rglob("*.py"))


def test_core_has_modules() -> None:
    names = {p.stem for p in MODULES}
    assert {"model", "detect", "expect", "events", "paths", "formats", "listing"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_imports_no_io_and_nothing_outside_core(path: Path) -> None:
    problems = []
    for line, module, level in _imports(path):
        top = module.split(".")[0]
        if level == 0 and top in FORBIDDEN:
            problems.append(f"{path.name}:{line}: imports {module} (I/O)")
        if level == 0 and top == "ftpsource" and not module.startswith("ftpsource.core"):
            problems.append(f"{path.name}:{line}: imports {module} (outside core)")
        if level > 1:
            problems.append(f"{path.name}:{line}: relative import leaves core (level {level})")
    assert not problems, "\n".join(problems)


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom ..store import Store\nfrom ftpsource.watcher import Watcher\n")
    found = _imports(bad)
    assert (1, "asyncio", 0) in found
    assert (2, "store", 2) in found
    assert (3, "ftpsource.watcher", 0) in found
