"""Protocol adapters behind one interface (``base.Source``); a new protocol is one new module."""

from __future__ import annotations

import importlib

__all__ = ["load_adapters"]

_MODULES = ("local", "ftp", "sftp")


def load_adapters() -> None:
    """Import every adapter module so its ``@register`` runs. Missing modules are skipped."""
    for name in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
