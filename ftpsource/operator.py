"""Operator commands: ``check`` (dry run against a source), ``state`` (inspect and forget), ``demo``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["HANDLERS", "add_commands"]

HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_commands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the operator subcommands (filled in as they are built)."""
