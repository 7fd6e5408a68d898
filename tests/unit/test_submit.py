"""services.submit with fakes: sender domain, one message per recipient, body placement, enqueue."""

from __future__ import annotations

import email
from dataclasses import replace
from email import policy
from typing import Any

import pytest

from petrel import resources
from petrel.errors import InvalidRequest, PayloadTooLarge
from petrel.ids import is_id
from petrel.models.api import SendEmailRequest
from petrel.models.jobs import Job, SendJob
from petrel.models.records import MessageStatus
from petrel.ports import EmailKey, MessageKey
from petrel.services.submit import submit_email
from tests.fakes import FakeWorld, Seeded, records


def _request(**fields: Any) -> SendEmailRequest:
    body: dict[str, Any] = {
        "from": "Jane <jane@example.com>",
        "to": ["bob@example.org", "carol@example.org"],
        "cc": ["dan@example.net"],
        "bcc": ["eve@example.net"],
        "subject": "Quarterly report",
        "text": "Hello",
    }
    body.update(fields)
    return SendEmailRequest.model_validate(body)


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def test_sender_domain_must_be_the_tenants(world: FakeWorld, seeded: Seeded) -> None:
    with pytest.raises(InvalidRequest) as caught:
        submit_email(world.submit_deps(), seeded.tenant, _request(**{"from": "jane@not-ours.com"}))

    assert caught.value.extra["errors"][0]["pointer"] == "/from"
    assert world.messages.emails == {} and world.queue.sent["transactional"] == []


def test_another_tenants_domain_is_not_ours(world: FakeWorld, seeded: Seeded) -> None:
    other = world.seed(domain="other.example")
    with pytest.raises(InvalidRequest):
        submit_email(world.submit_deps(), seeded.tenant, _request(**{"from": "x@other.example"}))
    assert submit_email(world.submit_deps(), other.tenant, _request(**{"from": "x@other.example"}))


def test_one_queued_message_per_recipient(world: FakeWorld, seeded: Seeded) -> None:
    response = submit_email(world.submit_deps(), seeded.tenant, _request())

    assert is_id(response.id, "em")
    assert [(r.email, r.status) for r in response.recipients] == [
        ("bob@example.org", MessageStatus.QUEUED),
        ("carol@example.org", MessageStatus.QUEUED),
        ("dan@example.net", MessageStatus.QUEUED),
        ("eve@example.net", MessageStatus.QUEUED),
    ]
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, response.id))
    assert found is not None
    stored, messages = found
    assert stored.pool == "transactional" and stored.subject == "Quarterly report"
    assert stored.header_message_id == f"<{response.id.lower()}@example.com>"
    by_id = {m.message_id: m for m in messages}
    for recipient in response.recipients:
        message = by_id[recipient.id]
        assert is_id(message.message_id, "msg")
        assert message.recipient == recipient.email and message.status == MessageStatus.QUEUED
        assert message.attempt == 0
        assert [(e.type, e.recipient, e.at) for e in message.events] == [
            ("email.queued", recipient.email, world.clock.now())
        ]
    assert [by_id[r.id].kind for r in response.recipients] == ["to", "to", "cc", "bcc"]
    jobs = world.queue.drain_all("transactional")
    assert all(isinstance(j, SendJob) for j in jobs)  # sending now: no release jobs
    assert [(j.tenant_id, j.email_id, j.message_id) for j in jobs if isinstance(j, SendJob)] == [
        (seeded.tenant.tenant_id, response.id, r.id) for r in response.recipients
    ]
    assert world.queue.sent["bulk"] == []


def test_bulk_pool_goes_to_the_bulk_queue(world: FakeWorld, seeded: Seeded) -> None:
    world.tenants.put_server(records.server(seeded.tenant.tenant_id, pool="bulk"))
    response = submit_email(world.submit_deps(), seeded.tenant, _request(pool="bulk"))

    assert len(world.queue.sent["bulk"]) == len(response.recipients)
    assert world.queue.sent["transactional"] == []


def test_every_copy_has_the_same_headers_and_no_bcc(world: FakeWorld, seeded: Seeded) -> None:
    response = submit_email(world.submit_deps(), seeded.tenant, _request())

    stored = world.messages.get_email_record(EmailKey(seeded.tenant.tenant_id, response.id))
    assert stored is not None and stored.body_inline is not None
    parsed = email.message_from_bytes(stored.body_inline, policy=policy.default)
    assert "Bcc" not in parsed
    assert "eve@example.net" not in stored.body_inline.decode()
    assert parsed["Message-ID"] == stored.header_message_id
    assert parsed["X-Petrel-Email-Id"] == response.id
    assert stored.size == len(stored.body_inline)


def test_small_body_stays_inline(world: FakeWorld, seeded: Seeded) -> None:
    response = submit_email(world.submit_deps(inline_body_limit=4096), seeded.tenant, _request())

    stored = world.messages.get_email_record(EmailKey(seeded.tenant.tenant_id, response.id))
    assert stored is not None and stored.body_inline is not None and stored.body_key is None
    assert world.blobs.blobs == {}


def test_large_body_goes_to_the_blob_store(world: FakeWorld, seeded: Seeded) -> None:
    response = submit_email(world.submit_deps(inline_body_limit=4096), seeded.tenant, _request(text="word " * 2000))

    stored = world.messages.get_email_record(EmailKey(seeded.tenant.tenant_id, response.id))
    assert stored is not None and stored.body_inline is None
    assert stored.body_key == f"bodies/{seeded.tenant.tenant_id}/{response.id}.eml"
    body = world.blobs.blobs[stored.body_key]
    assert len(body) == stored.size > 4096
    assert email.message_from_bytes(body, policy=policy.default)["X-Petrel-Email-Id"] == response.id


def test_over_the_tenants_maximum_is_refused(world: FakeWorld) -> None:
    seeded = world.seed()
    small = seeded.tenant.model_copy(update={"max_message_bytes": 2000})
    world.tenants.put_tenant(small)

    with pytest.raises(PayloadTooLarge) as caught:
        submit_email(world.submit_deps(), small, _request(text="x" * 3000))

    assert caught.value.status == 413
    assert world.messages.emails == {} and world.blobs.blobs == {}
    assert world.queue.sent["transactional"] == []


def test_a_job_the_queue_refuses_fails_that_message(world: FakeWorld, seeded: Seeded) -> None:
    def is_carols(job: Job) -> bool:
        assert isinstance(job, SendJob)
        message = world.messages.get_message(MessageKey.of(job))
        return message is not None and message.recipient == "carol@example.org"

    world.queue.refuse_when = is_carols

    response = submit_email(world.submit_deps(), seeded.tenant, _request())

    statuses = {r.email: r.status for r in response.recipients}
    assert statuses["carol@example.org"] == MessageStatus.FAILED
    assert {s for e, s in statuses.items() if e != "carol@example.org"} == {MessageStatus.QUEUED}
    carol = next(r for r in response.recipients if r.email == "carol@example.org")
    stored = world.messages.get_message(MessageKey(seeded.tenant.tenant_id, response.id, carol.id))
    assert stored is not None
    assert stored.status == MessageStatus.FAILED and stored.failure_reason == "enqueue-failed"
    assert [e.type for e in stored.events] == ["email.queued", "email.failed"]
    sent = world.queue.drain_all("transactional")
    assert len(sent) == 3 and all(isinstance(j, SendJob) for j in sent)
    assert carol.id not in {j.message_id for j in sent if isinstance(j, SendJob)}


def test_when_the_queue_is_down_every_message_fails(world: FakeWorld, seeded: Seeded) -> None:
    world.queue.refuse_all = True

    response = submit_email(world.submit_deps(), seeded.tenant, _request())

    assert {r.status for r in response.recipients} == {MessageStatus.FAILED}
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, response.id))
    assert found is not None
    assert {m.failure_reason for m in found[1]} == {"enqueue-failed"}


def test_an_enqueue_that_crashes_after_storing_still_accepts_and_leaves_the_sweeper_a_way(
    world: FakeWorld, seeded: Seeded
) -> None:
    """Stored is accepted: an unexpected error while enqueuing (not a refusal) must not turn into an
    error for an email whose messages are stored; they wait, due, for the sweeper."""

    def crash(job: Job) -> bool:
        raise RuntimeError("the queue client blew up")

    world.queue.refuse_when = crash
    logged: list[str] = []

    class Log:
        """The function's logger, as the API's container passes it (SubmitDeps.log)."""

        def exception(self, msg: str, /) -> None:
            logged.append(msg)

    response = submit_email(replace(world.submit_deps(), log=Log()), seeded.tenant, _request())

    assert logged == ["enqueue failed after the email was stored; the sweeper will queue it"]
    assert {r.status for r in response.recipients} == {MessageStatus.QUEUED}
    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, response.id))
    assert found is not None
    assert {m.status for m in found[1]} == {MessageStatus.QUEUED}
    assert world.queue.sent["transactional"] == []
    after = int(world.clock.timestamp()) + 1
    shard = resources.creation_shard(seeded.tenant.tenant_id)  # where the sweeper finds it
    found_by_sweeper = world.messages.find_due(shard, due_before=after, limit=100, cursor=None).messages
    assert {m.message_id for m in found_by_sweeper} == {r.id for r in response.recipients}
    assert all(m.due_at is None and m.status is MessageStatus.QUEUED for m in found_by_sweeper)


def test_retention_counts_from_the_last_possible_try(world: FakeWorld, seeded: Seeded) -> None:
    response = submit_email(world.submit_deps(retention_days=7), seeded.tenant, _request())

    expires = world.messages.expires_at[EmailKey(seeded.tenant.tenant_id, response.id)]
    # creation + the tenant's maximum age (24 h: the last retry) + the retention
    assert expires == world.clock.timestamp() + seeded.tenant.max_age_hours * 3600 + 7 * 86400


def test_a_pool_without_an_enabled_server_is_refused_before_anything_is_stored(
    world: FakeWorld, seeded: Seeded
) -> None:
    """Issue 7, defect 8: such an email used to be accepted and deferred until it expired."""
    world.tenants.put_server(records.server(seeded.tenant.tenant_id, pool="bulk", enabled=False))
    with pytest.raises(InvalidRequest) as caught:
        submit_email(world.submit_deps(), seeded.tenant, _request(pool="bulk"))

    assert "'bulk'" in caught.value.detail
    assert caught.value.extra["errors"][0]["pointer"] == "/pool"
    assert world.messages.emails == {} and world.queue.sent["bulk"] == []


def test_the_202_says_what_is_stored_when_recording_a_refusal_fails_half_way(
    world: FakeWorld, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue refuses every job; the first refusal is recorded (`failed`), the store then fails on
    the next ones. Each recipient's status in the 202 is the one stored: `failed` where that was
    written, `queued` (due for the sweeper, which queues it) where it was not."""
    world.queue.refuse_all = True
    transition = world.messages.transition
    calls = 0

    def fails_after_the_first(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("dynamodb unreachable")
        return transition(*args, **kwargs)

    monkeypatch.setattr(world.messages, "transition", fails_after_the_first)

    response = submit_email(world.submit_deps(), seeded.tenant, _request())

    found = world.messages.get_email(EmailKey(seeded.tenant.tenant_id, response.id))
    assert found is not None
    stored = {m.message_id: m.status for m in found[1]}
    assert {r.id: r.status for r in response.recipients} == stored
    assert sorted(stored.values()) == [MessageStatus.FAILED] + [MessageStatus.QUEUED] * 3
