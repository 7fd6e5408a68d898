"""Powertools logger and metrics, one of each per function, built on first use."""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools import Logger, Metrics


@cache
def logger() -> Logger:
    return Logger()


@cache
def metrics() -> Metrics:
    return Metrics()


def redact_address(address: str) -> str:
    """`j***@example.com`: logs never carry a full recipient address."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"
