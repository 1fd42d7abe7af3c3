"""One module per CLI command; each has ``add_parser(subparsers)`` and sets ``handler`` to its ``run``."""

from __future__ import annotations

from . import check, demo, serve, settle, state, watch

__all__ = ["COMMANDS"]

#: In the order ``ftpsource --help`` lists them.
COMMANDS = (serve, watch, demo, check, state, settle)
