"""Petrel's Lambda functions: the two shared layers, one table of function definitions, and the
`PetrelFunction` construct that turns a definition into a function with its log group, role,
environment and least-privilege grants.

Environment variable names come from `petrel.resources`, whose constants are also the aliases of
the settings models' fields (`petrel.settings`), never from string literals here, so the code that
reads a variable and the infrastructure that sets it cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct
from pydantic import BaseModel

from infra import REPO_ROOT
from infra.access_log import api_function_environment
from infra.config import EnvironmentConfig
from infra.constructs.bodies_bucket import BodiesBucket, BodyAccess
from infra.constructs.common import acknowledge, log_group, logical_ref
from infra.constructs.queues import PetrelQueues
from infra.constructs.schedules import PetrelSchedules
from infra.constructs.tables import PetrelTables, TableAccess
from infra.layers import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, deps_layer_code, petrel_layer_code
from petrel import resources, settings

FUNCTIONS_ROOT = REPO_ROOT / "functions"
HANDLER = "handler.lambda_handler"
_ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", "tests"]

# What a function may do with the tenants' secrets it is granted (Secrets Manager; the actions
# petrel.adapters.secrets calls): "read" their values; "delete" them (the end of retired DKIM keys);
# "read_write" also create, replace and delete them (passwords set by an operator, DKIM keys made for a
# new domain or a rotation).
SecretAccess = Literal["read", "delete", "read_write"]
SECRET_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": ("secretsmanager:GetSecretValue",),
    "delete": ("secretsmanager:DeleteSecret",),
    "read_write": (
        "secretsmanager:GetSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
    ),
}
# Secret names (after the environment's secrets prefix, `<prefix>/tenants/`): every tenant secret
# (SMTP and IMAP passwords, DKIM keys), or only the DKIM private keys, `<tenant>/dkim/<domain>/<selector>`.
ALL_SECRETS = "*"
DKIM_SECRETS = resources.DKIM_SECRETS_PATTERN


@dataclass(frozen=True)
class FunctionDefinition:
    """What one function is: its code directory, settings model, sizing, and what it may touch."""

    name: str  # the directory under functions/
    settings: type[BaseModel]
    memory_mb: Callable[[EnvironmentConfig], int]
    timeout_seconds: Callable[[EnvironmentConfig], int]
    tables: Mapping[str, TableAccess] = field(default_factory=dict)  # TableSpec.name -> access
    # TableSpec.name -> the indexes it may Query (only these: the authorizer alone reads key hashes).
    indexes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # TableSpec.name of the tables it may Scan (item-level access above never includes Scan).
    scans: tuple[str, ...] = ()
    # Key prefix of the bodies bucket -> what it may do there (nothing elsewhere in the bucket).
    bodies: Mapping[str, BodyAccess] = field(default_factory=dict)
    # The queues it puts jobs on (SendMessage): send queues, the ingest queue.
    sends_to: tuple[resources.QueueSpec, ...] = ()
    # Creates, reads and deletes EventBridge Scheduler schedules (deferred and scheduled messages).
    schedules: bool = False
    # Secret names under the environment's secrets prefix (ALL_SECRETS, DKIM_SECRETS) -> what it may do
    # with them; any entry also sets PETREL_SECRETS_PREFIX.
    secrets: Mapping[str, SecretAccess] = field(default_factory=dict)
    extra_environment: Callable[[EnvironmentConfig], dict[str, str]] = lambda _config: {}
    # Concurrent executions reserved for it (and so its ceiling); None: it shares the account's pool.
    reserved_concurrency: Callable[[EnvironmentConfig], int | None] = lambda _config: None

    @property
    def slug(self) -> str:
        return self.name.replace("_", "-")

    @property
    def service_name(self) -> str:
        """The service its logs and metrics carry: the one `petrel.observability.telemetry()` gives it."""
        from petrel.observability import service_name

        return service_name(self.slug)


def _dns_environment(config: EnvironmentConfig) -> dict[str, str]:
    """The resolvers a domain's records are looked up with, and the timeout of one lookup."""
    return {
        resources.DNS_RESOLVERS_ENV: config.dns_resolvers,
        resources.DNS_TIMEOUT_ENV: f"{config.dns_timeout_seconds:g}",
    }


def _api_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {
        resources.MESSAGE_RETENTION_DAYS_ENV: str(config.message_retention_days),
        resources.INBOUND_RETENTION_DAYS_ENV: str(config.inbound_retention_days),
        resources.LINK_SECONDS_ENV: str(config.inbound_link_seconds),
        **_dns_environment(config),  # POST /v1/domains and /verify look the records up
        # The stage's access log is the API's (infra/access_log.py): no second line from the function.
        **api_function_environment(),
    }


def _send_worker_environment(config: EnvironmentConfig) -> dict[str, str]:
    environment = {
        resources.MESSAGE_RETENTION_DAYS_ENV: str(config.message_retention_days),
        # The lease on a message lasts as long as the invocation that holds it can run.
        resources.LEASE_SECONDS_ENV: str(config.worker_timeout_seconds),
        resources.SMTP_TIMEOUT_ENV: str(config.smtp_timeout_seconds),
        resources.SMTP_TRANSACTION_ENV: str(config.smtp_transaction_seconds),
        # The send queues' receive count: on a job's last receive, an unexpected error ends its message.
        resources.MAX_RECEIVE_COUNT_ENV: str(config.dlq_max_receive_count),
        resources.RELAY_CONCURRENCY_ENV: str(config.worker_relay_concurrency),
        **_dns_environment(config),  # recipient domains' MX hosts: their provider group
    }
    if config.retry_delays_env is not None:  # otherwise the code's default ladder applies
        environment[resources.RETRY_DELAYS_ENV] = config.retry_delays_env
    return environment


AUTHORIZER = FunctionDefinition(
    name="authorizer",
    settings=settings.AuthorizerSettings,
    memory_mb=lambda config: config.authorizer_memory_mb,
    timeout_seconds=lambda config: config.authorizer_timeout_seconds,
    tables={resources.TENANTS.name: "read"},
    indexes={resources.TENANTS.name: (resources.BY_KEY_HASH.name,)},
    # The tenant's usage key (its usage plan's throttle) is made of the environment's name prefix.
    extra_environment=lambda config: {resources.USAGE_KEY_PREFIX_ENV: config.name_prefix},
)

API = FunctionDefinition(
    name="api",
    settings=settings.ApiSettings,
    memory_mb=lambda config: config.api_memory_mb,
    timeout_seconds=lambda config: config.api_timeout_seconds,
    tables={
        # Sending domains (/v1/domains: created, verified, deleted, with their claim items) and the
        # tenants' quota counters, besides the tenant, its keys and servers it reads. IAM cannot tell
        # the items of a partition apart.
        resources.TENANTS.name: "read_write",
        resources.MESSAGES.name: "read_update",  # creates emails, transitions (cancel); deletes nothing
        resources.IDEMPOTENCY.name: "read_write",  # a failed request's claim is deleted
        resources.SUPPRESSIONS.name: "read_write",  # list, add, remove
        resources.INBOUND.name: "read",  # GET /v1/inbound[/{id}]; the ingest worker writes the records
    },
    # GET /v1/emails (by_tenant, by_tenant_status); GET /v1/emails/{msg_...} (by_message_id);
    # GET /v1/inbound (all of a tenant's, of one kind, about one email).
    indexes={
        resources.MESSAGES.name: (
            resources.BY_TENANT.name,
            resources.BY_TENANT_STATUS.name,
            resources.BY_MESSAGE_ID.name,
        ),
        resources.INBOUND.name: (
            resources.BY_TENANT_RECEIVED.name,
            resources.BY_TENANT_KIND.name,
            resources.BY_TENANT_EMAIL.name,
        ),
    },
    # Large bodies; uploaded attachments (it signs their upload URLs); large idempotent responses;
    # POST /v1/inbound/raw stores the raw mail, GET /v1/inbound/{id} signs links to its attachments.
    bodies={
        resources.BODIES_PREFIX: "read_write",
        resources.ATTACHMENTS_PREFIX: "read_write",
        resources.IDEMPOTENCY_PREFIX: "read_write",
        resources.INBOUND_PREFIX: "read_write",
    },
    sends_to=(*resources.SEND_QUEUES, resources.INGEST),  # POST /v1/inbound/raw queues what it stored
    schedules=True,  # send_at, and cancelling what is scheduled or deferred
    # A new domain's DKIM key pair (POST /v1/domains): the private key is stored as a secret only;
    # DELETE /v1/domains/{domain} deletes it. No other tenant secret.
    secrets={DKIM_SECRETS: "read_write"},
    extra_environment=_api_environment,
)

SEND_WORKER = FunctionDefinition(
    name="send_worker",
    settings=settings.SendWorkerSettings,
    memory_mb=lambda config: config.worker_memory_mb,
    timeout_seconds=lambda config: config.worker_timeout_seconds,
    tables={
        resources.TENANTS.name: "read",
        resources.MESSAGES.name: "read_update",  # leases and transitions; deletes nothing
        resources.SUPPRESSIONS.name: "read_update",  # checked before each send; a hard bounce adds
        # Traffic shaping: conditional updates of its buckets, counters and outcome windows, and the
        # reads of a bucket's slow-down; never a delete (idle items expire by TTL).
        resources.BUCKETS.name: "read_update",
    },
    # Reads large bodies; a local delivery stores the raw message it would have relayed (write only).
    bodies={resources.BODIES_PREFIX: "read", resources.INBOUND_PREFIX: "write"},
    # Releases scheduled emails; hands back jobs it has no time for; queues local deliveries for ingest.
    sends_to=(*resources.SEND_QUEUES, resources.INGEST),
    # SMTP passwords and the DKIM private keys it signs with.
    secrets={ALL_SECRETS: "read"},
    schedules=True,  # the next attempt of a deferred message
    extra_environment=_send_worker_environment,
)


def _sweeper_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {
        resources.SWEEP_GRACE_ENV: str(config.sweep_grace_seconds),
        resources.SWEEP_BACKLOG_LIMIT_ENV: str(config.sweep_backlog_limit),
    }


SWEEPER = FunctionDefinition(
    name="sweeper",
    settings=settings.SweeperSettings,
    memory_mb=lambda _config: 256,
    timeout_seconds=lambda _config: 300,  # a run repairs at most PETREL_SWEEP_MAX_MESSAGES messages
    # No table grant here: it may only query the messages table's due and tenant listing indexes, read
    # and update its items, and scan the tenants table, which is narrower than "read" and is granted
    # by infra/constructs/sweeper.py with the tables' names.
    scans=(resources.TENANTS.name,),  # every tenant, once per run: their creation shards
    sends_to=resources.SEND_QUEUES,  # puts the repaired messages' jobs back
    extra_environment=_sweeper_environment,
)


def _poller_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {
        resources.POLL_CONCURRENCY_ENV: str(config.poll_concurrency),
        resources.IMAP_TIMEOUT_ENV: str(config.imap_timeout_seconds),
        resources.POLL_BATCH_ENV: str(config.poll_batch),
    }


IMAP_POLLER = FunctionDefinition(
    name="imap_poller",
    settings=settings.PollerSettings,
    memory_mb=lambda config: config.poller_memory_mb,
    timeout_seconds=lambda config: config.poller_timeout_seconds,
    # Reads the mailboxes and writes each folder's cursor and each mailbox's health (conditional puts and
    # updates of its own items; IAM cannot tell sort keys apart, so the grant is the table's, without
    # delete). Its work list is every tenant's mailboxes: a Scan of the tenants table.
    tables={resources.TENANTS.name: "read_update"},
    scans=(resources.TENANTS.name,),
    bodies={resources.INBOUND_PREFIX: "write"},  # each raw message it fetched
    sends_to=(resources.INGEST,),
    secrets={ALL_SECRETS: "read"},  # the mailboxes' IMAP passwords
    extra_environment=_poller_environment,
    reserved_concurrency=lambda config: 1 if config.poller_one_at_a_time else None,
)


def _ingest_worker_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {
        resources.INBOUND_RETENTION_DAYS_ENV: str(config.inbound_retention_days),
        # The ingest queue's receive count: a job failing on its last receive is logged before its DLQ.
        resources.MAX_RECEIVE_COUNT_ENV: str(config.dlq_max_receive_count),
    }


INGEST_WORKER = FunctionDefinition(
    name="ingest_worker",
    settings=settings.IngestWorkerSettings,
    memory_mb=lambda config: config.ingest_memory_mb,
    timeout_seconds=lambda config: config.ingest_timeout_seconds,
    tables={
        resources.TENANTS.name: "read",  # the mailbox a message came from
        resources.MESSAGES.name: "read_update",  # reports and replies move statuses and add events
        resources.SUPPRESSIONS.name: "read_update",  # a hard bounce or a complaint adds; never removes
        resources.INBOUND.name: "read_write",  # the record and its content, then its outcome
    },
    # A report or reply finds Petrel's original by its message id (VERP address, ENVID).
    indexes={resources.MESSAGES.name: (resources.BY_MESSAGE_ID.name,)},
    bodies={resources.INBOUND_PREFIX: "read_write"},  # reads the raw mail, stores its attachments
    extra_environment=_ingest_worker_environment,
)


def _admin_api_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {
        # The longest max_age_hours a tenant may be given: what the retention periods were sized for.
        resources.MAX_MESSAGE_AGE_HOURS_ENV: str(config.max_message_age_hours),
        **_dns_environment(config),  # an operator's domain verification
        # Tenants' usage keys, enrolled in their plans' usage plans (infra/constructs/api.py makes them).
        resources.USAGE_KEY_PREFIX_ENV: config.name_prefix,
        resources.API_PLANS_ENV: json.dumps(
            {name: resources.usage_plan_name(config.name_prefix, name) for name in sorted(config.api_plans)}
        ),
    }


ADMIN_API = FunctionDefinition(
    name="admin_api",
    settings=settings.AdminApiSettings,
    memory_mb=lambda config: config.admin_api_memory_mb,
    timeout_seconds=lambda config: config.api_timeout_seconds,
    tables={
        resources.TENANTS.name: "read_write",  # tenants, keys (revoked), servers, mailboxes, domains
        # Resuming a tenant reads its held messages (petrel.services.suspension); it changes none: their
        # jobs go back on their queue, and the worker's lease rules do the rest.
        resources.MESSAGES.name: "read",
    },
    # A tenant's held messages are its `deferred` ones (their failure reason tells a hold apart).
    indexes={resources.MESSAGES.name: (resources.BY_TENANT_STATUS.name,)},
    scans=(resources.TENANTS.name,),  # GET /v1/admin/tenants: every tenant's item
    sends_to=resources.SEND_QUEUES,  # a resumed tenant's held messages go back on their queue
    # Passwords (SMTP servers, IMAP mailboxes) set, rotated and deleted by operators; DKIM keys.
    secrets={ALL_SECRETS: "read_write"},
    extra_environment=_admin_api_environment,
)


DOMAIN_CHECKER = FunctionDefinition(
    name="domain_checker",
    settings=settings.DomainCheckerSettings,
    memory_mb=lambda config: config.domain_checker_memory_mb,
    timeout_seconds=lambda config: config.domain_checker_timeout_seconds,
    # Every tenant's sending domains (a Scan), each domain's record written back with its checks and
    # events; retired keys dropped from it.
    tables={resources.TENANTS.name: "read_update"},
    scans=(resources.TENANTS.name,),
    # A retired DKIM key's secret is deleted once its grace has passed; no other secret.
    secrets={DKIM_SECRETS: "delete"},
    extra_environment=_dns_environment,
    reserved_concurrency=lambda config: 1 if config.domain_checker_one_at_a_time else None,
)

FUNCTIONS: tuple[FunctionDefinition, ...] = (
    AUTHORIZER,
    API,
    SEND_WORKER,
    SWEEPER,
    IMAP_POLLER,
    INGEST_WORKER,
    ADMIN_API,
    DOMAIN_CHECKER,
)


class PetrelLayers(Construct):
    """The dependency layer and the `petrel` layer, shared by every function of the stack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.deps = lambda_.LayerVersion(
            self,
            "Deps",
            code=deps_layer_code(),
            layer_version_name=config.physical_name("deps"),
            description="Third-party packages of layers/deps/requirements.txt (cp313, arm64, .pyc)",
            compatible_runtimes=[LAMBDA_RUNTIME],
            compatible_architectures=[LAMBDA_ARCHITECTURE],
        )
        self.petrel = lambda_.LayerVersion(
            self,
            "Petrel",
            code=petrel_layer_code(),
            layer_version_name=config.physical_name("petrel"),
            description="The petrel package (without its cli), with .pyc",
            compatible_runtimes=[LAMBDA_RUNTIME],
            compatible_architectures=[LAMBDA_ARCHITECTURE],
        )

    @property
    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.deps, self.petrel]


@dataclass(frozen=True)
class FunctionDependencies:
    """Everything a function may be wired to; built once by the stack."""

    config: EnvironmentConfig
    layers: PetrelLayers
    tables: PetrelTables
    queues: PetrelQueues
    bodies: BodiesBucket
    schedules: PetrelSchedules


class PetrelFunction(Construct):
    """One Lambda function from a `FunctionDefinition`.

    Python 3.13 on arm64 with both layers; an explicit log group (retention from the config) and a
    role of its own that may write to that log group and do exactly what the definition lists.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        definition: FunctionDefinition,
        deps: FunctionDependencies,
    ) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.definition = definition
        function_name = config.physical_name(definition.slug)

        self.log_group = log_group(self, "Logs", config, f"/aws/lambda/{function_name}")
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of {function_name}",
        )
        # Instead of AWSLambdaBasicExecutionRole: write to this function's own log group only.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )

        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=f"Petrel {definition.slug}",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(FUNCTIONS_ROOT / definition.name), exclude=_ASSET_EXCLUDES),
            layers=deps.layers.all,
            memory_size=definition.memory_mb(config),
            timeout=Duration.seconds(definition.timeout_seconds(config)),
            reserved_concurrent_executions=definition.reserved_concurrency(config),
            environment=self._environment(deps),
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE if config.tracing else lambda_.Tracing.DISABLED,
        )
        self._grant(deps)
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Pinned to Python 3.13 on purpose (DESIGN.md section 5): both layers are built and "
            "byte-compiled for cp313, and the code is tested on 3.13.",
        )
        if config.tracing:
            acknowledge(
                self.role,
                "AwsSolutions-IAM5[Resource::*]",
                "Active X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no "
                "resource-level permissions, so CDK grants them on '*'.",
            )

    def _environment(self, deps: FunctionDependencies) -> dict[str, str]:
        config, definition = deps.config, self.definition
        environment = {
            resources.POWERTOOLS_SERVICE_NAME_ENV: definition.service_name,
            resources.POWERTOOLS_METRICS_NAMESPACE_ENV: resources.METRICS_NAMESPACE,
            resources.POWERTOOLS_LOG_LEVEL_ENV: config.log_level,
        }
        for spec in resources.TABLES:
            if spec.name in definition.tables:
                environment[spec.env_var] = deps.tables.table(spec).table_name
        if definition.bodies:
            environment[resources.BODIES_BUCKET_ENV] = deps.bodies.bucket.bucket_name
        for queue in definition.sends_to:
            environment[queue.env_var] = deps.queues.queue(queue).queue_url
        if definition.secrets:
            environment[resources.SECRETS_PREFIX_ENV] = config.secrets_prefix
        if definition.schedules:
            environment.update(deps.schedules.environment())
        environment.update(definition.extra_environment(config))
        return environment

    def _grant(self, deps: FunctionDependencies) -> None:
        definition = self.definition
        for spec in resources.TABLES:
            access = definition.tables.get(spec.name)
            if access:
                deps.tables.grant(self.function, spec, access, definition.indexes.get(spec.name, ()))
            if spec.name in definition.scans:
                deps.tables.grant_scan(self.function, spec)
        unknown = sorted(set(definition.scans) - {spec.name for spec in resources.TABLES})
        if unknown:
            raise ValueError(f"{definition.name}: no table {unknown} to scan")
        if definition.bodies:
            deps.bodies.grant(self.function, definition.bodies)
            for prefix in definition.bodies:
                acknowledge(
                    self.role,
                    f"AwsSolutions-IAM5[Resource::<{logical_ref(deps.bodies.bucket)}.Arn>/{prefix}*]",
                    "Object keys of the bodies bucket are tenant and message (or attachment, or incoming "
                    f"message) ids minted at run time; the grant stops at the {prefix} prefix of this one "
                    "bucket and at GetObject and/or PutObject, as the function needs.",
                )
        for queue in definition.sends_to:
            deps.queues.grant_send(self.function, queue)
        if definition.schedules:
            deps.schedules.grant_manage(self.role)
        for pattern, secret_access in definition.secrets.items():
            self._grant_secrets(f"{deps.config.secrets_prefix}{pattern}", secret_access)

    def _grant_secrets(self, name: str, access: SecretAccess) -> None:
        """`access` to the secrets whose names match `name` (a pattern within the secrets prefix)."""
        secrets_arn = Stack.of(self).format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(iam.PolicyStatement(actions=list(SECRET_ACTIONS[access]), resources=[secrets_arn]))
        acknowledge(
            self.role,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:{name}]",
            "Tenant secrets are created at run time under this environment's prefix (named by tenant and "
            "server, mailbox or domain and selector), and Secrets Manager appends a random suffix to every "
            "ARN: a wildcard within the prefix is the narrowest grant.",
        )
