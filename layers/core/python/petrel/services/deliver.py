"""Delivering one recipient's message: a pipeline of named steps (DESIGN §1, §2).

lease → load body → choose server → relay → classify → record. Outcomes are values; only an
unexpected exception escapes (and SQS redelivers the job).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from petrel.mail.addresses import parse_mailbox
from petrel.mail.smtp_reply import (
    DeliveryOutcome,
    HardFail,
    PermanentFail,
    Relayed,
    SmtpReply,
    SoftFail,
    Stage,
    classify,
)
from petrel.models.jobs import SendJob
from petrel.models.records import (
    Attempt,
    EmailRecord,
    Event,
    MessageRecord,
    MessageStatus,
    Reply,
    SmtpServer,
)
from petrel.ports import BlobStore, Clock, Envelope, MessageStore, SecretStore, SmtpRelay, TenantStore, Transition

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small per-container cache for tenant configuration and secrets (seconds-long TTL)."""

    def __init__(self, ttl_seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = monotonic
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K, load: Callable[[], V]) -> V:
        hit = self._items.get(key)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        # Drop what has expired, so a warm container does not keep every body it ever read.
        self._items = {k: item for k, item in self._items.items() if item[0] > now}
        self._items[key] = (now + self._ttl, value)
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)


class JobResult(StrEnum):
    DONE = "done"  # finished (relayed, bounced, failed) or nothing to do: acknowledge the job
    RETRY = "retry"  # deferred or busy elsewhere: let the queue bring the job back


@dataclass
class DeliverDeps:
    tenants: TenantStore
    messages: MessageStore
    blobs: BlobStore
    secrets: SecretStore
    relay: SmtpRelay
    clock: Clock
    lease_seconds: int
    cache_seconds: float
    rng: random.Random = field(default_factory=random.Random)
    _servers: TtlCache[str, list[SmtpServer]] = field(init=False)
    _passwords: TtlCache[str, str] = field(init=False)
    _return_paths: TtlCache[tuple[str, str], str] = field(init=False)
    _bodies: TtlCache[str, bytes] = field(init=False)

    def __post_init__(self) -> None:
        self._servers = TtlCache(self.cache_seconds)
        self._passwords = TtlCache(self.cache_seconds)
        self._return_paths = TtlCache(self.cache_seconds)
        self._bodies = TtlCache(60.0)


@dataclass(frozen=True)
class Delivery:
    result: JobResult
    outcome: DeliveryOutcome | None = None
    message: MessageRecord | None = None
    note: str = ""


def lease_message(deps: DeliverDeps, job: SendJob, now: datetime) -> MessageRecord | Delivery:
    leased = deps.messages.lease(
        job.tenant_id,
        job.email_id,
        job.message_id,
        now=int(now.timestamp()),
        lease_until=int((now + timedelta(seconds=deps.lease_seconds)).timestamp()),
    )
    if leased is not None:
        return leased
    current = deps.messages.get_message(job.tenant_id, job.email_id, job.message_id)
    if current is None:
        return Delivery(JobResult.DONE, note="no such message")
    if current.status == MessageStatus.SENDING:
        return Delivery(JobResult.RETRY, message=current, note="leased by another worker")
    return Delivery(JobResult.DONE, message=current, note=f"already {current.status}")


def load_body(deps: DeliverDeps, email: EmailRecord) -> bytes:
    if email.body_inline is not None:
        return email.body_inline
    key = email.body_key or ""
    return deps._bodies.get(key, lambda: deps.blobs.get(key))


def choose_server(deps: DeliverDeps, tenant_id: str, pool: str) -> SmtpServer | None:
    servers = deps._servers.get(tenant_id, lambda: deps.tenants.list_servers(tenant_id))
    candidates = [s for s in servers if s.enabled and s.pool == pool]
    if not candidates:
        return None
    return deps.rng.choices(candidates, weights=[s.weight for s in candidates])[0]


def return_path(deps: DeliverDeps, email: EmailRecord, message_id: str) -> str:
    from_domain = parse_mailbox(email.from_address).domain

    def load() -> str:
        domain = deps.tenants.get_domain(email.tenant_id, from_domain)
        return domain.return_path_domain if domain else from_domain

    return f"bounces+{message_id}@{deps._return_paths.get((email.tenant_id, from_domain), load)}"


def relay_message(deps: DeliverDeps, message: MessageRecord, email: EmailRecord) -> tuple[DeliveryOutcome, str | None]:
    server = choose_server(deps, message.tenant_id, message.pool)
    if server is None:
        reply = SmtpReply.network(Stage.CONNECT, f"no enabled SMTP server in pool {message.pool!r}")
        return SoftFail(reply, reason="no-server"), None
    try:
        password = deps._passwords.get(server.secret_name, lambda: deps.secrets.get_secret(server.secret_name))
    except Exception as exc:  # the secret store is down or the secret is gone: keep the message
        reply = SmtpReply.network(Stage.AUTH, f"SMTP password unavailable: {type(exc).__name__}")
        return SoftFail(reply, reason="secret-unavailable"), server.server_id
    envelope = Envelope(
        sender=return_path(deps, email, message.message_id), recipient=message.recipient, envid=message.message_id
    )
    reply = deps.relay.relay(server, password, envelope, load_body(deps, email))
    outcome = classify(reply)
    if isinstance(outcome, SoftFail) and reply.stage is Stage.AUTH:
        deps._passwords.forget(server.secret_name)  # a rotated password is picked up on the next try
    return outcome, server.server_id


def _stored_reply(reply: SmtpReply) -> Reply:
    return Reply(code=reply.code, enhanced=reply.enhanced, text=reply.text, stage=str(reply.stage))


def outcome_transition(message: MessageRecord, outcome: DeliveryOutcome, attempt: Attempt, now: datetime) -> Transition:
    reply = _stored_reply(outcome.reply)

    def event(kind: str, detail: str | None = None) -> tuple[Event, ...]:
        return (
            Event(
                type=kind,
                at=now,
                message_id=message.message_id,
                recipient=message.recipient,
                reply=reply,
                detail=detail,
            ),
        )

    if isinstance(outcome, Relayed):
        return Transition(MessageStatus.RELAYED, event("email.sent"), attempt, reply)
    if isinstance(outcome, SoftFail):
        return Transition(MessageStatus.DEFERRED, event("email.deferred", outcome.reason), attempt, reply)
    if isinstance(outcome, HardFail):
        return Transition(
            MessageStatus.BOUNCED,
            event("email.bounced", outcome.bounce_class),
            attempt,
            reply,
            bounce_class=outcome.bounce_class,
        )
    return Transition(
        MessageStatus.FAILED, event("email.failed", outcome.reason), attempt, reply, failure_reason=outcome.reason
    )


def deliver_message(deps: DeliverDeps, job: SendJob) -> Delivery:
    started = deps.clock.now()
    leased = lease_message(deps, job, started)
    if isinstance(leased, Delivery):
        return leased
    email = deps.messages.get_email_record(job.tenant_id, job.email_id)
    if email is None:  # cannot happen while retention outlives the queue; finish rather than loop
        outcome: DeliveryOutcome = PermanentFail(
            SmtpReply.network(Stage.CONNECT, "email record missing"), "email-missing"
        )
        server_id = None
    else:
        outcome, server_id = relay_message(deps, leased, email)
    finished = deps.clock.now()
    attempt = Attempt(
        number=leased.attempt,
        started_at=started,
        finished_at=finished,
        server_id=server_id,
        outcome=type(outcome).__name__.lower(),
        reply=_stored_reply(outcome.reply),
    )
    change = outcome_transition(leased, outcome, attempt, finished)
    recorded = deps.messages.transition(
        job.tenant_id,
        job.email_id,
        job.message_id,
        expected=[MessageStatus.SENDING],
        attempt=leased.attempt,
        change=change,
        now=finished,
    )
    if not recorded:
        return Delivery(JobResult.DONE, outcome, leased, note="lease lost before the outcome was recorded")
    result = JobResult.RETRY if isinstance(outcome, SoftFail) else JobResult.DONE
    return Delivery(result, outcome, leased)
