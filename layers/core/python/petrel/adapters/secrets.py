"""Secrets Manager: tenants' SMTP passwords, under the environment's tenants prefix."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError


class SecretsManagerStore:
    def __init__(self, client: Any) -> None:
        self._sm = client

    def get_secret(self, name: str) -> str:
        value: str = self._sm.get_secret_value(SecretId=name)["SecretString"]
        return value

    def put_secret(self, name: str, value: str) -> None:
        try:
            self._sm.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            self._sm.create_secret(Name=name, SecretString=value)

    def delete_secret(self, name: str) -> None:
        try:
            self._sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
