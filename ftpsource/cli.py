"""Command line: ``ftpsource serve | watch | demo | check | state | settle``.

Every failure exits non-zero with one line naming the problem; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .commands import COMMANDS
from .errors import FtpsourceError
from .logging import setup_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftpsource", description="File-arrival event source for Argo Events.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_format, args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except FtpsourceError as exc:
        if args.debug:
            raise
        print(f"ftpsource {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(f"ftpsource {args.command}: unexpected error: {exc!r} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
