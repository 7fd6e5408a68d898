"""The domain routes through `create_api` on the fakes: status codes, the view, scope and isolation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from petrel.entrypoints.api import create_api
from tests.fakes import FakeWorld, records
from tests.unit.api_fakes import FakeApiContainer, LambdaContext, event


class DomainApi:
    def __init__(self) -> None:
        self.world = FakeWorld()
        self.container = FakeApiContainer(self.world)
        self.handler = create_api(self.container)
        for tenant_id in ("tn_a", "tn_b"):
            self.world.tenants.put_tenant(records.tenant(tenant_id=tenant_id))
            self.world.tenants.put_server(records.server(tenant_id, host="mail.acme.test"))

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        result: dict[str, Any] = self.handler(event(method, path, body, **kw), LambdaContext())
        return result["statusCode"], json.loads(result["body"]) if result.get("body") else None

    def publish(self, view: dict[str, Any]) -> None:
        txt: dict[str, list[str]] = {}
        for record in view["records"]:
            if record["type"] == "MX":
                pref, host = record["value"].split()
                self.container.resolver.publish_mx(record["name"], (int(pref), host))
            else:
                txt.setdefault(record["name"], []).append(record["value"])
        for name, values in txt.items():
            self.container.resolver.publish_txt(name, *values)


@pytest.fixture
def api() -> DomainApi:
    return DomainApi()


def test_create_list_get_verify_delete(api: DomainApi) -> None:
    status, created = api("POST", "/v1/domains", {"domain": "Acme.Test", "ed25519": True})
    assert status == 201, created
    assert created["domain"] == "acme.test" and created["status"] == "pending" and not created["sending_allowed"]
    assert len(created["selectors"]) == 2 and created["signer"] == "petrel"
    assert {r["purpose"] for r in created["records"]} == {"spf", "dkim", "dmarc", "return_path_mx"}
    assert all("PRIVATE KEY" not in r["value"] for r in created["records"])
    assert api("GET", "/v1/domains")[1]["data"] == [created]
    assert api("GET", "/v1/domains/acme.test") == (200, created)
    api.publish(created)
    status, verified = api("POST", "/v1/domains/acme.test/verify")
    assert status == 200 and verified["status"] == "verified" and verified["sending_allowed"]
    assert [e["type"] for e in verified["events"]] == ["domain.verified"]
    status, rotating = api("POST", "/v1/domains/acme.test/rotate")
    assert status == 200 and len(rotating["selectors"]) == 3
    assert api("DELETE", "/v1/domains/acme.test") == (204, None)
    assert api("GET", "/v1/domains/acme.test")[0] == 404
    assert api.world.secrets.secrets == {}


def test_conflicts_and_invalid_values(api: DomainApi) -> None:
    assert api("POST", "/v1/domains", {"domain": "acme.test"})[0] == 201
    status, problem = api("POST", "/v1/domains", {"domain": "acme.test"})
    assert status == 409 and "already" in problem["detail"]
    status, problem = api("POST", "/v1/domains", {"domain": "acme.test"}, tenant_id="tn_b")
    assert status == 409 and "another tenant" in problem["detail"]
    status, problem = api("POST", "/v1/domains", {"domain": "no such thing"})
    assert status == 422 and problem["errors"][0]["pointer"] == "/domain"
    status, problem = api("POST", "/v1/domains", {"domain": "x.test", "signer": "rspamd"})
    assert status == 422


def test_another_tenants_domain_is_not_found(api: DomainApi) -> None:
    api("POST", "/v1/domains", {"domain": "acme.test"})
    for method, path in [
        ("GET", "/v1/domains/acme.test"),
        ("DELETE", "/v1/domains/acme.test"),
        ("POST", "/v1/domains/acme.test/verify"),
        ("POST", "/v1/domains/acme.test/rotate"),
    ]:
        assert api(method, path, tenant_id="tn_b")[0] == 404
    assert api("GET", "/v1/domains", tenant_id="tn_b") == (200, {"data": []})
    assert api("GET", "/v1/domains/acme.test")[0] == 200  # still there


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/domains"),
        ("GET", "/v1/domains"),
        ("GET", "/v1/domains/acme.test"),
        ("DELETE", "/v1/domains/acme.test"),
        ("POST", "/v1/domains/acme.test/verify"),
        ("POST", "/v1/domains/acme.test/rotate"),
    ],
)
def test_every_domain_route_needs_the_domains_scope(api: DomainApi, method: str, path: str) -> None:
    body = {"domain": "acme.test"} if path == "/v1/domains" and method == "POST" else None
    status, problem = api(method, path, body, scopes="send read suppressions inbound webhooks")
    assert status == 403 and "domains" in problem["detail"]


def test_sending_from_an_unverified_domain_is_a_422_naming_the_record(api: DomainApi) -> None:
    api("POST", "/v1/domains", {"domain": "acme.test"})
    email = {"from": "me@acme.test", "to": ["you@example.org"], "subject": "hi", "text": "hello"}
    status, problem = api("POST", "/v1/emails", email)
    assert status == 422 and problem["detail"] == "the sending domain acme.test is not verified"
    assert problem["errors"][0] == {"pointer": "/from", "detail": "the SPF record (TXT acme.test) is not verified yet"}
    api.world.tenants.put_tenant(records.tenant(tenant_id="tn_a", allow_unverified_domains=True))
    assert api("POST", "/v1/emails", email)[0] == 202
