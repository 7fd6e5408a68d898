"""The admin API as `make run` serves it, for the `petrel` command's integration tests: the local front
(local/front.py) with its SigV4 check, in front of the real admin function (its container on a moto
server). local.json's `api_url` points the CLI at it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3

from local import handlers
from local.aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from local.front import ApiFront
from local.lambda_runtime import Handler
from local.provision import LocalResources
from local.sigv4 import SigningCredentials
from petrel import resources as r
from petrel.container.base import AwsClients

ADMIN_SERVICES = ("dynamodb", "secretsmanager", "sqs")


def _deny(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The tenant API's authorizer: these tests call the admin API only."""
    return {"principalId": "none", "policyDocument": {"Statement": [{"Effect": "Deny"}]}}


def _no_api(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    raise AssertionError("the tenant API is not part of these tests")


@contextmanager
def admin_front(
    made: LocalResources,
    session: boto3.session.Session,
    endpoint: str,
    region: str,
    *,
    dns_resolvers: str = "",
) -> Iterator[str]:
    """The front's URL while it runs (on a free loopback port), serving /v1/admin only."""
    env = made.environment()
    if dns_resolvers:
        env[r.DNS_RESOLVERS_ENV] = dns_resolvers
    clients = AwsClients(session, endpoint_urls=dict.fromkeys(ADMIN_SERVICES, endpoint))
    function = handlers.admin_api(env, clients)
    function.container.telemetry  # noqa: B018 (built now: its log lines go to this stream, not a test's capture)
    admin: Handler = function.handler
    front = ApiFront(
        "127.0.0.1",
        0,
        _deny,
        _no_api,
        admin=admin,
        credentials=SigningCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, region),
    )
    front.start()
    try:
        yield front.url
    finally:
        front.stop()
