"""boto3 clients, built on first use. Endpoints come from the standard AWS_ENDPOINT_URL settings."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)


@cache
def client(service: str) -> Any:
    """One client per service per container (thread-safe for calls, cheap to share)."""
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]
