"""boto3 sessions and clients. Endpoints come from the standard AWS_ENDPOINT_URL settings (or an
explicit override per service, e.g. LocalStack for some services and moto for the others).

A container makes ONE session and builds all its clients on it: building a client loads the service's
model through its session's loader, and a shared session loads the shared parts once (measured: four
clients cost ~500 ms CPU with a session each, ~200 ms with one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.config import Config

if TYPE_CHECKING:
    from boto3.session import Session

# Retries in the standard mode (with its retry quota), and bounded connect/read times: a Lambda that
# waits on a dead endpoint should fail and be retried, not use up its whole timeout.
_MAX_ATTEMPTS = 5
_CONNECT_TIMEOUT, _READ_TIMEOUT = 5, 20
# S3 pre-signed URLs: SigV4 (botocore would otherwise presign with the legacy SigV2 in some regions).
_SIGNATURE_VERSIONS = {"s3": "s3v4"}


def new_session() -> Session:
    """A fresh boto3 session (credentials and region from the environment, as boto3 resolves them)."""
    import boto3

    return boto3.session.Session()


def client_config(service: str) -> Config:
    """Petrel's botocore configuration for `service`: retries, timeouts, and S3's signature version.

    A new Config each time: building a client rewrites its config's `retries` in place (botocore turns
    `max_attempts` into `total_max_attempts`), so a shared one would not stay as written here."""
    return Config(
        retries={"mode": "standard", "max_attempts": _MAX_ATTEMPTS},
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
        signature_version=_SIGNATURE_VERSIONS.get(service),
    )


def new_client(session: Session, service: str, *, endpoint_url: str | None = None) -> Any:
    """A client of `service` on `session` with Petrel's configuration. Clients are thread-safe for
    calls, so one per service per container is shared by every thread of the function."""
    return session.client(service, config=client_config(service), endpoint_url=endpoint_url)  # type: ignore[call-overload]
