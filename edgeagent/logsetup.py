"""Log output for every command: a level (``--log-level``) and a format (``--log-format``).

``text`` (the default) is one human-readable line per record, as before::

    2025-01-01 12:00:00,123 WARNING edgeagent.links: link down: ...

``json`` is one JSON object per line (JSON Lines), for log shippers::

    {"ts": "2025-01-01T12:00:00.123Z", "level": "warning", "logger": "edgeagent.links", "msg": "link down: ...",
     "peer": "12D3KooW..."}

with ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``msg``, then every field
passed with ``extra={...}``, and ``exc`` (the formatted traceback) when the record carries one.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final, TextIO

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "TEXT_FORMAT", "setup_logging"]

#: the levels ``--log-level`` takes, most output first
LEVELS: Final = ("debug", "info", "warning", "error")
#: the formats ``--log-format`` takes
FORMATS: Final = ("text", "json")
#: the ``text`` format's line
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: attributes every LogRecord has: anything else on a record came from ``extra=``
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.msecs)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"
        out: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs (so a second call replaces it, and only it).
    Without a stream of its own it writes to whatever ``sys.stderr`` is when a record comes."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follow = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow:
            self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str = "warning", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Send log records at ``level`` and above to ``stream`` (stderr) in ``fmt`` ("text" or "json").

    Replaces the handler an earlier call installed; other handlers on the root logger stay.
    Raises ValueError for a level or format not in :data:`LEVELS` / :data:`FORMATS`.
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use {' or '.join(FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
