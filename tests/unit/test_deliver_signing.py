"""The send worker's DKIM step (services.deliver with fakes): what is relayed is signed, or not relayed.

Invariants:
- every message relayed from a domain Petrel signs carries exactly one DKIM-Signature per active key,
  made over the exact bytes relayed (the stored body, signed afresh on each attempt: a retry or a crash
  never stacks a second signature, and the stored body never changes);
- a key that cannot be used, a domain that is gone or failing its DNS checks: the message is deferred
  (a retry is scheduled), nothing goes out; once the cause is fixed the retry goes out signed;
- a rotation with mail in flight leaves no message unsigned and every signature verifies against the
  keys published (the retired selector stays published).
"""

from __future__ import annotations

from dataclasses import dataclass

import dkim
import pytest

from petrel.mail import dkim as petrel_dkim
from petrel.mail.smtp_reply import Relayed, SoftFail
from petrel.models.jobs import SendJob
from petrel.models.records import (
    DkimSigner,
    DomainKey,
    DomainStatus,
    EmailRecord,
    Mailbox,
    MessageRecord,
    MessageStatus,
    SendingDomain,
)
from petrel.ports import EmailKey, MessageKey
from petrel.services.deliver import DOMAIN_UNVERIFIED, DeliverDeps, JobResult, deliver_message
from petrel.services.signing import KEY_UNAVAILABLE
from tests.fakes import FakeWorld, Seeded, records
from tests.fakes.clock import DEFAULT_START
from tests.fakes.smtp import OK, reply
from tests.support_dkim import DnsFunc, new_key, published, serving, signature_count, verify_all

DOMAIN = "example.com"
BODY = (
    b"From: Sender <sender@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
    b"Date: Thu, 15 Jan 2026 09:30:00 +0000\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
)
LEASE = 120


@dataclass
class Signing:
    seeded: Seeded
    domain: SendingDomain
    pems: dict[str, str]  # selector -> PEM

    def dns(self, *extra: DomainKey) -> DnsFunc:
        return serving(published(DOMAIN, [*self.domain.keys, *extra]))


def _signing_domain(world: FakeWorld, *algorithms: str, status: DomainStatus = DomainStatus.VERIFIED) -> Signing:
    seeded = world.seed(domain=DOMAIN)
    keys, pems = [], {}
    for algorithm in algorithms:
        selector = f"{algorithm}1"
        key, pem = new_key(
            world.secrets,
            seeded.tenant.tenant_id,
            DOMAIN,
            selector,
            algorithm=algorithm,  # type: ignore[arg-type]
            at=DEFAULT_START,
        )
        keys.append(key)
        pems[selector] = pem
    domain = seeded.domain.model_copy(update={"keys": tuple(keys), "status": status})
    world.tenants.put_domain(domain)
    return Signing(seeded, domain, pems)


def _store(world: FakeWorld, tenant_id: str, recipient: str = "bob@example.org") -> tuple[EmailRecord, SendJob]:
    email, (message,) = records.email(tenant_id, [recipient], body=BODY)
    world.messages.create_email(email, [message], 0)
    return email, SendJob(tenant_id=tenant_id, email_id=message.email_id, message_id=message.message_id)


def _message(world: FakeWorld, job: SendJob) -> MessageRecord:
    found = world.messages.get_message(MessageKey.of(job))
    assert found is not None
    return found


def _retry(world: FakeWorld, job: SendJob) -> SendJob:
    """The job of the message's next attempt (what its schedule sends), once it is due."""
    current = _message(world, job)
    assert current.status is MessageStatus.DEFERRED and current.next_attempt_at is not None
    world.clock.set(current.next_attempt_at)
    return job.model_copy(update={"attempt": current.attempt})


def _deps(world: FakeWorld, **kwargs: object) -> DeliverDeps:
    return world.deliver_deps(lease_seconds=LEASE, **kwargs)  # type: ignore[arg-type]


def test_the_relayed_bytes_are_the_signers_output_on_the_stored_body(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa", "ed25519")
    email, job = _store(world, signing.seeded.tenant.tenant_id)

    delivery = deliver_message(_deps(world), job)

    assert isinstance(delivery.outcome, Relayed) and delivery.status is MessageStatus.RELAYED
    [call] = world.relay.calls
    t = int(world.clock.now().timestamp())
    expected = b"".join(
        petrel_dkim.sign(BODY, selector=s, domain=DOMAIN, private_key=signing.pems[s], timestamp=t)
        for s in ("rsa1", "ed255191")
    )
    assert call.data == expected + BODY
    assert [(v.selector, v.valid) for v in verify_all(call.data, signing.dns())] == [
        ("rsa1", True),
        ("ed255191", True),
    ]
    assert dkim.verify(call.data, dnsfunc=signing.dns())
    stored = world.messages.get_email_record(EmailKey.of(email))
    assert stored is not None and stored.body_inline == BODY  # never stored signed


def test_a_body_from_the_blob_store_is_signed_too(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    world.blobs.put("bodies/big.eml", BODY)
    email, (message,) = records.email(signing.seeded.tenant.tenant_id, ["bob@example.org"], body_key="bodies/big.eml")
    world.messages.create_email(email, [message], 0)

    deliver_message(
        _deps(world), SendJob(tenant_id=email.tenant_id, email_id=email.email_id, message_id=message.message_id)
    )

    [call] = world.relay.calls
    assert call.data.endswith(BODY) and dkim.verify(call.data, dnsfunc=signing.dns())


@pytest.mark.parametrize("status", [DomainStatus.VERIFIED, DomainStatus.PENDING])
def test_a_sendable_or_allowed_pending_domain_is_signed(world: FakeWorld, status: DomainStatus) -> None:
    """Submission refuses a pending domain unless the tenant allows it; the worker signs what it got."""
    signing = _signing_domain(world, "rsa", status=status)
    _, job = _store(world, signing.seeded.tenant.tenant_id)
    deliver_message(_deps(world), job)
    assert signature_count(world.relay.calls[0].data) == 1


def test_a_mailu_signed_domain_is_relayed_as_stored(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    world.tenants.put_domain(signing.domain.model_copy(update={"signer": DkimSigner.MAILU}))
    _, job = _store(world, signing.seeded.tenant.tenant_id)

    deliver_message(_deps(world), job)

    assert world.relay.calls[0].data == BODY


def test_a_missing_key_defers_and_the_retry_after_it_is_restored_goes_out_signed(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    name = signing.domain.keys[0].secret_name or ""
    world.secrets.delete_secret(name)
    _, job = _store(world, signing.seeded.tenant.tenant_id)
    deps = _deps(world, cache_seconds=300)

    first = deliver_message(deps, job)

    assert isinstance(first.outcome, SoftFail) and first.outcome.reason == KEY_UNAVAILABLE
    assert world.relay.calls == [] and first.server is None
    deferred = _message(world, job)
    assert deferred.status is MessageStatus.DEFERRED and deferred.events[-1].detail == KEY_UNAVAILABLE
    assert deferred.attempts[-1].outcome == "softfail" and len(world.scheduler.schedules) == 1

    world.secrets.put_secret(name, signing.pems["rsa1"])
    second = deliver_message(deps, _retry(world, job))

    assert isinstance(second.outcome, Relayed)
    [call] = world.relay.calls
    assert signature_count(call.data) == 1 and dkim.verify(call.data, dnsfunc=signing.dns())
    assert _message(world, job).status is MessageStatus.RELAYED


def test_a_garbage_key_defers_and_is_reread_once_fixed(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    name = signing.domain.keys[0].secret_name or ""
    world.secrets.put_secret(name, "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n")
    _, job = _store(world, signing.seeded.tenant.tenant_id)
    deps = _deps(world, cache_seconds=300)  # the worker caches secrets for five minutes

    first = deliver_message(deps, job)
    assert isinstance(first.outcome, SoftFail) and first.outcome.reason == KEY_UNAVAILABLE
    deferred = _message(world, job)
    assert deferred.last_reply is not None and "Z2FyYmFnZQ" not in deferred.last_reply.text

    world.secrets.put_secret(name, signing.pems["rsa1"])
    assert isinstance(deliver_message(deps, _retry(world, job)).outcome, Relayed)
    assert dkim.verify(world.relay.calls[0].data, dnsfunc=signing.dns())


@pytest.mark.parametrize("allowed", [False, True])
def test_a_domain_deleted_after_submission(world: FakeWorld, allowed: bool) -> None:
    signing = _signing_domain(world, "rsa")
    tenant = signing.seeded.tenant.model_copy(update={"allow_unverified_domains": allowed})
    world.tenants.put_tenant(tenant)
    _, job = _store(world, tenant.tenant_id)
    del world.tenants.domains[(tenant.tenant_id, DOMAIN)]

    delivery = deliver_message(_deps(world), job)

    if allowed:  # testing: it goes out, unsigned (there is no key to sign with)
        assert isinstance(delivery.outcome, Relayed) and world.relay.calls[0].data == BODY
    else:
        assert isinstance(delivery.outcome, SoftFail) and delivery.outcome.reason == DOMAIN_UNVERIFIED
        assert world.relay.calls == [] and _message(world, job).status is MessageStatus.DEFERRED


def test_a_domain_failing_its_dns_checks_holds_mail_until_it_verifies_again(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    world.tenants.put_domain(signing.domain.model_copy(update={"status": DomainStatus.FAILED}))
    _, job = _store(world, signing.seeded.tenant.tenant_id)
    deps = _deps(world)

    held = deliver_message(deps, job)

    assert isinstance(held.outcome, SoftFail) and held.outcome.reason == DOMAIN_UNVERIFIED
    assert world.relay.calls == [] and _message(world, job).events[-1].detail == DOMAIN_UNVERIFIED

    world.tenants.put_domain(signing.domain)  # the drift check found it right again
    assert isinstance(deliver_message(deps, _retry(world, job)).outcome, Relayed)
    assert dkim.verify(world.relay.calls[0].data, dnsfunc=signing.dns())


def test_a_failed_domain_still_sends_signed_when_the_tenant_allows_unverified(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa", status=DomainStatus.FAILED)
    world.tenants.put_tenant(signing.seeded.tenant.model_copy(update={"allow_unverified_domains": True}))
    _, job = _store(world, signing.seeded.tenant.tenant_id)
    deliver_message(_deps(world), job)
    assert dkim.verify(world.relay.calls[0].data, dnsfunc=signing.dns())


def test_local_delivery_is_not_signed(world: FakeWorld) -> None:
    signing = _signing_domain(world, "rsa")
    tenant_id = signing.seeded.tenant.tenant_id
    world.mailboxes.put_mailbox(
        Mailbox(
            tenant_id=tenant_id,
            mailbox_id="mbx_1",
            address="inbox@own.example",
            host="mail.example.com",
            port=993,
            username="inbox@own.example",
            secret_name="petrel-test/mbx",
            created_at=DEFAULT_START,
        )
    )
    _, job = _store(world, tenant_id, recipient="someone@own.example")

    delivery = deliver_message(_deps(world), job)

    assert delivery.status is MessageStatus.DELIVERED and world.relay.calls == []
    [raw] = [v for k, v in world.blobs.blobs.items() if k.endswith("/raw.eml")]
    assert raw.endswith(BODY)
    assert signature_count(raw) == 0


class Crash(Exception):
    """An unexpected error in the worker."""


class Died(BaseException):
    """The invocation was killed: no handler runs."""


@pytest.mark.parametrize("kind", [Crash, Died])
def test_crashes_between_signing_and_relaying_never_stack_signatures(
    world: FakeWorld, kind: type[BaseException]
) -> None:
    """The worker dies right after signing (before SMTP), twice; the third run relays it signed once
    per key, and the message and email records end consistent."""
    signing = _signing_domain(world, "rsa", "ed25519")
    email, job = _store(world, signing.seeded.tenant.tenant_id)
    relay, crashes = world.relay.relay, [2]

    def crashing_relay(*args: object, **kwargs: object) -> object:
        if crashes[0]:
            crashes[0] -= 1
            raise kind("after signing, before relaying")
        return relay(*args, **kwargs)  # type: ignore[arg-type]

    world.relay.relay = crashing_relay  # type: ignore[method-assign]
    deps = _deps(world, max_receive_count=3)

    for _ in range(2):
        with pytest.raises(kind):
            deliver_message(deps, job)
        during = _message(world, job)
        assert during.status is MessageStatus.SENDING and during.attempt == 1  # its lease runs out
        world.clock.advance(LEASE + 1)
    final = deliver_message(deps, job)

    assert final.result is JobResult.DONE and isinstance(final.outcome, Relayed)
    [call] = world.relay.calls
    assert signature_count(call.data) == 2
    assert [v.valid for v in verify_all(call.data, signing.dns())] == [True, True]
    assert call.data.endswith(BODY) and call.data.count(b"DKIM-Signature:") == 2
    current = _message(world, job)
    assert current.status is MessageStatus.RELAYED and current.attempt == 1 and current.takeovers == 2
    assert [a.number for a in current.attempts] == [1] and current.lease_until is None
    assert [e.type for e in current.events] == ["email.queued", "email.sent"]
    stored = world.messages.get_email_record(EmailKey.of(email))
    assert stored is not None and stored.body_inline == BODY


def test_rotation_with_mail_in_flight_leaves_nothing_unsigned(world: FakeWorld) -> None:
    """Six messages queued; two go out, one is deferred by its server; the key rotates (a `next` key is
    added and published, then promoted when verified, the old one retired but still published); the
    rest, and the deferred one's retry, go out. A warm worker may keep the old domain record for its
    cache's TTL: its signatures still verify, since the retired selector stays published."""
    signing = _signing_domain(world, "rsa")
    tenant_id = signing.seeded.tenant.tenant_id
    old_key = signing.domain.keys[0]
    jobs = [_store(world, tenant_id, recipient=f"r{i}@example.org")[1] for i in range(6)]
    world.relay.script["r2@example.org"] = [reply(451, "4.3.0 try again later"), OK]
    warm = _deps(world, cache_seconds=3600)  # a worker that keeps the domain record it read first
    for job in jobs[:3]:
        deliver_message(warm, job)

    next_key, _ = new_key(world.secrets, tenant_id, DOMAIN, "rsa2", state="next", at=DEFAULT_START)
    world.tenants.put_domain(signing.domain.model_copy(update={"keys": (old_key, next_key)}))  # published
    rotated = (old_key.model_copy(update={"state": "retired"}), next_key.model_copy(update={"state": "active"}))
    world.tenants.put_domain(signing.domain.model_copy(update={"keys": rotated}))  # promoted on verify
    deliver_message(warm, jobs[3])  # still signs with the old key: its record is cached
    fresh = _deps(world)  # another worker (or the cache expired): reads the rotated record
    for job in jobs[4:]:
        deliver_message(fresh, job)
    deliver_message(fresh, _retry(world, jobs[2]))

    dns = serving(published(DOMAIN, rotated))  # both selectors published
    relayed = world.relay.relayed
    assert sorted(c.envelope.recipient for c in relayed) == sorted(f"r{i}@example.org" for i in range(6))
    selectors = []
    for call in relayed:
        [verdict] = verify_all(call.data, dns)
        assert verdict.valid and verdict.domain == DOMAIN
        selectors.append(verdict.selector)
    assert selectors == ["rsa1", "rsa1", "rsa1", "rsa2", "rsa2", "rsa2"]
    assert all(_message(world, j).status is MessageStatus.RELAYED for j in jobs)
