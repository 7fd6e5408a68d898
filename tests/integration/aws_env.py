"""Keeping boto3 on moto: what the caller's environment must not contribute."""

from __future__ import annotations

import os

import pytest

REGION = "us-east-1"


def clean_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint override or profile from the caller's shell may steer boto3 past moto."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name)
