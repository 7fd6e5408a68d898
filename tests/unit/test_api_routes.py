"""api.routes over the fakes: batch isolation, idempotency on every POST, issue 7's contract (defects 2, 3, 8, 9)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from petrel import container
from petrel.api import routes
from petrel.models.records import Tenant
from petrel.services import submit
from petrel.services.attachments import AttachmentDeps
from petrel.services.submit import SubmitDeps
from tests.fakes import FakeWorld, Seeded


@dataclass
class FakeApi:
    """The ApiContainer's attributes, from the fakes."""

    world: FakeWorld

    def __getattr__(self, name: str) -> Any:
        if name == "submit":
            return self.world.submit_deps()
        if name == "attachments":
            return AttachmentDeps(blobs=self.world.blobs, clock=self.world.clock)
        return getattr(self.world, name)


@pytest.fixture
def seeded(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    seeded = world.seed()
    monkeypatch.setattr(container, "api", lambda: FakeApi(world))
    return seeded


def _call(seeded: Seeded, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
    event = {
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", **headers},
        "queryStringParameters": None,
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "requestContext": {
            "requestId": "req-1",
            "authorizer": {"tenant_id": seeded.tenant.tenant_id, "scopes": "emails:send emails:read"},
        },
    }
    return routes.dispatch(event)


def _email(**fields: Any) -> dict[str, Any]:
    return {"from": "jane@example.com", "to": ["bob@example.org"], "subject": "Hi", "text": "x", **fields}


def test_a_control_character_is_a_422_before_anything_is_stored(world: FakeWorld, seeded: Seeded) -> None:
    result = _call(seeded, "POST", "/v1/emails", _email(subject="a\x0bb"))
    assert result["statusCode"] == 422
    assert [e["pointer"] for e in json.loads(result["body"])["errors"]] == ["/subject"]
    assert world.messages.emails == {}


def test_a_batch_item_that_fails_unexpectedly_is_that_items_problem(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = submit.submit_email

    def flaky(deps: SubmitDeps, tenant: Tenant, request: Any, reads: Any = None) -> Any:
        if request.subject == "boom":
            raise RuntimeError("disk on fire")
        return real(deps, tenant, request, reads)

    monkeypatch.setattr(submit, "submit_email", flaky)
    batch = {"emails": [_email(), _email(subject="boom"), _email(subject="a\x85b"), _email()]}
    result = _call(seeded, "POST", "/v1/emails/batch", batch, **{"Idempotency-Key": "b-1"})

    assert result["statusCode"] == 202
    results = json.loads(result["body"])["results"]
    assert [r["status"] for r in results] == [202, 500, 422, 202]
    assert "disk on fire" not in result["body"]
    assert results[2]["error"]["errors"][0]["pointer"] == "/emails/2/subject"
    assert len(world.messages.emails) == 2
    # stored: the retry replays, it does not queue the good items again
    again = _call(seeded, "POST", "/v1/emails/batch", batch, **{"Idempotency-Key": "b-1"})
    assert again["body"] == result["body"] and again["headers"]["Idempotent-Replayed"] == "true"
    assert len(world.messages.emails) == 2 and len(world.queue.sent["transactional"]) == 2


def test_a_batch_with_no_valid_item_is_a_422_with_absolute_pointers(world: FakeWorld, seeded: Seeded) -> None:
    batch = {"emails": [_email(to=["nope"]), _email(pool="bulk")]}
    result = _call(seeded, "POST", "/v1/emails/batch", batch)

    assert result["statusCode"] == 422
    pointers = [e["pointer"] for e in json.loads(result["body"])["errors"]]
    assert pointers == ["/emails/0/to/0", "/emails/1/pool"]
    assert world.messages.emails == {}


def test_idempotency_on_suppressions_with_canonical_json(world: FakeWorld, seeded: Seeded) -> None:
    first = _call(
        seeded,
        "POST",
        "/v1/suppressions",
        '{"email": "a@example.org", "reason": "manual"}',
        **{"Idempotency-Key": "s-1"},
    )
    again = _call(
        seeded,
        "POST",
        "/v1/suppressions",
        '{ "reason":"manual","email":"a@example.org" }',
        **{"Idempotency-Key": "s-1"},
    )

    assert first["statusCode"] == again["statusCode"] == 201
    assert again["body"] == first["body"] and again["headers"]["Content-Type"] == first["headers"]["Content-Type"]
    assert again["headers"]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first["headers"]


def test_a_replayed_problem_is_byte_identical(world: FakeWorld, seeded: Seeded) -> None:
    first = _call(seeded, "POST", "/v1/emails", _email(to=["nope"]), **{"Idempotency-Key": "k"})
    again = _call(seeded, "POST", "/v1/emails", _email(to=["nope"]), **{"Idempotency-Key": "k"})
    assert first["statusCode"] == again["statusCode"] == 422
    assert (again["body"], again["headers"]["Content-Type"]) == (first["body"], "application/problem+json")


def test_deeply_nested_json_is_a_400(seeded: Seeded) -> None:
    result = _call(seeded, "POST", "/v1/emails", "[" * 100_000)
    assert result["statusCode"] == 400
    assert json.loads(result["body"])["type"] == "urn:petrel:problem:malformed-body"


def test_query_errors_are_listed(seeded: Seeded) -> None:
    event_query = {"limit": "abc", "status": "bogus"}
    result = routes.dispatch(
        {
            "path": "/v1/emails",
            "httpMethod": "GET",
            "queryStringParameters": event_query,
            "requestContext": {"authorizer": {"tenant_id": seeded.tenant.tenant_id, "scopes": "emails:read"}},
        }
    )
    assert result["statusCode"] == 422
    assert [e["parameter"] for e in json.loads(result["body"])["errors"]] == ["limit", "status"]


def test_message_ids_resolve(world: FakeWorld, seeded: Seeded) -> None:
    sent = json.loads(_call(seeded, "POST", "/v1/emails", _email(to=["bob@example.org", "carol@example.org"]))["body"])
    message_id = sent["recipients"][1]["id"]

    by_message = _call(seeded, "GET", f"/v1/emails/{message_id}")
    assert by_message["statusCode"] == 200 and json.loads(by_message["body"])["id"] == sent["id"]
    one = _call(seeded, "GET", f"/v1/messages/{message_id}")
    assert one["statusCode"] == 200
    view = json.loads(one["body"])
    assert (view["id"], view["email_id"], view["email"]) == (message_id, sent["id"], "carol@example.org")

    other = world.seed(domain="other.example")
    assert _call(other, "GET", f"/v1/messages/{message_id}")["statusCode"] == 404
    assert _call(other, "GET", f"/v1/emails/{message_id}")["statusCode"] == 404


def test_a_failure_to_keep_the_response_does_not_fail_what_was_accepted(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emails are stored and queued, then the idempotency record cannot be completed: the answer is
    still the 202 (a 500 would invite a retry that, once the claim's in-flight window passed, queues
    everything again), and a retry meanwhile is told the request is in flight, never re-run."""

    def unreachable(key: str, *, response: bytes | None, response_key: str | None) -> None:
        raise RuntimeError("dynamodb unreachable")

    monkeypatch.setattr(world.idempotency, "complete", unreachable)
    batch = {"emails": [_email(), _email(to=["carol@example.org"])]}

    result = _call(seeded, "POST", "/v1/emails/batch", batch, **{"Idempotency-Key": "b-2"})

    assert result["statusCode"] == 202
    assert [r["status"] for r in json.loads(result["body"])["results"]] == [202, 202]
    again = _call(seeded, "POST", "/v1/emails/batch", batch, **{"Idempotency-Key": "b-2"})
    assert again["statusCode"] == 409
    assert len(world.messages.emails) == 2 and len(world.queue.sent["transactional"]) == 2


def test_a_batch_reads_its_tenants_domain_and_servers_once(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 emails from one domain: one read of the domain and one of the servers, not 100 of each."""
    reads: list[str] = []
    get_domain, list_servers = world.tenants.get_domain, world.tenants.list_servers

    def counted_domain(tenant_id: str, domain: str) -> Any:
        reads.append(f"domain:{domain}")
        return get_domain(tenant_id, domain)

    def counted_servers(tenant_id: str) -> Any:
        reads.append("servers")
        return list_servers(tenant_id)

    monkeypatch.setattr(world.tenants, "get_domain", counted_domain)
    monkeypatch.setattr(world.tenants, "list_servers", counted_servers)

    response = _call(seeded, "POST", "/v1/emails/batch", {"emails": [_email(subject=f"#{n}") for n in range(100)]})

    assert response["statusCode"] == 202
    assert [r["status"] for r in json.loads(response["body"])["results"]] == [202] * 100
    assert sorted(reads) == ["domain:example.com", "servers"]
