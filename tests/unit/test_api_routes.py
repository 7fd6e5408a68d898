"""Every route over the in-memory fakes (create_api with the fakes' ports, nothing patched into the
API): success paths, batch isolation, idempotency on every POST."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest

from petrel.models.records import Tenant
from petrel.services import submit
from petrel.services.submit import SubmitDeps
from tests.fakes import FakeWorld, Seeded
from tests.unit.api_fakes import Api, event


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


@pytest.fixture
def api(world: FakeWorld) -> Api:
    return Api(world)


def _call(api: Api, seeded: Seeded, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
    return api(event(method, path, body, tenant_id=seeded.tenant.tenant_id, **kwargs))


def _ok(result: dict[str, Any], status: int) -> Any:
    assert result["statusCode"] == status, result
    assert result["headers"]["Content-Type"] == "application/json"
    return json.loads(result["body"]) if result["body"] else None


def _email(**fields: Any) -> dict[str, Any]:
    return {"from": "jane@example.com", "to": ["bob@example.org"], "subject": "Hi", "text": "x", **fields}


def test_send_get_list_and_cancel(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    sent = _ok(_call(api, seeded, "POST", "/v1/emails", _email(to=["bob@example.org", "carol@example.org"])), 202)
    assert [(r["email"], r["status"]) for r in sent["recipients"]] == [
        ("bob@example.org", "queued"),
        ("carol@example.org", "queued"),
    ]
    assert len(world.queue.sent["transactional"]) == 2

    view = _ok(_call(api, seeded, "GET", f"/v1/emails/{sent['id']}"), 200)
    assert view["id"] == sent["id"] and view["from"] == "jane@example.com" and len(view["recipients"]) == 2
    listing = _ok(_call(api, seeded, "GET", "/v1/emails", query={"status": "queued", "limit": "1"}), 200)
    assert len(listing["data"]) == 1 and listing["next_cursor"]
    rest = _ok(
        _call(
            api, seeded, "GET", "/v1/emails", query={"status": "queued", "limit": "1", "cursor": listing["next_cursor"]}
        ),
        200,
    )
    assert {listing["data"][0]["id"], rest["data"][0]["id"]} == {r["id"] for r in sent["recipients"]}

    cancelled = _ok(_call(api, seeded, "DELETE", f"/v1/emails/{sent['id']}"), 200)
    assert sorted(c["status"] for c in cancelled["cancelled"]) == ["cancelled", "cancelled"]
    assert _call(api, seeded, "DELETE", "/v1/emails/em_nothing")["statusCode"] == 404


def test_a_scheduled_email_is_one_release_schedule(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    later = (world.clock.now() + timedelta(days=1)).isoformat()
    sent = _ok(_call(api, seeded, "POST", "/v1/emails", _email(send_at=later)), 202)
    assert sent["recipients"][0]["status"] == "scheduled"
    assert list(world.scheduler.schedules) == [f"{sent['id']}-release"]


def test_attachments_are_declared_with_an_upload_url(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    declared = {"filename": "scan.pdf", "content_type": "application/pdf", "size": 5}
    upload = _ok(_call(api, seeded, "POST", "/v1/attachments", declared), 201)
    assert upload["id"].startswith("att_") and upload["upload_method"] == "PUT"
    world.blobs.upload(upload["upload_url"], b"hello", "application/pdf")

    sent = _call(api, seeded, "POST", "/v1/emails", _email(attachments=[{"attachment_id": upload["id"]}]))
    assert _ok(sent, 202)["recipients"][0]["status"] == "queued"


def test_suppression_routes(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    added = _ok(_call(api, seeded, "POST", "/v1/suppressions", {"email": "Bob@Example.org", "note": "stop"}), 201)
    assert (added["email"], added["reason"], added["detail"]) == ("bob@example.org", "manual", "stop")
    assert _call(api, seeded, "POST", "/v1/suppressions", {"email": "bob@example.org"})["statusCode"] == 409
    assert _ok(_call(api, seeded, "GET", "/v1/suppressions/bob%40example.org"), 200)["email"] == "bob@example.org"
    assert [s["email"] for s in _ok(_call(api, seeded, "GET", "/v1/suppressions"), 200)["data"]] == ["bob@example.org"]

    removed = _call(api, seeded, "DELETE", "/v1/suppressions/bob@example.org")
    assert (removed["statusCode"], removed["body"]) == (204, "")
    assert _call(api, seeded, "GET", "/v1/suppressions/bob@example.org")["statusCode"] == 404
    assert _call(api, seeded, "GET", "/v1/suppressions/not-an-address")["statusCode"] == 422


def test_a_control_character_is_a_422_before_anything_is_stored(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    result = _call(api, seeded, "POST", "/v1/emails", _email(subject="a\x0bb"))
    assert result["statusCode"] == 422
    assert [e["pointer"] for e in json.loads(result["body"])["errors"]] == ["/subject"]
    assert world.messages.emails == {}


def test_a_batch_item_that_fails_unexpectedly_is_that_items_problem(
    world: FakeWorld, api: Api, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = submit.accept_email

    def flaky(deps: SubmitDeps, tenant: Tenant, request: Any, reads: Any) -> Any:
        if request.subject == "boom":
            raise RuntimeError("disk on fire")
        return real(deps, tenant, request, reads)

    monkeypatch.setattr(submit, "accept_email", flaky)
    batch = {"emails": [_email(), _email(subject="boom"), _email(subject="a\x85b"), _email()]}
    result = _call(api, seeded, "POST", "/v1/emails/batch", batch, headers={"Idempotency-Key": "b-1"})

    assert result["statusCode"] == 202
    results = json.loads(result["body"])["results"]
    assert [r["status"] for r in results] == [202, 500, 422, 202]
    assert "disk on fire" not in result["body"]
    assert results[2]["error"]["errors"][0]["pointer"] == "/emails/2/subject"
    assert len(world.messages.emails) == 2
    # stored: the retry replays, it does not queue the good items again
    again = _call(api, seeded, "POST", "/v1/emails/batch", batch, headers={"Idempotency-Key": "b-1"})
    assert again["body"] == result["body"] and again["headers"]["Idempotent-Replayed"] == "true"
    assert len(world.messages.emails) == 2 and len(world.queue.sent["transactional"]) == 2


def test_a_batch_with_no_valid_item_is_a_422_with_absolute_pointers(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    batch = {"emails": [_email(to=["nope"]), _email(pool="bulk")]}
    result = _call(api, seeded, "POST", "/v1/emails/batch", batch)

    assert result["statusCode"] == 422
    pointers = [e["pointer"] for e in json.loads(result["body"])["errors"]]
    assert pointers == ["/emails/0/to/0", "/emails/1/pool"]
    assert world.messages.emails == {}


def test_idempotency_on_suppressions_with_canonical_json(api: Api, seeded: Seeded) -> None:
    key = {"Idempotency-Key": "s-1"}
    first = _call(
        api, seeded, "POST", "/v1/suppressions", '{"email": "a@example.org", "reason": "manual"}', headers=key
    )
    again = _call(api, seeded, "POST", "/v1/suppressions", '{ "reason":"manual","email":"a@example.org" }', headers=key)

    assert first["statusCode"] == again["statusCode"] == 201
    assert again["body"] == first["body"] and again["headers"]["Content-Type"] == first["headers"]["Content-Type"]
    assert again["headers"]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first["headers"]


def test_a_replayed_validation_problem_is_byte_identical_and_holds_the_key(api: Api, seeded: Seeded) -> None:
    """The key covers what validation answered: the same key with a valid body is a conflict, not a send."""
    key = {"Idempotency-Key": "k"}
    first = _call(api, seeded, "POST", "/v1/emails", _email(to=["nope"]), headers=key)
    again = _call(api, seeded, "POST", "/v1/emails", _email(to=["nope"]), headers=key)
    assert first["statusCode"] == again["statusCode"] == 422
    assert (again["body"], again["headers"]["Content-Type"]) == (first["body"], "application/problem+json")
    assert _call(api, seeded, "POST", "/v1/emails", _email(), headers=key)["statusCode"] == 409


def test_deeply_nested_json_is_a_400(api: Api, seeded: Seeded) -> None:
    result = _call(api, seeded, "POST", "/v1/emails", "[" * 100_000)
    assert result["statusCode"] == 400
    assert json.loads(result["body"])["type"] == "urn:petrel:problem:malformed-body"


def test_query_errors_are_listed(api: Api, seeded: Seeded) -> None:
    result = _call(api, seeded, "GET", "/v1/emails", query={"limit": "abc", "status": "bogus"})
    assert result["statusCode"] == 422
    assert [e["parameter"] for e in json.loads(result["body"])["errors"]] == ["limit", "status"]


def test_message_ids_resolve(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    sent = _ok(_call(api, seeded, "POST", "/v1/emails", _email(to=["bob@example.org", "carol@example.org"])), 202)
    message_id = sent["recipients"][1]["id"]

    assert _ok(_call(api, seeded, "GET", f"/v1/emails/{message_id}"), 200)["id"] == sent["id"]
    view = _ok(_call(api, seeded, "GET", f"/v1/messages/{message_id}"), 200)
    assert (view["id"], view["email_id"], view["email"]) == (message_id, sent["id"], "carol@example.org")

    other = world.seed(domain="other.example")
    assert _call(api, other, "GET", f"/v1/messages/{message_id}")["statusCode"] == 404
    assert _call(api, other, "GET", f"/v1/emails/{message_id}")["statusCode"] == 404


def test_a_tenant_that_no_longer_exists_is_a_404(api: Api) -> None:
    result = api(event("POST", "/v1/emails", _email(), tenant_id="tn_gone"))
    assert result["statusCode"] == 404 and "no longer exists" in result["body"]


def test_a_failure_to_keep_the_response_does_not_fail_what_was_accepted(
    world: FakeWorld, api: Api, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emails are stored and queued, then the idempotency record cannot be completed: the answer is
    still the 202 (a 500 would invite a retry that, once the claim's in-flight window passed, queues
    everything again), and a retry meanwhile is told the request is in flight, never re-run."""

    def unreachable(key: str, *, response: bytes | None, response_key: str | None) -> None:
        raise RuntimeError("dynamodb unreachable")

    monkeypatch.setattr(world.idempotency, "complete", unreachable)
    batch = {"emails": [_email(), _email(to=["carol@example.org"])]}

    result = _call(api, seeded, "POST", "/v1/emails/batch", batch, headers={"Idempotency-Key": "b-2"})

    assert result["statusCode"] == 202
    assert [r["status"] for r in json.loads(result["body"])["results"]] == [202, 202]
    again = _call(api, seeded, "POST", "/v1/emails/batch", batch, headers={"Idempotency-Key": "b-2"})
    assert again["statusCode"] == 409
    assert len(world.messages.emails) == 2 and len(world.queue.sent["transactional"]) == 2


def test_a_batch_reads_its_tenants_domain_and_servers_once(
    world: FakeWorld, api: Api, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
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

    batch = {"emails": [_email(subject=f"#{n}") for n in range(100)]}
    response = _call(api, seeded, "POST", "/v1/emails/batch", batch)

    assert response["statusCode"] == 202
    assert [r["status"] for r in json.loads(response["body"])["results"]] == [202] * 100
    assert sorted(reads) == ["domain:example.com", "servers"]


def test_a_failure_after_storing_is_logged_on_the_api_functions_logger(
    world: FakeWorld, api: Api, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    """Submission reports on the logger of the container it was given (service `petrel-api`), not on
    a process-wide one nor its module's stdlib fallback."""

    def crash(job: object) -> bool:
        raise RuntimeError("the queue client blew up")

    world.queue.refuse_when = crash
    with caplog.at_level(logging.ERROR, logger="petrel-api"):
        _ok(_call(api, seeded, "POST", "/v1/emails", _email()), 202)

    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.name == "petrel-api"
    assert record.getMessage() == "enqueue failed after the email was stored; the sweeper will queue it"


def test_a_batchs_jobs_are_queued_together_and_a_refused_one_is_failed(
    world: FakeWorld, api: Api, seeded: Seeded
) -> None:
    """25 emails of one pool and delay: their jobs go in 3 SendMessageBatch calls, not 25; the one job the
    queue refuses ends its message `failed`/`enqueue-failed`, and the others are queued."""
    emails = [_email(to=[f"r{i}@example.org"]) for i in range(24)] + [_email(to=["refused@example.org"])]

    def refuse(job: Any) -> bool:
        return any(
            m.message_id == job.message_id and m.recipient == "refused@example.org"
            for m in world.messages.messages.values()
        )

    world.queue.refuse_when = refuse
    result = _ok(_call(api, seeded, "POST", "/v1/emails/batch", {"emails": emails}), 202)

    statuses = [r["email"]["recipients"][0]["status"] for r in result["results"]]
    assert statuses == ["queued"] * 24 + ["failed"]
    assert world.queue.batches == 3
    assert len(world.queue.sent["transactional"]) == 24


def test_a_batch_whose_queue_fails_leaves_its_emails_to_the_sweeper(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("queue unreachable")

    world.queue.send_jobs = broken  # type: ignore[method-assign]
    result = _ok(_call(api, seeded, "POST", "/v1/emails/batch", {"emails": [_email(), _email()]}), 202)

    assert [r["status"] for r in result["results"]] == [202, 202]
    assert [r["email"]["recipients"][0]["status"] for r in result["results"]] == ["queued", "queued"]
    assert len(world.messages.emails) == 2  # stored and due: the sweeper queues them
