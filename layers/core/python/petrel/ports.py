"""The interfaces the services depend on. Adapters implement them; tests/fakes has one double each.

Every fake is held to the same contract tests as its real adapter (tests/integration/contracts).

The ports speak their own vocabulary, never the API's (adapters do not import petrel.errors):

- A lookup (`get_*`, `find_*`, `BlobStore.size`) returns None when there is nothing: absence is
  an answer there.
- Reading a value by the reference that names it (`BlobStore.get`, `SecretStore.get_secret`), and
  every command on one record that is not there, raise `RecordNotFound`.
- Creating what exists already raises `AlreadyExists` (`create_email`, `SuppressionStore.add`,
  `RetryScheduler.schedule`): nothing changes.
- A conditional write whose condition no longer holds raises `WriteConflict` (`lease`,
  `transition`, `claim_repair`, revoking a revoked key): someone else moved the record on.
- A cursor that this listing did not hand out raises `InvalidCursor`.

Services translate these into API errors (petrel.errors) where a caller's request caused them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from petrel.models.inbound import InboundContent, InboundKind, InboundRecord, IngestJob
from petrel.models.jobs import Job, SendJob
from petrel.models.records import (
    ApiKey,
    Attempt,
    EmailRecord,
    Event,
    FolderCursor,
    Mailbox,
    MailboxHealth,
    MessageRecord,
    MessageStatus,
    Pool,
    Reply,
    SendingDomain,
    SmtpServer,
    Suppression,
    Tenant,
)

if TYPE_CHECKING:  # only in annotations: the API and the sweeper never load the SMTP reply table
    from petrel.mail.smtp_reply import SmtpReply


class PortError(Exception):
    """A store or service refused an operation for a reason the caller can act on."""


class RecordNotFound(PortError):
    """The record, object, secret or schedule the operation names does not exist."""


class AlreadyExists(PortError):
    """A create found its key taken; nothing was written."""


class WriteConflict(PortError):
    """A conditional write lost: the record is no longer in the state the caller expected."""


class InvalidCursor(PortError):
    """A paging cursor this listing did not hand out (garbled, or another listing's)."""


class _EmailKeyed(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def email_id(self) -> str: ...


class _MessageKeyed(_EmailKeyed, Protocol):
    @property
    def message_id(self) -> str: ...


@dataclass(frozen=True)
class EmailKey:
    """One email of one tenant: the key of its record and of its messages' partition."""

    tenant_id: str
    email_id: str

    @classmethod
    def of(cls, item: _EmailKeyed) -> EmailKey:
        """The key of anything that names an email (a record, a job, a message)."""
        return cls(item.tenant_id, item.email_id)


@dataclass(frozen=True)
class MessageKey:
    """One message (one recipient's copy) of one email of one tenant."""

    tenant_id: str
    email_id: str
    message_id: str

    @classmethod
    def of(cls, item: _MessageKeyed) -> MessageKey:
        """The key of anything that names a message (a MessageRecord, a SendJob, a DueMessage)."""
        return cls(item.tenant_id, item.email_id, item.message_id)

    @property
    def email(self) -> EmailKey:
        return EmailKey(self.tenant_id, self.email_id)


class TenantStore(Protocol):
    def put_tenant(self, tenant: Tenant) -> None: ...
    def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    def list_tenants(self) -> list[Tenant]: ...
    def put_api_key(self, key: ApiKey) -> None: ...
    def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    def list_api_keys(self, tenant_id: str) -> list[ApiKey]: ...
    def revoke_api_key(self, tenant_id: str, key_id: str, at: datetime) -> None:
        """Mark the key revoked at `at`. RecordNotFound: no such key of this tenant; WriteConflict:
        revoked already (the first revocation's time is kept)."""
        ...

    def create_domain(self, domain: SendingDomain) -> None:
        """Store a new domain with the claim that makes it this tenant's alone. AlreadyExists when the
        tenant or ANY other tenant has the domain already (nothing is written): of two concurrent
        creates of one domain, by one tenant or two, one wins."""
        ...

    def delete_domain(self, tenant_id: str, domain: str, expected_revision: int | None = None) -> None:
        """Remove the domain and its claim (the name is free again; a claim another tenant holds, on a
        copy stored before claims, stays); RecordNotFound when the tenant has no such domain. With
        `expected_revision`, only while the stored domain is at that revision (WriteConflict otherwise:
        someone changed it since it was read; so too when its claim changed hands meanwhile)."""
        ...

    def find_domain(self, domain: str) -> SendingDomain | None:
        """The domain, whichever tenant has it (through its claim); None when no tenant has it."""
        ...

    def list_all_domains(self) -> list[SendingDomain]:
        """Every tenant's domains (the drift re-check's work list), by tenant then domain."""
        ...

    def update_domain(self, domain: SendingDomain, expected_revision: int, *, claim: bool = False) -> None:
        """Replace the tenant's domain with `domain`, whose revision must be `expected_revision + 1`
        (ValueError otherwise), only while the stored one is at `expected_revision` (a record stored
        before revisions counts as 0): WriteConflict when someone else wrote it first, RecordNotFound
        when it is gone. With `claim`, the domain's claim is made this tenant's in the same write
        (AlreadyExists, nothing written, when another tenant has it)."""
        ...

    def put_domain(self, domain: SendingDomain) -> None:
        """Store the domain unconditionally (seeding and tests; the services use update_domain)."""
        ...

    def get_domain(self, tenant_id: str, domain: str) -> SendingDomain | None: ...
    def list_domains(self, tenant_id: str) -> list[SendingDomain]: ...
    def put_server(self, server: SmtpServer) -> None: ...
    def list_servers(self, tenant_id: str) -> list[SmtpServer]: ...
    def delete_server(self, tenant_id: str, server_id: str) -> None:
        """RecordNotFound when the tenant has no such server."""
        ...

    def pause_server(
        self, tenant_id: str, server_id: str, *, at: datetime, reason: str, resume_at: datetime | None
    ) -> bool:
        """Pause the server unless it is paused already, adding a `server.paused` event (detail: `reason`):
        one conditional write, so workers that reach the same verdict at once pause it once. True when
        this call paused it; False when it was paused already or is gone."""
        ...

    def resume_server(self, tenant_id: str, server_id: str, *, paused_at: datetime, at: datetime, detail: str) -> bool:
        """End the pause that began at `paused_at` (never a later one), adding a `server.resumed` event:
        one conditional write. True when this call resumed it."""
        ...

    def consume_quota(self, tenant_id: str, window: str, units: int, *, limit: int, expires_at: int) -> bool:
        """Count `units` against the tenant's counter for `window` (e.g. one UTC day), if the count
        stays within `limit`: one atomic conditional add, so two concurrent callers cannot both take
        the last units. False when they do not fit (nothing is counted). The counter may vanish after
        `expires_at` (epoch seconds, a little after the window ends)."""
        ...

    def release_quota(self, tenant_id: str, window: str, units: int) -> None:
        """Give back `units` counted in `window` by a submission that then failed (never below zero;
        a counter that is gone stays gone)."""
        ...


@dataclass(frozen=True)
class Page:
    messages: list[MessageRecord]
    cursor: str | None


@dataclass(frozen=True)
class Transition:
    """A status change written only if the message is still in `expected` at `attempt`."""

    status: MessageStatus
    events: Sequence[Event] = ()
    attempt: Attempt | None = None
    reply: Reply | None = None
    bounce_class: str | None = None
    failure_reason: str | None = None  # set on the message when given; removed otherwise
    next_attempt_at: datetime | None = None  # set on the message when given; removed otherwise


@dataclass(frozen=True)
class DueMessage:
    """An entry of a sweeper's shard as the sweeper sees it: the message's state read from its item.

    `due_at` (epoch seconds) is when its way forward should have acted: scheduled, its `send_at`;
    deferred, its `next_attempt_at`; or the sweeper's last look at it. It is written when the message
    waits, and nothing else: the lease does not move it and a final status does not remove it (one
    index write each saved per message). So an entry may be a final message's (the sweeper passes it),
    or a `sending` one's whose `lease_until` is still live (moved to its lease's end, `move_due`).
    A message queued at its creation has no due time (`due_at` None) until the sweeper gives it one:
    it is found through its tenant's creation shard (petrel.resources.creation_shard), where a message
    that has a due time is the due shards' to look at. `position` is where this entry is in its shard:
    the cursor that goes on after it (the sweeper's watermark).
    """

    tenant_id: str
    email_id: str
    message_id: str
    status: MessageStatus
    attempt: int
    pool: Pool
    due_at: int | None  # None: none yet (a message found in its creation shard)
    lease_until: int | None = None  # a `sending` message's lease (the lease does not move `due_at`)
    position: str = ""

    @property
    def key(self) -> MessageKey:
        return MessageKey.of(self)


@dataclass(frozen=True)
class DuePage:
    messages: list[DueMessage]
    cursor: str | None


class MessageStore(Protocol):
    def create_email(self, email: EmailRecord, messages: Sequence[MessageRecord], expires_at: int) -> None:
        """Store an email and its messages; AlreadyExists (nothing written) when the tenant has an email
        by that id. Several messages are stored all or nothing; one may be stored after its email, and
        an email stored without its message (a crash in between) is not shown by `get_email` (a 404;
        nobody was answered 202 for it), is never due and expires.

        Every write that sets a waiting status (not the lease, not a final status) also sets the
        message's due time (see `DueMessage`), except a message's creation as `queued`
        (petrel.models.due.creation_due_time)."""
        ...

    def get_email(self, key: EmailKey) -> tuple[EmailRecord, list[MessageRecord]] | None: ...
    def get_email_record(self, key: EmailKey) -> EmailRecord | None: ...

    def get_email_records(self, keys: Sequence[EmailKey]) -> dict[EmailKey, EmailRecord]:
        """The email records of `keys` read together (the send worker's batch: one request, not one per
        message): those found, by key. Eventually consistent: one just created may be missing from the
        answer, where `get_email_record` then finds it."""
        ...

    def get_message(self, key: MessageKey) -> MessageRecord | None: ...

    def find_message_key(self, tenant_id: str, message_id: str) -> MessageKey | None:
        """The full key of this tenant's message `message_id`; None when it has none by that id."""
        ...

    def lease(self, key: MessageKey, *, after_attempt: int, now: int, lease_until: int) -> MessageRecord:
        """Lease the message for `lease_until`, if the job that asks still applies:

        - queued, deferred or scheduled at attempt `after_attempt` (the job's own attempt): it moves to
          `sending` at attempt `after_attempt + 1`, with `takeovers` back at 0; or
        - `sending` at attempt `after_attempt + 1` whose lease expired (`lease_until < now`: the worker
          that held it died): a takeover of the SAME attempt, counted in `takeovers`. This works for
          any number of crashes of the same job.

        One conditional write for a first lease; a takeover costs a second one. Returns the leased
        message. RecordNotFound: no such message; WriteConflict: finished, leased by another, or a
        stale job.
        """
        ...

    def transition(
        self,
        key: MessageKey,
        *,
        expected: Sequence[MessageStatus],
        attempt: int | None,
        change: Transition,
        now: datetime,
        lease_until: int | None = None,
    ) -> None:
        """Apply `change` if the message's status is in `expected` (and at `attempt`, and still under
        the lease that ends at `lease_until`, when given: a takeover keeps the attempt but not the
        lease, so a worker that lost its lease cannot record over the one that took it).

        RecordNotFound: no such message; WriteConflict: it is not as expected (nothing changes)."""
        ...

    def list_messages(self, tenant_id: str, *, status: MessageStatus | None, limit: int, cursor: str | None) -> Page:
        """The tenant's messages, newest first; InvalidCursor for a cursor of another listing. A page
        may hold fewer than `limit` messages (even none) and still a cursor: the listing ends when
        the cursor is None (a status without an index of its own is found by examining a bounded
        number of messages per call)."""
        ...

    def find_due(self, shard: str, *, due_before: int, limit: int, cursor: str | None) -> DuePage:
        """The entries of one due shard whose due time is at or before `due_before`, earliest first,
        after `cursor` (a page's cursor or an entry's `position`), final messages' included; an entry
        whose message is gone is left out. InvalidCursor for a cursor of another shard.

        A creation shard (petrel.resources.creation_shard) holds all of its tenant's messages created
        before `due_before`, in creation order, each with its due time if it has one."""
        ...

    def due_watermark(self, shard: str) -> str | None:
        """The position in `shard` up to which the sweeper has looked at every entry (None: none yet)."""
        ...

    def set_due_watermark(self, shard: str, position: str) -> None:
        """Record the sweeper's watermark of `shard` (a `position` of `find_due`)."""
        ...

    def claim_repair(self, message: DueMessage, *, now: int) -> None:
        """Move the message's due time to `now` if it is still as seen (status, attempt and due time, or
        none when it had none: it then gets its entry in the due index):
        succeeds once, for one sweeper, however many look at the same message; the others get
        WriteConflict (RecordNotFound when the message is gone)."""
        ...

    def move_due(self, message: DueMessage, *, to: int) -> None:
        """Move the message's due time to `to` if it is still as seen (status, attempt and due time),
        as `claim_repair` does: the sweeper's later look at a message whose way forward is still live
        (a `sending` message's lease). WriteConflict / RecordNotFound as `claim_repair`."""
        ...

    def adopt_due(self, message: DueMessage, *, to: int) -> None:
        """Give a message found in its creation shard the due time `to` if it has none yet, whatever
        its state: the sweeper's way out when its conditional write lost to a change it did not see
        (the due shards look at the message again from `to`), so a creation shard's watermark never
        waits on a message. WriteConflict: it has a due time already; RecordNotFound: it is gone."""
        ...

    def record_events(self, key: MessageKey, events: Sequence[Event], *, now: datetime) -> None:
        """Append events to the message's timeline without touching its status (a late report, a
        reply, a complaint). An event already there (same type, time and detail) is not added twice.
        RecordNotFound: no such message; WriteConflict: other writers kept changing the timeline (the
        caller's job is retried)."""
        ...


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None: ...
    def get(self, key: str) -> bytes:
        """The object's bytes; RecordNotFound when there is no such object."""
        ...

    def size(self, key: str) -> int | None:
        """The object's length in bytes, or None when there is no such object."""
        ...

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> str:
        """A URL that lets its holder PUT exactly one object at `key` (of this type and length, where
        the store can bind them) for `expires_in` seconds, without credentials of their own."""
        ...

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that lets its holder GET the object at `key` for `expires_in` seconds (served as an
        attachment named `filename`, when given)."""
        ...


class JobQueue(Protocol):
    def send_jobs(self, pool: Pool, jobs: Sequence[SendJob], delay_seconds: int = 0) -> list[SendJob]:
        """Enqueue jobs on the pool's send queue (visible after `delay_seconds`, at most 900);
        returns the jobs that could NOT be enqueued."""
        ...

    def backlog(self, pool: Pool) -> int:
        """Jobs on the pool's send queue: waiting, delayed or in flight (as SQS approximates them)."""
        ...


class IngestQueue(Protocol):
    def send_ingest(self, job: IngestJob) -> None:
        """Put one ingest job on the ingest queue (raises what the queue raised when it cannot)."""
        ...


class MailboxStore(Protocol):
    """The mailboxes a tenant has Petrel read, and the poller's memory of each (tenants table)."""

    def create_mailbox(self, mailbox: Mailbox) -> None:
        """AlreadyExists when the tenant has a mailbox by that id, or one for that address (compared
        without case): nothing is written. Two concurrent creates for one address: one wins."""
        ...

    def put_mailbox(self, mailbox: Mailbox) -> None: ...
    def get_mailbox(self, tenant_id: str, mailbox_id: str) -> Mailbox | None: ...
    def list_mailboxes(self, tenant_id: str) -> list[Mailbox]: ...
    def list_all_mailboxes(self) -> list[Mailbox]:
        """Every tenant's mailboxes (the poller's work list)."""
        ...

    def delete_mailbox(self, tenant_id: str, mailbox_id: str) -> None:
        """Removes the mailbox with its cursors and health (its address is free again); RecordNotFound
        when there is none."""
        ...

    def get_cursor(self, tenant_id: str, mailbox_id: str, folder: str) -> FolderCursor | None: ...
    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        """Write `cursor` if the stored one is still `expected` (None: there is none yet), compared on
        (uidvalidity, last_uid); WriteConflict when another poller moved it meanwhile."""
        ...

    def put_health(self, health: MailboxHealth) -> None: ...
    def get_health(self, tenant_id: str, mailbox_id: str) -> MailboxHealth | None: ...


@dataclass(frozen=True)
class InboundPage:
    records: list[InboundRecord]
    cursor: str | None


class InboundStore(Protocol):
    def create_inbound(self, record: InboundRecord, content: InboundContent, *, expires_at: int) -> None:
        """Write the record and its content in one transaction; AlreadyExists when the tenant has an
        incoming message by that id (nothing is written)."""
        ...

    def get_inbound(self, tenant_id: str, inbound_id: str) -> InboundRecord | None: ...
    def get_content(self, tenant_id: str, inbound_id: str) -> InboundContent | None: ...
    def set_outcome(self, tenant_id: str, inbound_id: str, outcome: str) -> None:
        """Record what ingesting the message did (e.g. `bounced`, `event`, `unmatched`) once it is done;
        RecordNotFound when there is no such record."""
        ...

    def list_inbound(
        self,
        tenant_id: str,
        *,
        kind: InboundKind | None,
        email_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> InboundPage:
        """The tenant's incoming mail, newest first: all, of one kind, about one email, or both (the
        email's, of that kind). InvalidCursor for a cursor of another listing."""
        ...


class RetryScheduler(Protocol):
    """One-time schedules that put a job on its pool's send queue at a given time, then vanish."""

    def schedule(self, name: str, at: datetime, job: Job) -> None:
        """Create schedule `name`; AlreadyExists when one by that name exists (nothing changes)."""
        ...

    def cancel(self, name: str) -> None:
        """Delete schedule `name`; RecordNotFound when there is none (fired already, or never made)."""
        ...


@dataclass(frozen=True)
class SuppressionPage:
    suppressions: list[Suppression]
    cursor: str | None


class SuppressionStore(Protocol):
    def add(self, suppression: Suppression) -> None:
        """Add an address; AlreadyExists when it is on the list already (the first entry is kept)."""
        ...

    def get(self, tenant_id: str, email: str) -> Suppression | None: ...
    def remove(self, tenant_id: str, email: str) -> None:
        """RecordNotFound when the address is not on the tenant's list."""
        ...

    def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> SuppressionPage:
        """The tenant's list in address order; InvalidCursor for a cursor it did not hand out."""
        ...


class SecretStore(Protocol):
    def get_secret(self, name: str) -> str:
        """The secret's value; RecordNotFound when there is none by that name (or it is deleted)."""
        ...

    def put_secret(self, name: str, value: str) -> None:
        """Create the secret, or replace its value."""
        ...

    def create_secret(self, name: str, value: str) -> None:
        """Create the secret, never replacing one: AlreadyExists when the name is taken, also by a
        deleted secret still in its recovery window (7 days: `delete_secret`), whose name cannot be
        used again until the window ends. What makes two writers of one name see each other."""
        ...

    def delete_secret(self, name: str) -> None:
        """Schedule its deletion (a 7-day recovery window: the name stays taken for `create_secret`);
        RecordNotFound when there is none by that name."""
        ...


class DnsLookupError(PortError):
    """A lookup that got no answer (timeout, SERVFAIL, refused): the record's state is unknown,
    unlike a name or type that does not exist, which is an empty answer."""


class DnsResolver(Protocol):
    def txt(self, name: str) -> list[str]:
        """The TXT records at `name`, each one string (its character-strings joined); [] when the name
        or the type does not exist. DnsLookupError when no answer came."""
        ...

    def mx(self, name: str) -> list[tuple[int, str]]:
        """The MX records at `name` as (preference, host without the trailing dot, lower-cased); [] when
        none. DnsLookupError when no answer came."""
        ...


IdempotencyState = Literal["new", "in_progress", "completed", "mismatch"]


@dataclass(frozen=True)
class IdempotencyRecord:
    """A claim's state; a completed one carries its response (opaque bytes), or where it is kept."""

    state: IdempotencyState
    response: bytes | None = None
    response_key: str | None = None  # a BlobStore key, for a response too large for the record


class IdempotencyStore(Protocol):
    def begin(
        self, key: str, request_hash: str, *, now: int, expires_at: int, in_flight_until: int
    ) -> IdempotencyRecord:
        """Claim `key` (state `new`), or report the earlier request's state under that key."""
        ...

    def complete(self, key: str, *, response: bytes | None, response_key: str | None) -> None:
        """Mark the claim completed with its response (or the blob key holding it). A claim released
        meanwhile is not resurrected, and that is no error: the response is simply not kept."""
        ...

    def release(self, key: str) -> None: ...


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    envid: str


class SmtpRelay(Protocol):
    """Relays one envelope through a tenant's server; keeps sessions open across calls.

    Every outcome is a reply, a value: a refusal, a failed AUTH or TLS handshake, a server that is
    down or drops the session. Only a bug raises (tests/integration/contracts/test_smtp_relay_contract.py).
    """

    def relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        """The reply that ended the transaction (2xx on success; code 0 for a network failure).

        `deadline` (a `time.monotonic()` instant) bounds the whole transaction, connect to the end of
        DATA, besides the relay's own per-transaction limit: the earlier of the two wins.
        Safe to call from several threads at once: each transaction has a session of its own.
        """
        ...

    def close_idle(self) -> None:
        """Close the sessions idle past the relay's limit; the others stay open for the next invocation
        of a warm container (the worker calls this at the end of each invocation)."""
        ...

    def close(self) -> None:
        """Close every session (those in use as soon as their transactions end)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class MailboxError(PortError):
    """Reading a tenant's mailbox failed: the server refused the connection, the TLS handshake or the
    login, a folder, or the connection broke. The message says what, for the mailbox's health record,
    and never carries the password. `connection_lost`: the session cannot be used any more (a folder
    the server refused leaves it usable for the next folder)."""

    def __init__(self, message: str, *, stage: str, connection_lost: bool = True) -> None:
        super().__init__(message)
        self.stage = stage
        self.connection_lost = connection_lost


@dataclass(frozen=True)
class FetchedMessage:
    """One message of the selected folder: its UID there and its raw bytes, as the server keeps them."""

    uid: int
    raw: bytes


class MailboxSession(Protocol):
    """One logged-in IMAP connection. Every failure is a MailboxError; `close` never raises."""

    def select(self, folder: str, *, writable: bool) -> int:
        """Select `folder` (read-only unless `writable`) and return its UIDVALIDITY."""
        ...

    def uids_after(self, last_uid: int) -> list[int]:
        """The selected folder's UIDs greater than `last_uid`, ascending."""
        ...

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The raw messages of these UIDs (without setting \\Seen), ascending by UID; a UID expunged
        meanwhile is simply absent."""
        ...

    def mark_seen(self, uids: Sequence[int]) -> None: ...
    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move the messages to `folder` (created when missing)."""
        ...

    def close(self) -> None: ...


class MailboxReader(Protocol):
    """Opens IMAP sessions to tenants' mailboxes (TLS verified, logged in)."""

    def open(self, mailbox: Mailbox, password: str, *, deadline: float | None = None) -> MailboxSession:
        """A logged-in session; MailboxError when the server cannot be reached, the TLS handshake fails
        or the login is refused. `deadline` (a `time.monotonic()` instant): the connection is cut then,
        whatever it is doing."""
        ...


# -- traffic shaping (petrel.services.shaping; adapters/buckets.py) ------------------------------------


@dataclass(frozen=True)
class BucketSpec:
    """One token bucket: its key (petrel.services.shaping builds them: `srv#<tenant>#<server>`,
    `prov#<tenant>#<server>#<provider>`, `ten#<tenant>`), the tokens it earns per second (already
    multiplied by any slow-down the caller knows of) and the most tokens it holds."""

    key: str
    rate: float
    burst: float


@dataclass(frozen=True)
class Grant:
    """What one `TokenBuckets.take` gave: `granted` tokens (0..wanted), and `wait_seconds` until the next
    token (0.0 when every token wanted was granted)."""

    granted: int
    wait_seconds: float


@dataclass(frozen=True)
class ServerStats:
    """A server's recent outcomes: over about its last `window` sends (between half and all of it),
    how many it answered and how many of those were hard bounces; and the run of connection failures
    since it last answered."""

    sends: int
    bounces: int
    consecutive_failures: int

    @property
    def bounce_rate(self) -> float:
        return self.bounces / self.sends if self.sends else 0.0


MAX_SLOW_DOWN_HALVINGS = 4  # a slowed bucket's rate falls to 1/16 at the lowest


class TokenBuckets(Protocol):
    """Shared rate limits for every worker (one DynamoDB item per key), written with conditional
    updates so that concurrent callers never spend a token twice nor lose one. Times are the caller's
    (`now`: epoch seconds), so every decision can be replayed in a test."""

    def take(self, bucket: BucketSpec, wanted: int, *, now: float) -> Grant:
        """Up to `wanted` tokens now (never more than the bucket holds; a partial grant when it holds
        fewer): one conditional write in the common case."""
        ...

    def give_back(self, bucket: BucketSpec, count: int, *, now: float) -> None:
        """Return `count` tokens taken but not used; the bucket never ends up holding more than it would
        have had they not been taken (never more than its burst)."""
        ...

    def take_daily(self, key: str, wanted: int, *, cap: int, day: str) -> int:
        """Up to `wanted` of what is left of `cap` in `key`'s counter for the UTC `day` (`2026-11-30`),
        atomically; a new day starts at zero. The counter expires a few days after its day."""
        ...

    def slow_down(self, key: str, *, now: float, seconds: float) -> float:
        """A provider said "slow down" (421, 4.7.x): halve `key`'s factor and hold it for `seconds`
        (halved again if already slowed, down to 1/2**MAX_SLOW_DOWN_HALVINGS). Each call halves: call it
        once per bucket per batch. Returns the factor now in force."""
        ...

    def factor(self, key: str, *, now: float) -> float:
        """The rate factor in force for `key`: 1.0 when never slowed; while slowed, 1/2**n, held for the
        slow-down's `seconds` after the last one and then doubling back each further `seconds`."""
        ...

    def record_outcomes(self, key: str, *, sends: int, bounces: int, failures: int, window: int) -> ServerStats:
        """Add one batch's outcomes for a server (one write): `sends` transactions it answered (relayed or
        refused), `bounces` of them hard bounces, `failures` connection failures. The window keeps two
        halves of `window // 2` sends, the older dropped when the newer fills. Failures: when the server
        answered in this batch (`sends > 0`) the run becomes `failures` (those after its last answer,
        usually 0); when it answered nothing, `failures` add to the run. Returns the stats after."""
        ...


class UsagePlans(Protocol):
    """API Gateway's API keys and usage plans, as the edge throttles tenants by them (one key per tenant,
    in its plan's usage plan; the authorizer names the key by its value, `usageIdentifierKey`).

    Every method is safe to repeat: `ensure_key` finds the key it made before, `add_key` of a key in
    the plan already and `remove_key` of one not in it do nothing."""

    def plan_id(self, name: str) -> str:
        """The id of the usage plan called `name` (RecordNotFound when there is none). The stack names
        its plans, not their ids: an id in the admin function's environment would make a dependency
        cycle (plan -> stage -> deployment -> admin method -> admin function)."""
        ...

    def ensure_key(self, name: str, value: str) -> str:
        """The id of the API key called `name` (created, enabled, with `value` when there is none)."""
        ...

    def find_key(self, name: str) -> str | None:
        """The id of the API key called `name`, or None."""
        ...

    def delete_key(self, key_id: str) -> None:
        """Delete an API key (RecordNotFound when there is none)."""
        ...

    def plan_keys(self, plan_id: str) -> set[str]:
        """The ids of the API keys in a usage plan."""
        ...

    def add_key(self, plan_id: str, key_id: str) -> None:
        """Put an API key in a usage plan (no-op when it is there)."""
        ...

    def remove_key(self, plan_id: str, key_id: str) -> None:
        """Take an API key out of a usage plan (no-op when it is not there)."""
        ...
