"""Petrel's Lambda functions: the two shared layers, one table of function definitions, and the
`PetrelFunction` construct that turns a definition into a function with its log group, role,
environment and least-privilege grants.

Environment variable names come from `petrel.resources`, whose constants are also the aliases of
the settings models' fields (`petrel.settings`), never from string literals here, so the code that
reads a variable and the infrastructure that sets it cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aws_cdk import ArnFormat, CfnElement, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct
from pydantic import BaseModel

from infra import REPO_ROOT
from infra.config import EnvironmentConfig
from infra.constructs.bodies_bucket import BodiesBucket
from infra.constructs.common import acknowledge, log_group
from infra.constructs.queues import PetrelQueues
from infra.constructs.schedules import PetrelSchedules
from infra.constructs.tables import PetrelTables, TableAccess
from infra.layers import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, deps_layer_code, petrel_layer_code
from petrel import resources, settings

FUNCTIONS_ROOT = REPO_ROOT / "functions"
HANDLER = "handler.lambda_handler"
_ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache", "tests"]


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
    bodies: Literal["read", "read_write"] | None = None
    # The key prefixes of the bodies bucket it may touch (`bodies` says how).
    body_prefixes: tuple[str, ...] = (resources.BODIES_PREFIX,)
    send_queues: tuple[resources.QueueSpec, ...] = ()
    # Creates, reads and deletes EventBridge Scheduler schedules (deferred and scheduled messages).
    schedules: bool = False
    # "env": only PETREL_SECRETS_PREFIX is set; "read": it may also read the tenants' secrets.
    secrets: Literal["env", "read"] | None = None
    extra_environment: Callable[[EnvironmentConfig], dict[str, str]] = lambda _config: {}

    @property
    def slug(self) -> str:
        return self.name.replace("_", "-")

    @property
    def service_name(self) -> str:
        """The service its logs and metrics carry: the one `petrel.observability.telemetry()` gives it."""
        from petrel.observability import service_name

        return service_name(self.slug)


def _api_environment(config: EnvironmentConfig) -> dict[str, str]:
    return {resources.MESSAGE_RETENTION_DAYS_ENV: str(config.message_retention_days)}


def _send_worker_environment(config: EnvironmentConfig) -> dict[str, str]:
    environment = {
        resources.MESSAGE_RETENTION_DAYS_ENV: str(config.message_retention_days),
        # The lease on a message lasts as long as the invocation that holds it can run.
        resources.LEASE_SECONDS_ENV: str(config.worker_timeout_seconds),
        resources.SMTP_TIMEOUT_ENV: str(config.smtp_timeout_seconds),
        resources.SMTP_TRANSACTION_ENV: str(config.smtp_transaction_seconds),
        # The send queues' receive count: on a job's last receive, an unexpected error ends its message.
        resources.MAX_RECEIVE_COUNT_ENV: str(config.dlq_max_receive_count),
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
)

API = FunctionDefinition(
    name="api",
    settings=settings.ApiSettings,
    memory_mb=lambda config: config.api_memory_mb,
    timeout_seconds=lambda config: config.api_timeout_seconds,
    tables={
        resources.TENANTS.name: "read",
        resources.MESSAGES.name: "read_update",  # creates emails, transitions (cancel); deletes nothing
        resources.IDEMPOTENCY.name: "read_write",  # a failed request's claim is deleted
        resources.SUPPRESSIONS.name: "read_write",  # list, add, remove
    },
    # GET /v1/emails (by_tenant, by_tenant_status); GET /v1/emails/{msg_...} (by_message_id).
    indexes={
        resources.MESSAGES.name: (
            resources.BY_TENANT.name,
            resources.BY_TENANT_STATUS.name,
            resources.BY_MESSAGE_ID.name,
        )
    },
    bodies="read_write",
    # Large bodies; uploaded attachments (it signs their upload URLs); large idempotent responses.
    body_prefixes=(resources.BODIES_PREFIX, resources.ATTACHMENTS_PREFIX, resources.IDEMPOTENCY_PREFIX),
    send_queues=resources.SEND_QUEUES,
    schedules=True,  # send_at, and cancelling what is scheduled or deferred
    secrets="env",
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
    },
    bodies="read",
    send_queues=resources.SEND_QUEUES,  # releases scheduled emails; hands back jobs it has no time for
    secrets="read",
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
    # No table grant here: it may only query the messages table's due index and update items, which
    # is narrower than "read" and is granted by infra/constructs/sweeper.py with the table's name.
    send_queues=resources.SEND_QUEUES,  # puts the repaired messages' jobs back
    extra_environment=_sweeper_environment,
)

FUNCTIONS: tuple[FunctionDefinition, ...] = (AUTHORIZER, API, SEND_WORKER, SWEEPER)


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
        for queue in definition.send_queues:
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
        if definition.bodies:
            deps.bodies.grant(self.function, prefixes=definition.body_prefixes, write=definition.bodies == "read_write")
            for prefix in definition.body_prefixes:
                acknowledge(
                    self.role,
                    f"AwsSolutions-IAM5[Resource::<{_logical_ref(deps.bodies.bucket)}.Arn>/{prefix}*]",
                    "Object keys of the bodies bucket are tenant and message (or attachment) ids minted at "
                    f"run time; the grant stops at the {prefix} prefix of this one bucket and at "
                    "GetObject (and PutObject where the function writes).",
                )
        for queue in definition.send_queues:
            deps.queues.grant_send(self.function, queue)
        if definition.schedules:
            deps.schedules.grant_manage(self.role)
        if definition.secrets == "read":
            prefix = deps.config.secrets_prefix
            secrets_arn = Stack.of(self).format_arn(
                service="secretsmanager",
                resource="secret",
                resource_name=f"{prefix}*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            self.role.add_to_policy(
                iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secrets_arn])
            )
            acknowledge(
                self.role,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:"
                f"<AWS::AccountId>:secret:{prefix}*]",
                "Tenant secrets are created at run time under this environment's prefix, and Secrets "
                "Manager appends a random suffix to every ARN: a prefix wildcard is the narrowest grant.",
            )


def _logical_ref(construct: Construct) -> str:
    """The logical id of a construct's CloudFormation resource, as cdk-nag prints it."""
    child = construct.node.default_child
    if not isinstance(child, CfnElement):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource of its own")
    return Stack.of(construct).get_logical_id(child)
