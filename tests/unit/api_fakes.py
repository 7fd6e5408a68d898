"""The API's ports from the in-memory fakes: what `create_api` is given in unit tests instead of an ApiContainer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from petrel.entrypoints.api import create_api
from petrel.models import records
from petrel.observability import Telemetry, telemetry
from tests.fakes import FakeWorld
from tests.fakes.clock import FixedClock
from tests.fakes.dns import FakeResolver
from tests.fakes.idempotency import FakeIdempotencyStore
from tests.fakes.inbound import FakeInboundStore, FakeIngestQueue
from tests.fakes.infra import FakeBlobStore, FakeJobQueue, FakeRetryScheduler, FakeSecretStore
from tests.fakes.mailboxes import FakeMailboxStore
from tests.fakes.messages import FakeMessageStore
from tests.fakes.suppressions import FakeSuppressionStore
from tests.fakes.tenants import FakeTenantStore

# Every scope, as the authorizer puts them in its context (one key with all of them).
SCOPES = " ".join(records.SCOPES)


@dataclass
class FakeApiContainer:
    """An ApiContainer's ports (petrel.api.deps.ApiPorts), each the world's fake."""

    world: FakeWorld
    telemetry: Telemetry = field(default_factory=lambda: telemetry("api"))
    retention_days: int = 30
    inline_body_limit: int = 96 * 1024
    access_log: bool = True
    link_seconds: int = 900
    resolver: FakeResolver = field(default_factory=FakeResolver)  # sending domains' DNS
    secrets_prefix: str = "petrel-test/tenants/"

    @property
    def tenants(self) -> FakeTenantStore:
        return self.world.tenants

    @property
    def sender_config(self) -> FakeTenantStore:
        return self.world.tenants

    @property
    def messages(self) -> FakeMessageStore:
        return self.world.messages

    @property
    def suppressions(self) -> FakeSuppressionStore:
        return self.world.suppressions

    @property
    def idempotency(self) -> FakeIdempotencyStore:
        return self.world.idempotency

    @property
    def blobs(self) -> FakeBlobStore:
        return self.world.blobs

    @property
    def queue(self) -> FakeJobQueue:
        return self.world.queue

    @property
    def scheduler(self) -> FakeRetryScheduler:
        return self.world.scheduler

    @property
    def clock(self) -> FixedClock:
        return self.world.clock

    @property
    def inbound(self) -> FakeInboundStore:
        return self.world.inbound

    @property
    def ingest(self) -> FakeIngestQueue:
        return self.world.ingest_queue

    @property
    def secrets(self) -> FakeSecretStore:
        return self.world.secrets

    @property
    def mailboxes(self) -> FakeMailboxStore:
        return self.world.mailboxes


class LambdaContext:
    function_name = "petrel-api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:petrel-api"
    aws_request_id = "req-1"


def event(
    method: str,
    path: str,
    body: Any = None,
    *,
    tenant_id: str | None = "tn_a",
    scopes: str = SCOPES,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event, as the gateway builds it behind the authorizer."""
    context: dict[str, Any] = {"requestId": "req-1", "stage": "api", "path": f"/api{path}"}
    if tenant_id is not None:
        context["authorizer"] = {"tenant_id": tenant_id, "key_id": "key_1", "scopes": scopes}
    return {
        "resource": "/v1/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "queryStringParameters": query,
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": context,
    }


class Api:
    """`create_api` over the fakes, called as Lambda calls it."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.handler = create_api(FakeApiContainer(world))

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.handler(event, LambdaContext())
        return result
