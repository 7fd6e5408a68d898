"""The one definition of Petrel's tables and queues.

The CDK constructs, the local stack and the tests all provision from these specs, so a key,
an index, a TTL attribute or a queue setting is changed here and nowhere else.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

AttributeType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: AttributeType = "S"


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index. `projection`: the attributes it holds besides the keys (None: all)."""

    name: str
    partition_key: Key
    sort_key: Key | None = None
    projection: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableSpec:
    """A DynamoDB table: on-demand, point-in-time recovery, TTL on `ttl_attribute`."""

    name: str
    env_var: str
    partition_key: Key
    sort_key: Key | None = None
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str = "expires_at"


@dataclass(frozen=True)
class QueueSpec:
    """An SQS queue with its own dead-letter queue.

    `visibility_factor` multiplies the consuming function's timeout (AWS asks for at least 6x).
    Receive count, batch size and concurrency are per environment (infra/config.py).
    """

    name: str
    env_var: str
    pool: str | None = None
    arn_env_var: str | None = None
    visibility_factor: int = 6
    dlq_retention_days: int = 14
    tags: dict[str, str] = field(default_factory=dict)


# -- tenants: one partition per tenant (pk = tenant id), its items told apart by sort key ------------
# An API key is found by the hash of its secret alone (the authorizer knows nothing else).
BY_KEY_HASH = IndexSpec("by_key_hash", Key("key_hash"))

TENANTS = TableSpec(
    name="tenants",
    env_var="PETREL_TENANTS_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    indexes=(BY_KEY_HASH,),
)

TENANT_SK = "TENANT"
API_KEY_SK_PREFIX = "APIKEY#"
DOMAIN_SK_PREFIX = "DOMAIN#"
SERVER_SK_PREFIX = "SERVER#"
MAILBOX_SK_PREFIX = "MAILBOX#"  # a mailbox the poller reads (its record)
CURSOR_SK_PREFIX = "CURSOR#"  # how far it has read one folder: CURSOR#<mailbox id>#<folder>
HEALTH_SK_PREFIX = "HEALTH#"  # its last poll: HEALTH#<mailbox id>
MAILBOX_ADDRESS_SK_PREFIX = "MAILBOXADDR#"  # claims an address for one mailbox: MAILBOXADDR#<address>
QUOTA_SK_PREFIX = "QUOTA#"  # a quota window's counter: QUOTA#<window> (TTL: a little after the window)


def api_key_sk(key_id: str) -> str:
    return f"{API_KEY_SK_PREFIX}{key_id}"


def domain_sk(domain: str) -> str:
    return f"{DOMAIN_SK_PREFIX}{domain}"


# A domain belongs to one tenant: its claim is an item of its own partition (pk DOMAINCLAIM#<domain>,
# sk CLAIM, naming the tenant), written in one transaction with the tenant's domain record.
DOMAIN_CLAIM_PK_PREFIX = "DOMAINCLAIM#"
DOMAIN_CLAIM_SK = "CLAIM"


def domain_claim_pk(domain: str) -> str:
    return f"{DOMAIN_CLAIM_PK_PREFIX}{domain.lower()}"


def server_sk(server_id: str) -> str:
    return f"{SERVER_SK_PREFIX}{server_id}"


def mailbox_sk(mailbox_id: str) -> str:
    return f"{MAILBOX_SK_PREFIX}{mailbox_id}"


def cursor_sk(mailbox_id: str, folder: str) -> str:
    return f"{CURSOR_SK_PREFIX}{mailbox_id}#{folder}"


def health_sk(mailbox_id: str) -> str:
    return f"{HEALTH_SK_PREFIX}{mailbox_id}"


def quota_sk(window: str) -> str:
    return f"{QUOTA_SK_PREFIX}{window}"


def mailbox_address_sk(address: str) -> str:
    """The item that makes a mailbox's address the tenant's one mailbox for it (case-insensitive)."""
    return f"{MAILBOX_ADDRESS_SK_PREFIX}{address.lower()}"


# The sparse "due" index of the sweeper (petrel.services.sweep). A message that waits carries `due_shard`
# and `due_at`: the epoch second by which its way forward should have acted (scheduled: send_at;
# deferred: next_attempt_at; or the sweeper's last look at it). Written when a message waits, and by the
# sweeper; nothing else moves it: not the lease, not a final status (the sweeper reads each entry's
# message, passes final ones, and keeps a watermark per shard, so each entry is read about once). Only
# `pool`, which never changes, is projected.
# A message queued at its creation carries no due entry (one index write saved per message): its way
# forward is its job, and the sweeper finds it through its tenant's listing index (`by_tenant`, written
# at creation anyway), walked in creation order from a watermark per tenant: the "creation shard" of
# each tenant (`creation_shard`). Whatever the sweeper finds there that needs a later look (a live
# lease, a backlog, a repair) it gives a due entry, and the due shards take it from there.
# The shard spreads the index's partition key (`due#0` .. `due#<DUE_SHARDS - 1>`) over messages.
DUE_SHARDS = 8
DUE_SHARD = "due_shard"
DUE_AT = "due_at"
DUE_INDEX = IndexSpec("by_due_v2", Key(DUE_SHARD), Key(DUE_AT, "N"), projection=("pool",))


def due_shard(message_id: str) -> str:
    """The shard of a message: a stable hash of its id (the same in every process), `due#<n>`."""
    return f"due#{zlib.crc32(message_id.encode()) % DUE_SHARDS}"


def due_shards() -> tuple[str, ...]:
    return tuple(f"due#{n}" for n in range(DUE_SHARDS))


CREATION_SHARD_PREFIX = "new#"


def creation_shard(tenant_id: str) -> str:
    """The sweeper's walk of one tenant's messages in creation order (its `by_tenant` partition)."""
    return f"{CREATION_SHARD_PREFIX}{tenant_id}"


def creation_shard_tenant(shard: str) -> str | None:
    """The tenant whose creation shard `shard` is; None for a shard of the due index."""
    return shard.removeprefix(CREATION_SHARD_PREFIX) if shard.startswith(CREATION_SHARD_PREFIX) else None


# -- messages: one partition per email (pk = `<tenant>#<email>`): the email item, then its messages --
# GET /v1/emails lists a tenant's messages newest first from `by_tenant` (keys only, written once, at
# creation; the page's items are read with BatchGetItem): `listed_tenant` is the tenant, `listed_at` the
# creation time (epoch seconds). What carries them is the listing's entry for a message:
# - an email of one message created `queued` is ONE item until its message's first write (the lease,
#   a cancel, the sweeper): the email item, listed, stands for its message as created (petrel.adapters.
#   message_items.pending_message); that first write creates the message item, not listed;
# - any other email's message items are listed (its email item is not).
# `by_tenant_status` (`tenant_status` = `<tenant>#<status>`, `created_key` = `<created_at>#<message
# id>`) is sparse: only the statuses off the happy path (INDEXED_STATUSES) carry it, so a message relayed
# first try never writes it; listing one of the other statuses walks `by_tenant` and filters.
LISTED_TENANT = "lt"
LISTED_AT = "lc"
BY_TENANT = IndexSpec("by_tenant_v3", Key(LISTED_TENANT), Key(LISTED_AT, "N"), projection=())
BY_TENANT_STATUS = IndexSpec("by_tenant_status_v2", Key("tenant_status"), Key("created_key"), projection=())
INDEXED_STATUSES = frozenset({"scheduled", "deferred", "bounced", "failed", "suppressed", "cancelled"})
# A message id to its email, for messages stored before message ids derived from their email's id
# (petrel.ids.email_id_of): those items carry `message_id`, newer ones do not (sparse). Nothing
# projected but the keys and `tenant_id` (checked against the caller's), which never change.
BY_MESSAGE_ID = IndexSpec("by_message_id", Key("message_id"), projection=("tenant_id",))

# Migration from by_tenant_v2 (`tenant_id`, `created_key`) to by_tenant_v3: add by_tenant_v3 to the
# previous release's spec and deploy (one GSI added); deploy this release (by_tenant_v2 dropped: one
# GSI deleted); at once run `petrel migrate listing` (DynamoMessageStore.backfill_listing), which gives
# every message item that has `created_key` but no `listed_tenant` its listing keys, conditionally
# (idempotent; a pending email's message item, not listed, is passed).
# Migration from the indexes before issue 11 (by_tenant, by_tenant_status: ALL; by_due: six attributes
# projected): a projection cannot change in place, so the new ones have new names, and CloudFormation
# creates or deletes one GSI per stack update. An existing deployment goes in steps: add by_tenant_v2,
# by_tenant_status_v2, by_due_v2 to the old release's spec, one per deploy, each ACTIVE (backfilled)
# before the next; deploy this code with the old three still declared; then drop them one per deploy.
# Old items keep working (petrel.adapters.message_items reads both forms; by_message_id finds old ids).
MESSAGES = TableSpec(
    name="messages",
    env_var="PETREL_MESSAGES_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    indexes=(BY_TENANT, BY_TENANT_STATUS, BY_MESSAGE_ID, DUE_INDEX),
)

EMAIL_SK = "EMAIL"
MESSAGE_SK_PREFIX = "MSG#"


def email_pk(tenant_id: str, email_id: str) -> str:
    """The partition of an email and its messages; the tenant id first, as in every tenant key."""
    return f"{tenant_id}#{email_id}"


def split_email_pk(pk: str) -> tuple[str, str]:
    """(tenant id, email id) of an `email_pk` (tenant ids hold no `#`)."""
    tenant_id, _, email_id = pk.partition("#")
    return tenant_id, email_id


def message_sk(message_id: str) -> str:
    return f"{MESSAGE_SK_PREFIX}{message_id}"


def created_key(created_at: datetime, message_id: str) -> str:
    """`by_tenant_status`'s sort key: creation time, then the id, so equal times still order."""
    return f"{created_at.isoformat()}#{message_id}"


def tenant_status(tenant_id: str, status: str) -> str:
    """The `by_tenant_status` partition of a tenant's messages in one status."""
    return f"{tenant_id}#{status}"


IDEMPOTENCY = TableSpec(
    name="idempotency",
    env_var="PETREL_IDEMPOTENCY_TABLE",
    partition_key=Key("pk"),
)

# -- suppressions: one item per (tenant, lower-cased address); no TTL is ever set on it ------------
SUPPRESSIONS = TableSpec(
    name="suppressions",
    env_var="PETREL_SUPPRESSIONS_TABLE",
    partition_key=Key("tenant_id"),
    sort_key=Key("email"),
)

# -- inbound: one partition per incoming message (pk = `<tenant>#<inbound id>`): its record (sk
# INBOUND) and its content (sk CONTENT), written in one transaction. Only the record item carries the
# listing attributes, so the indexes hold records only: all of a tenant's, newest first
# (`received_key` = `<received_at>#<inbound id>`), those of one kind (`tenant_kind`), and those about
# one Petrel email (`tenant_email`).
INBOUND_RECEIVED_KEY = "received_key"
BY_TENANT_RECEIVED = IndexSpec("by_tenant", Key("tenant_id"), Key(INBOUND_RECEIVED_KEY))
BY_TENANT_KIND = IndexSpec("by_tenant_kind", Key("tenant_kind"), Key(INBOUND_RECEIVED_KEY))
BY_TENANT_EMAIL = IndexSpec("by_tenant_email", Key("tenant_email"), Key(INBOUND_RECEIVED_KEY))

INBOUND = TableSpec(
    name="inbound",
    env_var="PETREL_INBOUND_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    indexes=(BY_TENANT_RECEIVED, BY_TENANT_KIND, BY_TENANT_EMAIL),
)
INBOUND_SK = "INBOUND"
INBOUND_CONTENT_SK = "CONTENT"


def inbound_pk(tenant_id: str, inbound_id: str) -> str:
    return f"{tenant_id}#{inbound_id}"


def received_key(received_at: datetime, inbound_id: str) -> str:
    return f"{received_at.isoformat()}#{inbound_id}"


def inbound_raw_key(tenant_id: str, inbound_id: str) -> str:
    """Where an incoming message's raw bytes are kept (the same key whoever stores them: idempotent)."""
    return f"{INBOUND_PREFIX}{tenant_id}/{inbound_id}/raw.eml"


def inbound_attachment_key(tenant_id: str, inbound_id: str, attachment_id: str) -> str:
    return f"{INBOUND_PREFIX}{tenant_id}/{inbound_id}/{attachment_id}"


# -- buckets: traffic shaping's state (petrel.services.shaping), one item per key (pk): the token
# buckets (per server, server x provider, tenant), the servers' daily warm-up counters and their
# recent outcomes. Written with conditional updates; daily items expire a little after their day.
BUCKETS = TableSpec(
    name="buckets",
    env_var="PETREL_BUCKETS_TABLE",
    partition_key=Key("pk"),
)

TABLES: tuple[TableSpec, ...] = (TENANTS, MESSAGES, IDEMPOTENCY, SUPPRESSIONS, INBOUND, BUCKETS)

SEND_TRANSACTIONAL = QueueSpec(
    name="send-transactional",
    env_var="PETREL_SEND_TRANSACTIONAL_QUEUE_URL",
    pool="transactional",
    arn_env_var="PETREL_SEND_TRANSACTIONAL_QUEUE_ARN",
)
SEND_BULK = QueueSpec(
    name="send-bulk",
    env_var="PETREL_SEND_BULK_QUEUE_URL",
    pool="bulk",
    arn_env_var="PETREL_SEND_BULK_QUEUE_ARN",
)

SEND_QUEUES: tuple[QueueSpec, ...] = (SEND_TRANSACTIONAL, SEND_BULK)

# Raw incoming mail to ingest (petrel.models.inbound.IngestJob): from the poller, POST
# /v1/inbound/raw and the send worker's local deliveries; consumed by the ingest worker.
INGEST = QueueSpec(name="ingest", env_var="PETREL_INGEST_QUEUE_URL", arn_env_var="PETREL_INGEST_QUEUE_ARN")

QUEUES: tuple[QueueSpec, ...] = (*SEND_QUEUES, INGEST)


@dataclass(frozen=True)
class ScheduleSpec:
    """EventBridge Scheduler: one-time schedules that put a job on its pool's send queue (a SendJob
    for a deferred message's next attempt, a ReleaseJob for an email's `send_at`).

    Each schedule is `at(...)`, flexible window off, deleted after it fires; what Scheduler cannot
    deliver goes to `dlq` (a plain queue, no DLQ of its own). The role lets Scheduler send to the
    send queues and to `dlq`.
    """

    group: str
    group_env_var: str
    role_env_var: str
    dlq: str
    dlq_arn_env_var: str
    dlq_retention_days: int = 14
    # Scheduler's own retry policy when SQS refuses the message (not Petrel's ladder).
    max_retry_attempts: int = 10
    max_event_age_seconds: int = 86_400


SCHEDULES = ScheduleSpec(
    group="schedules",
    group_env_var="PETREL_SCHEDULE_GROUP",
    role_env_var="PETREL_SCHEDULER_ROLE_ARN",
    dlq="schedules-dlq",
    dlq_arn_env_var="PETREL_SCHEDULER_DLQ_ARN",
)

# Petrel's retry ladder (DESIGN §1): seconds after each failed attempt; the last repeats.
# Overridden per environment with PETREL_RETRY_DELAYS ("60,300,...") and PETREL_RETRY_JITTER.
RETRY_DELAYS_ENV = "PETREL_RETRY_DELAYS"
RETRY_JITTER_ENV = "PETREL_RETRY_JITTER"

# The sweeper (SweeperSettings): how long past its due time a message's way forward is given before
# the sweeper repairs it, and how many messages one run repairs at most.
SWEEP_GRACE_ENV = "PETREL_SWEEP_GRACE_SECONDS"
SWEEP_MAX_MESSAGES_ENV = "PETREL_SWEEP_MAX_MESSAGES"
SWEEP_BACKLOG_LIMIT_ENV = "PETREL_SWEEP_BACKLOG_LIMIT"
# The send worker's EMF metric of servers it paused (bounce rate, connection failures): an alarm fires on any.
SERVERS_PAUSED_METRIC = "ServersPaused"
# The sweeper's EMF metric of messages it repaired in a run (an alarm fires on any).
SWEEP_REPAIRED_METRIC = "MessagesRepaired"

BODIES_BUCKET_ENV = "PETREL_BODIES_BUCKET"
# Key prefixes of the bodies bucket; IAM grants stop at the prefixes each function uses.
BODIES_PREFIX = "bodies/"  # message bodies too large to keep inline: bodies/<tenant>/<email>.eml
ATTACHMENTS_PREFIX = "attachments/"  # uploads of POST /v1/attachments: attachments/<tenant>/<id>
IDEMPOTENCY_PREFIX = "idempotency/"  # stored responses too large for an idempotency item
# An upload expires (bucket lifecycle rule on ATTACHMENTS_PREFIX; the API refuses it after as long).
ATTACHMENT_RETENTION_DAYS = 1
INBOUND_PREFIX = "inbound/"  # raw incoming mail and its attachments: inbound/<tenant>/<inbound id>/...
SECRETS_PREFIX_ENV = "PETREL_SECRETS_PREFIX"
# Edge throttling (API Gateway usage plans): the environment's name prefix, which a tenant's usage key
# is made of (the authorizer and the admin API), and the admin API's plans as JSON
# {"<plan name>": "<usage plan name>"} (empty: no API Gateway, as in the local stack).
USAGE_KEY_PREFIX_ENV = "PETREL_USAGE_KEY_PREFIX"
API_PLANS_ENV = "PETREL_API_PLANS"
# DNS (domain verification, the drift re-check, a MailU signer's key): the resolvers asked, as
# "host" or "host:port" separated by commas (empty: the system's), and the timeout of one lookup.
DNS_RESOLVERS_ENV = "PETREL_DNS_RESOLVERS"
DNS_TIMEOUT_ENV = "PETREL_DNS_TIMEOUT_SECONDS"
# A DKIM private key (PEM) is the secret `<secrets prefix><tenant>/dkim/<domain>/<selector>`; IAM grants
# on DKIM keys alone (the API, the domain checker) match this pattern within the secrets prefix.
DKIM_SECRETS_PATTERN = "*/dkim/*"

# -- the functions' other settings (petrel.settings): each name is the alias of one settings field, set
# by infra/constructs/functions.py from cdk.json and by the local stack; nothing spells it elsewhere.
MESSAGE_RETENTION_DAYS_ENV = "PETREL_MESSAGE_RETENTION_DAYS"  # API, worker: the records' TTL
INLINE_BODY_LIMIT_ENV = "PETREL_INLINE_BODY_LIMIT"  # API: larger bodies go to the bodies bucket
LEASE_SECONDS_ENV = "PETREL_LEASE_SECONDS"  # worker: how long it holds a message it is sending
SMTP_TIMEOUT_ENV = "PETREL_SMTP_TIMEOUT_SECONDS"  # worker: each socket operation of a transaction
SMTP_TRANSACTION_ENV = "PETREL_SMTP_TRANSACTION_SECONDS"  # worker: a whole transaction, connect to DATA
CONFIG_CACHE_ENV = "PETREL_CONFIG_CACHE_SECONDS"  # worker: how long tenant configuration is cached
API_ACCESS_LOG_ENV = "PETREL_API_ACCESS_LOG"  # API: whether the function writes its own access line
SENDER_CACHE_ENV = "PETREL_SENDER_CACHE_SECONDS"  # API: how long the send path keeps a tenant's configuration
MAX_RECEIVE_COUNT_ENV = "PETREL_MAX_RECEIVE_COUNT"  # worker: the send queues' maxReceiveCount
INVOCATION_MARGIN_ENV = "PETREL_INVOCATION_MARGIN_SECONDS"  # worker: time kept at an invocation's end
HANDBACK_DELAY_ENV = "PETREL_HANDBACK_DELAY_SECONDS"  # worker: delay of the jobs it hands back
RELAY_CONCURRENCY_ENV = "PETREL_RELAY_CONCURRENCY"  # worker: jobs of a batch relayed at once (threads)
KEEP_SESSIONS_ENV = "PETREL_KEEP_SMTP_SESSIONS"  # worker: keep SMTP sessions open for the next invocation
LOG_EACH_ATTEMPT_ENV = "PETREL_LOG_EACH_ATTEMPT"  # worker: a line per relayed attempt too (the local console)
# Admin API: the environment's max_message_age_hours (cdk.json), the bound of a tenant's max_age_hours.
MAX_MESSAGE_AGE_HOURS_ENV = "PETREL_MAX_MESSAGE_AGE_HOURS"
# The ingest side: how long raw incoming mail (bucket lifecycle on INBOUND_PREFIX) and inbound records
# (TTL) are kept; the poller's schedule (minutes between runs of its EventBridge rule), how many
# mailboxes it reads at once, and the IMAP socket timeout; how long an attachment link is valid.
INBOUND_RETENTION_DAYS_ENV = "PETREL_INBOUND_RETENTION_DAYS"
POLL_INTERVAL_MINUTES_ENV = "PETREL_POLL_INTERVAL_MINUTES"
POLL_CONCURRENCY_ENV = "PETREL_POLL_CONCURRENCY"
IMAP_TIMEOUT_ENV = "PETREL_IMAP_TIMEOUT_SECONDS"
POLL_BATCH_ENV = "PETREL_POLL_BATCH"  # UIDs fetched per IMAP FETCH (the cursor advances after each)
LINK_SECONDS_ENV = "PETREL_LINK_SECONDS"
# The poller's EMF metric of mailboxes whose poll failed in a run (an alarm fires on any).
POLL_ERRORS_METRIC = "MailboxPollErrors"
# The domain checker's EMF metric of domains whose DNS lookups failed in a run (DnsLookupError: the
# resolvers did not answer; an alarm fires on any); a tenant's wrong record is a domain.dns_error event.
DOMAIN_DNS_ERRORS_METRIC = "DomainDnsErrors"

# -- Powertools' own variables, which every function's environment sets (Powertools reads them).
POWERTOOLS_SERVICE_NAME_ENV = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
POWERTOOLS_LOG_LEVEL_ENV = "POWERTOOLS_LOG_LEVEL"
POWERTOOLS_METRICS_DISABLED_ENV = "POWERTOOLS_METRICS_DISABLED"
# The CloudWatch namespace of every function's EMF metrics (and of the alarms on them).
METRICS_NAMESPACE = "Petrel"


def physical_name(prefix: str, name: str) -> str:
    """The deployed name of a table or queue: `<prefix>-<name>`, e.g. `petrel-dev-messages`."""
    return f"{prefix}-{name}"


def dlq_name(queue: QueueSpec) -> str:
    return f"{queue.name}-dlq"


def usage_plan_name(prefix: str, plan: str) -> str:
    """The deployed name of an API plan's usage plan, e.g. `petrel-dev-plan-standard`."""
    return physical_name(prefix, f"plan-{plan}")


def secrets_prefix(prefix: str) -> str:
    """Where tenant secrets live in Secrets Manager; IAM grants stop at this prefix."""
    return f"{prefix}/tenants/"
