"""Secrets Manager: tenants' SMTP passwords, under the environment's tenants prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from petrel.ports import AlreadyExists, RecordNotFound

if TYPE_CHECKING:
    from types_boto3_secretsmanager.client import SecretsManagerClient

_NOT_FOUND = "ResourceNotFoundException"
_EXISTS = "ResourceExistsException"
RECOVERY_WINDOW_DAYS = 7  # a deleted secret's name stays taken this long (create_secret refuses it)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _deleted(exc: ClientError) -> bool:
    """A secret scheduled for deletion answers InvalidRequestException: for Petrel, it is gone."""
    return _code(exc) == "InvalidRequestException" and "delet" in str(exc).lower()


class SecretsManagerStore:
    def __init__(self, client: SecretsManagerClient) -> None:
        self._sm = client

    def get_secret(self, name: str) -> str:
        try:
            return self._sm.get_secret_value(SecretId=name)["SecretString"]
        except ClientError as exc:
            if _code(exc) == _NOT_FOUND or _deleted(exc):
                raise RecordNotFound(f"no secret {name}") from exc
            raise

    def put_secret(self, name: str, value: str) -> None:
        try:
            self._sm.put_secret_value(SecretId=name, SecretString=value)
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise
            self._sm.create_secret(Name=name, SecretString=value)

    def create_secret(self, name: str, value: str) -> None:
        """CreateSecret alone: a live secret of that name answers ResourceExistsException, one in its
        recovery window InvalidRequestException ("already scheduled for deletion"; moto answers the
        former for both): either is AlreadyExists, with nothing written."""
        try:
            self._sm.create_secret(Name=name, SecretString=value)
        except ClientError as exc:
            if _code(exc) == _EXISTS or _deleted(exc):
                raise AlreadyExists(f"a secret {name} exists, or was deleted less than 7 days ago") from exc
            raise

    def delete_secret(self, name: str) -> None:
        try:
            self._sm.delete_secret(SecretId=name, RecoveryWindowInDays=RECOVERY_WINDOW_DAYS)
        except ClientError as exc:
            if _code(exc) == _NOT_FOUND or _deleted(exc):
                raise RecordNotFound(f"no secret {name}") from exc
            raise
