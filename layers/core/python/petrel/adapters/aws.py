"""boto3 clients, built on first use. Endpoints come from the standard AWS_ENDPOINT_URL settings."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)
# S3 pre-signed URLs: SigV4 (botocore would otherwise presign with the legacy SigV2 in some regions).
_SERVICE_CONFIG = {"s3": Config(signature_version="s3v4")}


@cache
def client(service: str) -> Any:
    """One client per service per container (thread-safe for calls, cheap to share)."""
    config = _CONFIG.merge(_SERVICE_CONFIG[service]) if service in _SERVICE_CONFIG else _CONFIG
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
