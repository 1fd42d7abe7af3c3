"""The README stays true: its config reference matches the model, and its code blocks parse."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ftpsource.config import ExpectRule, ExpectSet, SourceConfig
from ftpsource.core.events import EVENT_TYPES
from tests.support.contract import READY_DATA_FIELDS_ALWAYS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _table_keys(after: str) -> list[str]:
    section = README[README.index(after) :]
    rows: list[str] = []
    for line in section.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        m = re.match(r"\| `([a-z_]+)` \|", line)
        if m:
            rows.append(m.group(1))
        elif line.startswith("|") or not line.strip():
            continue
        elif rows:
            break
    return rows


def _aliases(model: type[SourceConfig] | type[ExpectRule] | type[ExpectSet]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_config_reference_lists_every_key() -> None:
    keys = _table_keys("<!-- config-reference")
    assert set(keys) == _aliases(SourceConfig), "README config reference and SourceConfig differ"


def test_expect_reference_lists_every_key() -> None:
    keys = _table_keys("`expect` is a list of rules.")
    assert set(keys) == _aliases(ExpectRule) | _aliases(ExpectSet)


def test_event_types_are_documented() -> None:
    for t in EVENT_TYPES.values():
        assert f"`{t}`" in README


@pytest.mark.parametrize("block", _blocks("sh"))
def test_shell_blocks_are_valid_bash(block: str) -> None:
    r = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("block", _blocks("yaml"))
def test_yaml_blocks_parse(block: str) -> None:
    assert yaml.safe_load(block) is not None


def test_json_example_parses_and_has_every_ready_field() -> None:
    (block,) = _blocks("json")
    event = json.loads(block)
    assert set(event["data"]) >= READY_DATA_FIELDS_ALWAYS


def test_eventsource_example_config_is_valid() -> None:
    for block in _blocks("yaml"):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("kind") == "EventSource":
            for source in doc["spec"]["generic"].values():
                SourceConfig.model_validate(yaml.safe_load(source["config"]))
            return
    pytest.fail("no EventSource example in the README")


def test_serve_flags_are_documented() -> None:
    import argparse

    from ftpsource.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    flags = {o for a in serve._actions for o in a.option_strings if o.startswith("--")} - {"--help", "--debug"}
    documented = set(re.findall(r"\| `(--[a-z-]+)`", README)) | set(re.findall(r", `(--[a-z-]+)` \|", README))
    assert flags == documented


def test_layout_matches_the_package_tree() -> None:
    repo = Path(__file__).resolve().parents[2]
    block = README[README.index("Layout:") :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    package = block[block.index("ftpsource/\n") : block.index("\ntests/")]
    named_dirs = set(re.findall(r"^  ([a-z_]+)/", package, flags=re.M))
    named_files = set(re.findall(r"(?<![\w/])([a-z_]+\.py)\b", package.split("adapters/", 1)[1]))
    actual_dirs = {p.name for p in (repo / "ftpsource").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    actual_files = {p.name for p in (repo / "ftpsource").glob("*.py") if p.name != "__init__.py"}
    assert named_dirs == actual_dirs, "README layout: packages differ from ftpsource/"
    assert named_files == actual_files, "README layout: top-level modules differ from ftpsource/"
    core = package[package.index("core/") : package.index("adapters/")]
    core_modules = {p.stem for p in (repo / "ftpsource" / "core").glob("*.py") if p.name != "__init__.py"}
    missing = {m for m in core_modules if not re.search(rf"\b{m}\b", core)}
    assert not missing, f"README layout does not name core modules {sorted(missing)}"
