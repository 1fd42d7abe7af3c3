"""Structured logging: JSON lines (containers) or text (terminals).

Every line about a file carries ``source`` and ``path`` fields, passed as ``extra={...}``.
Secrets never reach a logger: credentials are ``Secret`` objects and URLs are logged without userinfo.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .core.text import printable

__all__ = ["setup_logging"]

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


# One encoder for every line (``json.dumps`` with options builds a new one per call), and the time
# formatted once a second: a burst logs a line per event, on the event loop.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out: dict[str, Any] = {
            "time": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info and record.exc_info[0] is not None:
            out["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A terminal acts on control characters: a server's reply or a file name must not rewrite it.
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {printable(record.getMessage())}"
        extras = _extras(record)
        if extras:
            base += "  " + " ".join(f"{k}={printable(str(v))}" for k, v in extras.items())
        if record.exc_info and record.exc_info[0] is not None:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup_logging(fmt: str | None = None, level: str = "INFO") -> None:
    """``fmt`` None picks text on a terminal and JSON otherwise."""
    if fmt is None:
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("ftpsource")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
