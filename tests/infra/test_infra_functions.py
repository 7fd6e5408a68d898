"""Lambda functions: runtime, layers, environment (against the settings models), logging, IAM."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from infra.config import EnvironmentConfig
from infra.constructs.functions import FUNCTIONS, FunctionDefinition
from petrel import resources, settings

pytestmark = pytest.mark.infra


def _function(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> tuple[str, Any]:
    name = resources.physical_name(config.name_prefix, definition.slug)
    matches = [
        (lid, f) for lid, f in resources_of("AWS::Lambda::Function").items() if f["Properties"]["FunctionName"] == name
    ]
    assert len(matches) == 1, f"expected one function named {name}"
    return matches[0]


def _statements(resources_of: Any, role_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in resources_of("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_id(function: dict[str, Any]) -> str:
    role_id: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role_id


def _required_env(model: type[BaseModel]) -> set[str]:
    return {str(f.validation_alias) for f in model.model_fields.values() if f.is_required()}


def test_eight_functions(resources_of: Any) -> None:
    assert len(resources_of("AWS::Lambda::Function")) == len(FUNCTIONS) == 8


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_runtime_architecture_layers(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    _, function = _function(resources_of, config, definition)
    props = function["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "handler.lambda_handler"
    layers = resources_of("AWS::Lambda::LayerVersion")
    assert len(props["Layers"]) == 2
    assert {ref["Ref"] for ref in props["Layers"]} == set(layers)
    assert props.get("TracingConfig", {"Mode": "PassThrough"}) == {"Mode": "PassThrough"}  # tracing off in dev


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_environment_satisfies_the_settings_model(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    _, function = _function(resources_of, config, definition)
    env = function["Properties"]["Environment"]["Variables"]
    assert _required_env(definition.settings) <= set(env)
    assert env[resources.POWERTOOLS_SERVICE_NAME_ENV] == f"petrel-{definition.slug}"
    assert env[resources.POWERTOOLS_METRICS_NAMESPACE_ENV] == "Petrel"
    assert env[resources.POWERTOOLS_LOG_LEVEL_ENV] == config.log_level


def test_environment_values(resources_of: Any, config: EnvironmentConfig) -> None:
    by_name = {d.name: _function(resources_of, config, d)[1]["Properties"] for d in FUNCTIONS}
    api = by_name["api"]["Environment"]["Variables"]
    worker = by_name["send_worker"]["Environment"]["Variables"]
    authorizer = by_name["authorizer"]["Environment"]["Variables"]

    assert set(authorizer) == {
        resources.POWERTOOLS_SERVICE_NAME_ENV,
        resources.POWERTOOLS_METRICS_NAMESPACE_ENV,
        resources.POWERTOOLS_LOG_LEVEL_ENV,
        resources.TENANTS.env_var,
        resources.USAGE_KEY_PREFIX_ENV,  # the tenant's usage key is made of it
    }
    for env in (api, worker):
        assert env[resources.SECRETS_PREFIX_ENV] == resources.secrets_prefix(config.name_prefix)
        assert env[resources.MESSAGE_RETENTION_DAYS_ENV] == str(config.message_retention_days)
    for queue in resources.SEND_QUEUES:  # the worker releases scheduled emails and hands back jobs
        assert queue.env_var in api and queue.env_var in worker
    assert worker[resources.LEASE_SECONDS_ENV] == str(config.worker_timeout_seconds)
    assert worker[resources.SMTP_TIMEOUT_ENV] == str(config.smtp_timeout_seconds)
    assert worker[resources.SMTP_TRANSACTION_ENV] == str(config.smtp_transaction_seconds)
    assert worker[resources.MAX_RECEIVE_COUNT_ENV] == str(config.dlq_max_receive_count)  # the queues' redrive policy
    assert resources.IDEMPOTENCY.env_var in api and resources.IDEMPOTENCY.env_var not in worker
    # cdk.json sets no retry ladder for dev: the code's default applies (and only the worker reads one).
    assert resources.RETRY_DELAYS_ENV not in worker and resources.RETRY_DELAYS_ENV not in api

    assert by_name["send_worker"]["Timeout"] == config.worker_timeout_seconds
    assert by_name["send_worker"]["MemorySize"] == config.worker_memory_mb
    assert by_name["api"]["MemorySize"] == config.api_memory_mb


def test_ingest_environment_values(resources_of: Any, config: EnvironmentConfig) -> None:
    by_name = {d.name: _function(resources_of, config, d)[1]["Properties"] for d in FUNCTIONS}
    api = by_name["api"]["Environment"]["Variables"]
    worker = by_name["send_worker"]["Environment"]["Variables"]
    poller = by_name["imap_poller"]["Environment"]["Variables"]
    ingest = by_name["ingest_worker"]["Environment"]["Variables"]
    [ingest_queue_id] = [
        lid
        for lid, q in resources_of("AWS::SQS::Queue").items()
        if q["Properties"]["QueueName"] == config.physical_name(resources.INGEST.name)
    ]
    for env in (api, worker, poller):  # everything that puts raw mail on the ingest queue
        assert env[resources.INGEST.env_var] == {"Ref": ingest_queue_id}
    assert resources.INGEST.env_var not in ingest  # it consumes the queue, never sends to it
    for env in (api, ingest):  # the records' TTL
        assert env[resources.INBOUND_RETENTION_DAYS_ENV] == str(config.inbound_retention_days)
    assert api[resources.LINK_SECONDS_ENV] == str(config.inbound_link_seconds)
    assert resources.INBOUND.env_var in api and resources.INBOUND.env_var in ingest
    assert resources.INBOUND.env_var not in poller and resources.INBOUND.env_var not in worker
    assert poller[resources.POLL_CONCURRENCY_ENV] == str(config.poll_concurrency)
    assert poller[resources.IMAP_TIMEOUT_ENV] == str(config.imap_timeout_seconds)
    assert poller[resources.POLL_BATCH_ENV] == str(config.poll_batch)
    assert poller[resources.SECRETS_PREFIX_ENV] == resources.secrets_prefix(config.name_prefix)
    assert ingest[resources.MAX_RECEIVE_COUNT_ENV] == str(config.dlq_max_receive_count)  # the ingest queue's
    assert resources.SECRETS_PREFIX_ENV not in ingest

    assert by_name["imap_poller"]["Timeout"] == config.poller_timeout_seconds
    assert by_name["imap_poller"]["MemorySize"] == config.poller_memory_mb
    assert by_name["ingest_worker"]["Timeout"] == config.ingest_timeout_seconds
    assert by_name["ingest_worker"]["MemorySize"] == config.ingest_memory_mb
    # Only the scheduled runs over every tenant reserve concurrency: one run at a time.
    assert config.poller_one_at_a_time and config.domain_checker_one_at_a_time
    assert by_name["imap_poller"]["ReservedConcurrentExecutions"] == 1
    assert by_name["domain_checker"]["ReservedConcurrentExecutions"] == 1
    assert [d.name for d in FUNCTIONS if "ReservedConcurrentExecutions" in by_name[d.name]] == [
        "imap_poller",
        "domain_checker",
    ]


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_explicit_log_group_with_retention(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    _, function = _function(resources_of, config, definition)
    log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = resources_of("AWS::Logs::LogGroup")[log_group_id]["Properties"]
    assert log_group["RetentionInDays"] == config.log_retention_days
    assert log_group["LogGroupName"] == f"/aws/lambda/{function['Properties']['FunctionName']}"


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_no_managed_policies_and_no_broad_grants(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    _, function = _function(resources_of, config, definition)
    role_id = _role_id(function)
    assert "ManagedPolicyArns" not in resources_of("AWS::IAM::Role")[role_id]["Properties"]
    for statement in _statements(resources_of, role_id):
        actions = _as_list(statement["Action"])
        for action in actions:
            assert not action.endswith(":*"), action
            assert action != "*"
        if any(a.split(":")[0] in {"dynamodb", "sqs", "s3", "secretsmanager"} for a in actions):
            assert "*" not in _as_list(statement["Resource"]), statement


def _actions(statements: list[dict[str, Any]], service: str) -> set[str]:
    return {a for s in statements for a in _as_list(s["Action"]) if a.startswith(f"{service}:")}


def test_authorizer_is_read_only(resources_of: Any, config: EnvironmentConfig) -> None:
    definition = next(d for d in FUNCTIONS if d.name == "authorizer")
    _, function = _function(resources_of, config, definition)
    statements = _statements(resources_of, _role_id(function))
    services = {a.split(":")[0] for s in statements for a in _as_list(s["Action"])}
    assert services == {"logs", "dynamodb"}
    assert _actions(statements, "dynamodb") == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}


def test_api_permissions(resources_of: Any, config: EnvironmentConfig) -> None:
    definition = next(d for d in FUNCTIONS if d.name == "api")
    _, function = _function(resources_of, config, definition)
    statements = _statements(resources_of, _role_id(function))
    assert _actions(statements, "sqs") == {"sqs:SendMessage"}
    # ListBucket: so that a missing upload is a 404 (not a 403) to HeadObject.
    assert _actions(statements, "s3") == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}
    # DKIM keys of the domains it creates (POST /v1/domains) and deletes; no password.
    [secrets] = [s for s in statements if any(a.startswith("secretsmanager:") for a in _as_list(s["Action"]))]
    assert set(_as_list(secrets["Action"])) == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
    }
    assert secrets["Resource"]["Fn::Join"][1][-1].endswith(
        ":secret:" + resources.secrets_prefix(config.name_prefix) + "*/dkim/*"
    )


def test_worker_permissions_and_secrets_prefix(resources_of: Any, config: EnvironmentConfig) -> None:
    definition = next(d for d in FUNCTIONS if d.name == "send_worker")
    _, function = _function(resources_of, config, definition)
    statements = _statements(resources_of, _role_id(function))
    assert _actions(statements, "s3") == {"s3:GetObject", "s3:PutObject"}  # bodies; local deliveries' raw mail
    assert "sqs:SendMessage" in _actions(statements, "sqs")  # hands back the jobs it has no time for
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= _actions(statements, "sqs")

    [secrets] = [s for s in statements if "secretsmanager:GetSecretValue" in _as_list(s["Action"])]
    assert _as_list(secrets["Action"]) == ["secretsmanager:GetSecretValue"]
    parts = secrets["Resource"]["Fn::Join"][1]
    assert parts[-1].endswith(":secret:" + resources.secrets_prefix(config.name_prefix) + "*")
    assert {"Ref": "AWS::Partition"} in parts and {"Ref": "AWS::AccountId"} in parts


def test_index_grants_name_each_index(resources_of: Any) -> None:
    text = json.dumps([p["Properties"]["PolicyDocument"] for p in resources_of("AWS::IAM::Policy").values()])
    assert "/index/*" not in text
    for spec in resources.TABLES:
        for index in spec.indexes:
            assert f"/index/{index.name}" in text


def test_settings_models_are_the_ones_used() -> None:
    models = {d.name: d.settings for d in FUNCTIONS}
    assert models == {
        "authorizer": settings.AuthorizerSettings,
        "api": settings.ApiSettings,
        "send_worker": settings.SendWorkerSettings,
        "sweeper": settings.SweeperSettings,
        "imap_poller": settings.PollerSettings,
        "ingest_worker": settings.IngestWorkerSettings,
        "admin_api": settings.AdminApiSettings,
        "domain_checker": settings.DomainCheckerSettings,
    }


def _defined_env_names() -> list[str]:
    """Every environment variable name petrel.resources defines: its `*_ENV` constants and the specs'."""
    names = [value for name, value in vars(resources).items() if name.endswith("_ENV") and isinstance(value, str)]
    names += [spec.env_var for spec in resources.TABLES]
    names += [queue.env_var for queue in resources.QUEUES]
    names += [queue.arn_env_var for queue in resources.QUEUES if queue.arn_env_var is not None]
    schedules = resources.SCHEDULES
    names += [schedules.group_env_var, schedules.role_env_var, schedules.dlq_arn_env_var]
    return names


def test_every_environment_variable_is_defined_once() -> None:
    names = _defined_env_names()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    # Each settings field reads a name from petrel.resources, so infra and the local stack can set it
    # by the same constant (a literal alias would be a second spelling of the name).
    for definition in FUNCTIONS:
        for field_name, field in definition.settings.model_fields.items():
            assert field.validation_alias in names, f"{definition.settings.__name__}.{field_name}"
