"""UsagePlans contract: the fake and the API Gateway adapter (under moto) behave alike, so the tenant
enrollment tested on the fake (tests/unit/test_admin_api.py) holds against API Gateway's API.

Invariants: one API key per name however often `ensure_key` runs; adding a key twice or removing one
that is not there changes nothing; enrolling a tenant again (or after a plan change) leaves its key in
exactly its plan's usage plan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from petrel.adapters.usage_plans import ApiGatewayUsagePlans
from petrel.models.records import Tenant
from petrel.ports import RecordNotFound, UsagePlans
from petrel.services import tenants
from tests.fakes import FakeWorld
from tests.fakes.usage_plans import FakeUsagePlans
from tests.integration.aws_env import REGION, clean_aws_environment

PLAN_NAMES = ("petrel-test-plan-standard", "petrel-test-plan-bulk")


@pytest.fixture(params=["fake", "moto"])
def plans(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[UsagePlans]:
    if request.param == "fake":
        yield FakeUsagePlans(PLAN_NAMES)
        return
    clean_aws_environment(monkeypatch)
    with mock_aws():
        client: Any = boto3.client("apigateway", region_name=REGION)
        api = client.create_rest_api(name="petrel-test")
        root = client.get_resources(restApiId=api["id"])["items"][0]["id"]
        client.put_method(restApiId=api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
        client.put_integration(restApiId=api["id"], resourceId=root, httpMethod="GET", type="MOCK")
        client.create_deployment(restApiId=api["id"], stageName="api")
        for name in PLAN_NAMES:
            client.create_usage_plan(name=name, apiStages=[{"apiId": api["id"], "stage": "api"}])
        yield ApiGatewayUsagePlans(client)


def test_a_key_is_made_once_per_name(plans: UsagePlans) -> None:
    assert plans.find_key("petrel-test-tenant-tn_a") is None
    first = plans.ensure_key("petrel-test-tenant-tn_a", "petrel-test.usage.tn_a")
    assert plans.ensure_key("petrel-test-tenant-tn_a", "petrel-test.usage.tn_a") == first
    assert plans.find_key("petrel-test-tenant-tn_a") == first
    # A name that only starts the same is another key.
    other = plans.ensure_key("petrel-test-tenant-tn_a2", "petrel-test.usage.tn_a2")
    assert other != first and plans.find_key("petrel-test-tenant-tn_a") == first
    plans.delete_key(other)
    assert plans.find_key("petrel-test-tenant-tn_a2") is None
    with pytest.raises(RecordNotFound):
        plans.delete_key(other)


def test_plans_are_found_by_name_and_keys_move_between_them(plans: UsagePlans) -> None:
    standard, bulk = (plans.plan_id(name) for name in PLAN_NAMES)
    assert standard != bulk
    with pytest.raises(RecordNotFound):
        plans.plan_id("petrel-test-plan-gold")
    key = plans.ensure_key("petrel-test-tenant-tn_a", "petrel-test.usage.tn_a")
    plans.add_key(standard, key)
    plans.add_key(standard, key)  # again: no change
    assert plans.plan_keys(standard) == {key} and plans.plan_keys(bulk) == set()
    plans.remove_key(standard, key)
    plans.remove_key(standard, key)  # not there: no error
    plans.add_key(bulk, key)
    assert plans.plan_keys(standard) == set() and plans.plan_keys(bulk) == {key}


def test_enrolling_again_leaves_the_key_in_its_plan_only(plans: UsagePlans) -> None:
    world = FakeWorld()
    deps = tenants.AdminDeps(
        tenants=world.tenants,
        secrets=world.secrets,
        clock=world.clock,
        secrets_prefix="petrel-test/tenants/",
        api_plans={"standard": PLAN_NAMES[0], "bulk": PLAN_NAMES[1]},
        usage_plans=plans,
        usage_key_prefix="petrel-test",
    )
    tenant = Tenant(tenant_id="tn_a", name="A", created_at=world.clock.now())
    for _ in range(2):
        done = tenants.enroll_tenant(deps, tenant)
    assert done.key_id is not None
    standard, bulk = (plans.plan_id(name) for name in PLAN_NAMES)
    assert plans.plan_keys(standard) == {done.key_id} and plans.plan_keys(bulk) == set()
    moved = tenants.enroll_tenant(deps, tenant.model_copy(update={"api_plan": "bulk"}))
    assert moved.key_id == done.key_id
    assert plans.plan_keys(standard) == set() and plans.plan_keys(bulk) == {done.key_id}
