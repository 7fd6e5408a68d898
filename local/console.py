"""The `make run` console: one readable line per event, no metric JSON.

Powertools' Metrics print each flush as one line of CloudWatch EMF JSON on stdout (deployed, CloudWatch
Logs turns them into metrics). Locally they would bury the log lines, so `MetricsToFile` sends every
EMF line to a file under the work directory and everything else to the console.

Powertools' Logger writes one JSON document a line: right for CloudWatch Logs Insights, hard to read in a
terminal. `ConsoleFormatter` is Powertools' own formatter (the same keys: the invocation's, the record's
`tenant_id`/`message_id`/`attempt`, the line's extras) with a text rendering instead of JSON:

    11:52:03.412 INFO    api         request method=POST path=/v1/emails status=202 duration_ms=41.2 tenant_id=t_1
    11:52:03.530 INFO    send-worker delivery attempt email_id=e_1 message_id=m_1 attempt=1 outcome=relayed ...

`ConsoleLogs` puts it on the functions' loggers for `make run` (LOG_FORMAT=text, the default there) and
puts their JSON formatters back when the stack stops; on Lambda nothing of this is loaded. The local
timer runs the IMAP poller every few seconds (deployed: every minute), so the text console leaves out
an idle poll's line (`IdlePolls`); a poll that fetched mail or failed still shows, and JSON keeps all.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

EMF_PREFIX = '{"_aws":'
LOG_FORMATS = ("text", "json")
# The keys worth reading, in the order they are printed: an API request's access line, then a delivery
# attempt's (its server by host), then who it was for. Other extras follow in the order they came.
IMPORTANT_KEYS = (
    "method",
    "path",
    "status",
    "email_id",
    "message_id",
    "attempt",
    "outcome",
    "detail",
    "smtp_code",
    "smtp_enhanced_code",
    "server_host",
    "duration_ms",
    "tenant_id",
)
# What Powertools puts on every line (the invocation's context, the format's own fields) and ids that
# only matter when searching deployed logs: left off the console.
QUIET_KEYS = frozenset(
    {
        "level",
        "location",
        "message",
        "timestamp",
        "service",
        "name",
        "sampling_rate",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "xray_trace_id",
        "request_id",
        "server_id",
        "exception",
        "exception_name",
        "exception_notes",
        "stack_trace",
    }
)
SERVICE_PREFIX = "petrel-"


def console_line(log: Mapping[str, Any]) -> str:
    """One structured log record as one short line: time, level, function, message, then key=value for
    the important keys and any other extras (a traceback, if any, on the lines after it)."""
    service = str(log.get("service") or "")
    function = service.removeprefix(SERVICE_PREFIX) if service else str(log.get("name") or "")
    message = log.get("message")
    text = message if isinstance(message, str) else _text(message)
    head = f"{log.get('timestamp', '')} {log.get('level', ''):<7} {function:<11} {text}"
    important = [key for key in IMPORTANT_KEYS if log.get(key) is not None]
    others = [key for key in log if key not in QUIET_KEYS and key not in IMPORTANT_KEYS and log[key] is not None]
    line = " ".join([head, *(f"{key}={_text(log[key])}" for key in important + others)])
    exception = log.get("exception")
    return f"{line}\n{exception}" if exception else line


def _text(value: object) -> str:
    """A value as it reads on the console: bare when it has no space, quoted otherwise."""
    if isinstance(value, str):
        return value if value and not any(c.isspace() or c in '="' for c in value) else json.dumps(value)
    return json.dumps(value, default=str, separators=(",", ":")) if isinstance(value, dict | list) else str(value)


class ConsoleFormatter(LambdaPowertoolsFormatter):
    """Powertools' formatter (the same keys, the same order of precedence) rendering `console_line`s
    instead of JSON (its documented extension point, `serialize`). The time is the local HH:MM:SS.mmm."""

    def __init__(self, **keys: Any) -> None:
        super().__init__(datefmt="%H:%M:%S.%F", serialize_stacktrace=False, **keys)

    def serialize(self, log: Mapping[str, Any]) -> str:
        return console_line(log)


def stdlib_console_formatter() -> ConsoleFormatter:
    """The same lines for the stdlib loggers (the local stack's own, `petrel.local`), labelled by name."""
    return ConsoleFormatter(name="%(name)s")


class IdlePolls(logging.Filter):
    """Drops the poller's per-mailbox line when the poll fetched nothing and met no error: on a timer of a
    few seconds those lines would bury everything else on the console."""

    MESSAGE = "mailbox polled"  # petrel.entrypoints.imap_poller's line for each mailbox read

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != self.MESSAGE or getattr(record, "fetched", None) != 0:
            return True
        folders = getattr(record, "folders", None)
        noteworthy = not isinstance(folders, list) or any(
            not isinstance(f, dict) or f.get("error") or f.get("uidvalidity_reset") or f.get("conflict")
            for f in folders
        )
        return bool(getattr(record, "error", None)) or noteworthy


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class ConsoleLogs:
    """The text console on a set of Powertools loggers, undone by `restore`.

    Each logger keeps its handler (and so its stream); only the handler's formatter changes, to a
    ConsoleFormatter holding the same keys (the service). The keys of an invocation and of a record are
    Powertools' thread-safe keys, kept in one context variable that every formatter reads."""

    def __init__(self) -> None:
        self._replaced: list[tuple[logging.Handler, logging.Formatter | None]] = []
        self._idle = IdlePolls()
        self._quiet = _WarningsOnly()
        self._quieted: list[logging.Handler] = []

    def quiet(self, loggers: Iterable[Logger]) -> None:
        """From now on only warnings and errors (a stop: the work still in flight finishes without a
        line, whatever the log format)."""
        for logger in loggers:
            handler = logger.registered_handler
            if handler not in self._quieted:
                handler.addFilter(self._quiet)
                self._quieted.append(handler)

    def install(self, loggers: Iterable[Logger]) -> None:
        for logger in loggers:
            handler = logger.registered_handler
            current = handler.formatter
            keys = dict(current.log_format) if isinstance(current, LambdaPowertoolsFormatter) else {}
            for key in ("level", "location", "message", "timestamp"):  # the format's own fields
                keys.pop(key, None)
            self._replaced.append((handler, current))
            handler.setFormatter(ConsoleFormatter(**keys))
            handler.addFilter(self._idle)

    def restore(self) -> None:
        """Every handler's formatter as it was before `install`."""
        for handler, formatter in reversed(self._replaced):
            handler.setFormatter(formatter)
            handler.removeFilter(self._idle)
        self._replaced.clear()
        for handler in self._quieted:
            handler.removeFilter(self._quiet)
        self._quieted.clear()


class MetricsToFile(io.TextIOBase):
    """A stdout that routes complete lines: EMF metric documents to `path`, the rest to `console`.

    `print` writes a line in two calls (the text, then the newline) and the functions run on threads,
    so each thread's partial line is kept apart until its newline arrives.
    """

    def __init__(self, console: TextIO, path: Path) -> None:
        super().__init__()
        self._console = console
        self._metrics = path.open("a", encoding="utf-8")
        self._partial = threading.local()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending: str = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        if lines:
            with self._lock:
                for line in lines:
                    target = self._metrics if line.startswith(EMF_PREFIX) else self._console
                    target.write(line + "\n")
                self._console.flush()
                self._metrics.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._console.flush()
            self._metrics.flush()

    def close(self) -> None:
        self.flush()
        self._metrics.close()
        super().close()
