"""Powertools logger and metrics, one pair per function (its `Telemetry`), built by its container.

The local stack runs every function (api, authorizer, send-worker, sweeper) in one process, several
invocations of one function at once on threads. Powertools assumes one function per process, so:

- each function's Logger has its own service, `service_name(function)`, hence its own Python logger,
  handler and formatter: the keys one function sets never label another's lines. Infra sets the
  deployed POWERTOOLS_SERVICE_NAME from the same `service_name()`, so the two cannot disagree.
- the keys of an invocation (`Telemetry.handler`) and of a record (`Telemetry.record`) are thread-safe
  keys (`thread_safe_append_keys`, a context variable per thread), not the formatter's shared keys.
- Powertools' `Metrics` keeps its metric set in class attributes shared by every instance in the
  process: one function would flush another's metrics under its own `service` dimension. Each
  Telemetry's Metrics gets its own provider instead, whose metric set is also per thread (two
  concurrent invocations never serialize a set the other is adding to).
- EMF lines go to stdout (CloudWatch turns them into metrics on Lambda) or, where `PETREL_METRICS_FILE`
  names a file, are appended there: locally they are noise on the console. POWERTOOLS_METRICS_DISABLED
  (Powertools' own flag) drops them altogether.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled, resolve_cold_start_function_name
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

from petrel import resources

SERVICE_PREFIX = "petrel-"
# A file that receives the EMF lines instead of stdout (one JSON document a line, appended).
METRICS_FILE_ENV = "PETREL_METRICS_FILE"

Handler = Callable[[Any, Any], Any]


def service_name(function: str) -> str:
    """The service a function logs and measures as, `petrel-<function>` (`send-worker`, `api`, ...)."""
    return f"{SERVICE_PREFIX}{function}"


@dataclass
class _ThreadState:
    """One thread's share of a provider: what Powertools keeps as instance attributes."""

    metric_set: dict[str, Any] = field(default_factory=dict)
    dimension_set: dict[str, Any] = field(default_factory=dict)
    metadata_set: dict[str, Any] = field(default_factory=dict)
    dimension_sets: list[dict[str, str]] = field(default_factory=list)
    timestamp: int | None = None


class _EmfLines:
    """Where serialized EMF documents go: stdout, or appended to a file (one `write` per line, so the
    lines of several functions and threads never interleave)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def emit(self, document: object) -> None:
        line = json.dumps(document, separators=(",", ":"))
        if self.path is None:
            print(line, flush=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class ThreadLocalEmfProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider with its metric set per thread and its output chosen (`_EmfLines`).

    Everything else (validation, serialization, `log_metrics`) is Powertools' own; only the state it
    keeps between `add_metric` and `flush_metrics` and the `print` calls are replaced."""

    def __init__(self, *, namespace: str, service: str, lines: _EmfLines) -> None:
        self._local = threading.local()
        self._lines = lines
        super().__init__(namespace=namespace, service=service)

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            defaults = getattr(self, "default_dimensions", None) or {}
            state = _ThreadState(dimension_set={name: str(value) for name, value in defaults.items()})
            self._local.state = state
        return state

    @property
    def metric_set(self) -> dict[str, Any]:
        return self._state().metric_set

    @metric_set.setter
    def metric_set(self, value: dict[str, Any]) -> None:
        self._state().metric_set = value

    @property
    def dimension_set(self) -> dict[str, Any]:
        return self._state().dimension_set

    @dimension_set.setter
    def dimension_set(self, value: dict[str, Any]) -> None:
        self._state().dimension_set = value

    @property
    def metadata_set(self) -> dict[str, Any]:
        return self._state().metadata_set

    @metadata_set.setter
    def metadata_set(self, value: dict[str, Any]) -> None:
        self._state().metadata_set = value

    @property
    def dimension_sets(self) -> list[dict[str, str]]:
        return self._state().dimension_sets

    @dimension_sets.setter
    def dimension_sets(self, value: list[dict[str, str]]) -> None:
        self._state().dimension_sets = value

    @property
    def timestamp(self) -> int | None:
        return self._state().timestamp

    @timestamp.setter
    def timestamp(self, value: int | None) -> None:
        self._state().timestamp = value

    def add_metric(self, name: str, unit: MetricUnit | str, value: float, resolution: Any = 60) -> None:
        """Powertools prints a full set itself when a metric reaches its 100th value or the set its 100th
        metric; flush one value earlier through our output instead."""
        values = self.metric_set.get(name.strip(), {}).get("Value", [])
        if len(values) >= MAX_METRICS - 1 or (
            name.strip() not in self.metric_set and len(self.metric_set) >= MAX_METRICS - 1
        ):
            self._lines.emit(self.serialize_metric_set())
            self.metric_set.clear()
        super().add_metric(name=name, unit=unit, value=value, resolution=resolution)

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        """Powertools' flush, writing through our output (it would `print`)."""
        if not self.metric_set:
            if raise_on_empty_metrics:
                super().flush_metrics(raise_on_empty_metrics=True)  # raises Powertools' own error
            return
        if not is_metrics_disabled():
            self._lines.emit(self.serialize_metric_set())
        self.clear_metrics()

    def add_cold_start_metric(self, context: Any) -> None:
        """The ColdStart metric in a document of its own (Powertools uses `single_metric`, which prints)."""
        cold = ThreadLocalEmfProvider(namespace=str(self.namespace), service=str(self.service), lines=self._lines)
        cold.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
        cold.add_dimension(name="function_name", value=resolve_cold_start_function_name(self.function_name, context))
        cold.flush_metrics()


@dataclass(frozen=True)
class Telemetry:
    """A function's logger and metrics, and the two ways it labels lines: per invocation, per record."""

    function: str
    logger: Logger
    metrics: Metrics
    _cold: list[bool] = field(default_factory=lambda: [True], repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def handler(self, handler: Handler) -> Handler:
        """Wrap a Lambda handler: its invocation's keys on its lines (`with_context`), and its metrics
        flushed at its end."""
        wrapped: Handler = self.metrics.log_metrics(self.with_context(handler))
        return wrapped

    def with_context(self, handler: Handler) -> Handler:
        """Wrap a Lambda handler: the invocation's keys (`function_name`, `function_request_id`,
        `cold_start`) on this thread's lines only, per-record keys cleared at its start and end. Cold
        start is this function's first invocation in the process. Not the function's ARN or memory size,
        which Powertools' `inject_lambda_context` adds: every line of a function's log group would repeat
        them (a third of the API's access line, billed as log ingestion per request)."""

        @functools.wraps(handler)
        def invoke(event: Any, context: Any) -> Any:
            with self._lock:
                cold, self._cold[0] = self._cold[0], False
            self.logger.thread_safe_clear_keys()
            self.logger.thread_safe_append_keys(
                cold_start=cold, function_name=context.function_name, function_request_id=context.aws_request_id
            )
            try:
                return handler(event, context)
            finally:
                self.logger.thread_safe_clear_keys()

        return invoke

    @contextmanager
    def record(self, **keys: object) -> Iterator[None]:
        """Keys (`tenant_id`, `message_id`, `attempt`) on the lines logged on this thread inside the block,
        and removed after it, so the next record (or another function on this thread) does not inherit them."""
        self.logger.thread_safe_append_keys(**keys)
        try:
            yield
        finally:
            self.logger.thread_safe_remove_keys(keys)


def _metrics_path(metrics_file: str | os.PathLike[str] | None) -> Path | None:
    chosen = metrics_file if metrics_file is not None else os.environ.get(METRICS_FILE_ENV) or None
    return Path(chosen) if chosen is not None else None


def telemetry(function: str, *, metrics_file: str | os.PathLike[str] | None = None) -> Telemetry:
    """A function's logger and metrics. `function` is its role (`api`, `authorizer`, `send-worker`,
    `sweeper`); `metrics_file` (default: $PETREL_METRICS_FILE, else stdout) receives its EMF lines."""
    service = service_name(function)
    provider = ThreadLocalEmfProvider(
        namespace=resources.METRICS_NAMESPACE, service=service, lines=_EmfLines(_metrics_path(metrics_file))
    )
    # No `location` key (the module and line of the call): an error's line carries its traceback.
    logger = Logger(service=service, location=None)
    return Telemetry(function=function, logger=logger, metrics=Metrics(provider=provider))


def redact_address(address: str) -> str:
    """`j***@example.com`: logs never carry a full recipient address."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"
