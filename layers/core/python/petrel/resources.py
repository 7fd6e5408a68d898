"""The one definition of Petrel's tables and queues.

The CDK constructs, the local stack and the tests all provision from these specs, so a key,
an index, a TTL attribute or a queue setting is changed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AttributeType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: AttributeType = "S"


@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: Key
    sort_key: Key | None = None


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
    visibility_factor: int = 6
    dlq_retention_days: int = 14
    tags: dict[str, str] = field(default_factory=dict)


TENANTS = TableSpec(
    name="tenants",
    env_var="PETREL_TENANTS_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    indexes=(IndexSpec("by_key_hash", Key("key_hash")),),
)

MESSAGES = TableSpec(
    name="messages",
    env_var="PETREL_MESSAGES_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("sk"),
    indexes=(
        IndexSpec("by_tenant", Key("tenant_id"), Key("created_key")),
        IndexSpec("by_tenant_status", Key("tenant_status"), Key("created_key")),
    ),
)

IDEMPOTENCY = TableSpec(
    name="idempotency",
    env_var="PETREL_IDEMPOTENCY_TABLE",
    partition_key=Key("pk"),
)

TABLES: tuple[TableSpec, ...] = (TENANTS, MESSAGES, IDEMPOTENCY)

SEND_TRANSACTIONAL = QueueSpec(
    name="send-transactional", env_var="PETREL_SEND_TRANSACTIONAL_QUEUE_URL", pool="transactional"
)
SEND_BULK = QueueSpec(name="send-bulk", env_var="PETREL_SEND_BULK_QUEUE_URL", pool="bulk")

SEND_QUEUES: tuple[QueueSpec, ...] = (SEND_TRANSACTIONAL, SEND_BULK)

BODIES_BUCKET_ENV = "PETREL_BODIES_BUCKET"
SECRETS_PREFIX_ENV = "PETREL_SECRETS_PREFIX"


def physical_name(prefix: str, name: str) -> str:
    """The deployed name of a table or queue: `<prefix>-<name>`, e.g. `petrel-dev-messages`."""
    return f"{prefix}-{name}"


def dlq_name(queue: QueueSpec) -> str:
    return f"{queue.name}-dlq"


def secrets_prefix(prefix: str) -> str:
    """Where tenant secrets live in Secrets Manager; IAM grants stop at this prefix."""
    return f"{prefix}/tenants/"
