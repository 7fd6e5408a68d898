"""The local front's per-tenant throttle (local.front.TenantThrottle): what API Gateway's usage plans do
deployed. Over HTTP on loopback, with the real authorizer (its usageIdentifierKey) and the api function
on the in-memory fakes.

Invariants: a tenant never gets more requests through than its plan's burst plus its rate times the
time passed; a refusal is the API's 429 problem with Retry-After, before the api function runs; one
tenant's flood never takes another tenant's tokens; a tenant on no known plan is refused (403)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from local.front import ApiFront, PlanLimits, TenantThrottle
from petrel.entrypoints.authorizer import create_authorizer
from petrel.models.records import Tenant
from petrel.observability import Telemetry, telemetry
from petrel.services.auth import mint_api_key
from tests.fakes import FakeWorld
from tests.unit.api_fakes import Api

PLANS = {"standard": PlanLimits(rate_per_second=2.0, burst=3), "bulk": PlanLimits(rate_per_second=50.0, burst=100)}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _AuthorizerPorts:
    tenants: Any
    telemetry: Telemetry = field(default_factory=lambda: telemetry("authorizer"))
    usage_key_prefix: str = "petrel-local"


@dataclass
class Stack:
    front: ApiFront
    world: FakeWorld
    clock: ManualClock
    calls: list[str]  # the tenants whose requests reached the api function
    keys: dict[str, str]  # tenant -> API key

    def get(self, tenant_id: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.front.url}/v1/emails", headers={"Authorization": f"Bearer {self.keys[tenant_id]}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as refused:
            return refused.code, dict(refused.headers), json.loads(refused.read() or b"{}")


@pytest.fixture
def stack(world: FakeWorld) -> Iterator[Stack]:
    clock = ManualClock()
    keys: dict[str, str] = {}
    for tenant_id, plan in (("tn_flood", "standard"), ("tn_calm", "standard"), ("tn_big", "bulk"), ("tn_odd", "gold")):
        world.tenants.put_tenant(
            Tenant(tenant_id=tenant_id, name=tenant_id, created_at=world.clock.now(), api_plan=plan)
        )
        keys[tenant_id] = mint_api_key(world.tenants, world.clock, tenant_id).secret
    api = Api(world)
    calls: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(event["requestContext"]["authorizer"]["tenant_id"])
        return api(event)

    def plan_of(tenant_id: str) -> str | None:
        tenant = world.tenants.get_tenant(tenant_id)
        return tenant.api_plan if tenant else None

    throttle = TenantThrottle(PLANS, plan_of, clock=clock)
    front = ApiFront("127.0.0.1", 0, create_authorizer(_AuthorizerPorts(world.tenants)), handler, throttle=throttle)
    front.start()
    yield Stack(front, world, clock, calls, keys)
    front.stop()


def test_a_tenant_over_its_plan_gets_429_and_another_is_not_affected(stack: Stack) -> None:
    burst = PLANS["standard"].burst
    statuses = [stack.get("tn_flood")[0] for _ in range(burst + 4)]
    assert statuses == [200] * burst + [429] * 4
    assert stack.calls == ["tn_flood"] * burst  # the refused ones never reached the api function

    status, headers, problem = stack.get("tn_flood")
    assert status == 429
    assert headers["Content-Type"] == "application/problem+json"
    assert (problem["type"], problem["status"]) == ("urn:petrel:problem:too-many-requests", 429)
    assert int(headers["Retry-After"]) == problem["retry_after"] == 1  # 2/s: a token within the second

    # The other tenant on the same plan has its own bucket, full.
    assert [stack.get("tn_calm")[0] for _ in range(burst)] == [200] * burst
    # The flooding tenant gets tokens back at its plan's rate: two in one second, not more.
    stack.clock.now += 1.0
    assert [stack.get("tn_flood")[0] for _ in range(3)] == [200, 200, 429]


def test_each_tenant_has_its_plans_numbers_and_an_unknown_plan_is_refused(stack: Stack) -> None:
    assert [stack.get("tn_big")[0] for _ in range(10)] == [200] * 10  # bulk: burst 100
    status, _, problem = stack.get("tn_odd")
    assert status == 403 and "not enrolled" in problem["detail"]
    assert "tn_odd" not in stack.calls


def test_a_plan_change_applies_once_the_cached_plan_expires(stack: Stack) -> None:
    burst = PLANS["standard"].burst
    assert [stack.get("tn_flood")[0] for _ in range(burst + 1)] == [200] * burst + [429]
    tenant = stack.world.tenants.get_tenant("tn_flood")
    assert tenant is not None
    stack.world.tenants.put_tenant(tenant.model_copy(update={"api_plan": "bulk"}))
    stack.clock.now += 0.1  # within the cache: still the old plan, and no token yet
    assert stack.get("tn_flood")[0] == 429
    stack.clock.now += 10.0
    assert [stack.get("tn_flood")[0] for _ in range(20)] == [200] * 20
