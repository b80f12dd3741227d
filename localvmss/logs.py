"""How the daemon's log lines look: for journald, for a terminal or file, or as JSON.

When stderr is the journal (systemd sets ``JOURNAL_STREAM=<st_dev>:<st_ino>`` of the stream it
connected, see systemd.exec(5)), every line starts with the sd-daemon priority prefix ``<N>``
(sd-daemon(3)) and carries no timestamp: journald records the time and strips the prefix, so
``journalctl -p err`` finds errors. A traceback's every line gets the prefix, since journald reads
each line as its own entry. Elsewhere lines are timestamped. ``json`` writes one object per line
(the prefix too when stderr is the journal, so the priority is kept). Called once by the daemon's
``main`` (again on reload); it replaces the root logger's handlers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

from localvmss.errors import InvalidSpec

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_TEXT_FORMAT = "%(name)s: %(message)s"  # journald has the time and the priority

# sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7 (CRITICAL is SD_CRIT 2).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

# Every attribute a plain LogRecord has: anything else was passed with ``extra=`` and is data.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (custom levels fall to the next standard one below)."""
    for level, prio in _PRIORITIES:
        if levelno >= level:
            return prio
    return 7


def stream_is_journal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """True if ``stream`` is the very stream systemd connected to the journal: JOURNAL_STREAM is
    inherited by children whose stderr may point elsewhere, so its device and inode must match."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file (pytest's capture)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalPrefix(logging.Formatter):
    """Wraps a formatter: ``<N>`` in front of every line of its output."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO-8601, UTC), level, logger, message, exception (its
    text, when there is one) and every ``extra=`` field (scale_set, instance, action, reason ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in out:
                out[key] = value
        return json.dumps(out, default=str, ensure_ascii=False)


def make_formatter(fmt: str, journal: bool) -> logging.Formatter:
    """The formatter for ``fmt`` ("text" or "json"); InvalidSpec names the choices."""
    if fmt == "json":
        inner: logging.Formatter = JsonFormatter()
    elif fmt == "text":
        inner = logging.Formatter(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
    else:
        raise InvalidSpec(f"log format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    return JournalPrefix(inner) if journal else inner


def configure_logging(level: int, fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """The root logger at ``level`` with one handler on ``stream`` (stderr), formatted for the
    journal when stderr is the journal; returns the handler."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt, stream_is_journal(stream)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
