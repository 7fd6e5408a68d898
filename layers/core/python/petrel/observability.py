"""Powertools logger and metrics, one pair per function (its `Telemetry`), built by its container.

Each function gets its own Logger (service `petrel-<function>`, so its own Python logger and formatter:
two functions in one process, as in the local stack, never label each other's lines) and its own
Metrics. Per-record keys (tenant, message, attempt) go through `thread_safe_append_keys`, since the
local stack runs several invocations of one function on threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from aws_lambda_powertools import Logger, Metrics


@dataclass(frozen=True)
class Telemetry:
    logger: Logger
    metrics: Metrics


def telemetry(function: str) -> Telemetry:
    """A function's logger and metrics. `function` is its role (`api`, `send-worker`, ...)."""
    service = f"petrel-{function}"
    return Telemetry(logger=Logger(service=service), metrics=Metrics(service=service))


@cache
def logger() -> Logger:
    """Deprecated: the process-wide logger (moving to each container's `telemetry.logger`)."""
    return Logger()


@cache
def metrics() -> Metrics:
    """Deprecated: the process-wide metrics (moving to each container's `telemetry.metrics`)."""
    return Metrics()


def redact_address(address: str) -> str:
    """`j***@example.com`: logs never carry a full recipient address."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"
