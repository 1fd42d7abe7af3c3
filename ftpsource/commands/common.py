"""What every command shares: environment defaults, reading a config file, the common flags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..config import SourceConfig, parse_source_config
from ..errors import ConfigError

__all__ = ["STATE_HELP", "STATE_PASSWORD_HELP", "add_common", "env", "path_or_none", "read_config"]

STATE_HELP = "SQLite state file (local disk), or postgresql://user@host:port/db?sslmode=... shared by replicas"
STATE_PASSWORD_HELP = "file holding the PostgreSQL password (else libpq's PGPASSWORD/PGPASSFILE)"


def env(name: str, default: str | None = None) -> str | None:
    """``$FTPSOURCE_<name>``, or ``default`` when unset (set but empty stays empty: it can disable)."""
    return os.environ.get(f"FTPSOURCE_{name}", default)


def path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def read_config(path: str) -> SourceConfig:
    """Read and validate a source config file; errors name the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    try:
        return parse_source_config(raw)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {exc.problems[0]}", *exc.problems[1:]]) from None


def add_common(p: argparse.ArgumentParser) -> None:
    """Logging flags every command takes."""
    p.add_argument("--log-format", choices=["json", "text"], default=env("LOG_FORMAT"))
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    p.add_argument("--debug", action="store_true", help="show tracebacks")
