"""Issue 10: the domain checker's rule and run limits, the DNS settings of the functions that look
records up, and what the admin API, the domain checker and the DKIM key holders may do (secrets,
tables, queues)."""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import app as petrel_app
from infra.config import CONTEXT_KEY, EnvironmentConfig, parse_environments
from infra.constructs.functions import (
    ADMIN_API,
    API,
    AUTHORIZER,
    DOMAIN_CHECKER,
    FUNCTIONS,
    IMAP_POLLER,
    INGEST_WORKER,
    SEND_WORKER,
    SWEEPER,
    FunctionDefinition,
)
from infra.constructs.tables import ACCESS_ACTIONS
from petrel import resources
from petrel.services.domains import DomainDeps, secret_name

pytestmark = pytest.mark.infra

LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}
SECRET_WRITE = {
    "secretsmanager:GetSecretValue",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:DeleteSecret",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _function(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> tuple[str, Any]:
    [(lid, function)] = [
        (lid, f)
        for lid, f in resources_of("AWS::Lambda::Function").items()
        if f["Properties"]["FunctionName"] == config.physical_name(definition.slug)
    ]
    return lid, function


def _grants(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> dict[str, list[Any]]:
    """Action -> every resource the function's role is allowed it on."""
    _, function = _function(resources_of, config, definition)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    granted: dict[str, list[Any]] = {}
    for policy in resources_of("AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"]):
                granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return granted


def _secret_names(granted: dict[str, list[Any]], action: str) -> set[str]:
    """The secret name patterns `action` is granted on (the part of each ARN after `:secret:`)."""
    names = set()
    for arn in granted.get(action, []):
        parts = arn["Fn::Join"][1]
        assert {"Ref": "AWS::Partition"} in parts and {"Ref": "AWS::AccountId"} in parts
        names.add(parts[-1].split(":secret:", 1)[1])
    return names


def _table_arn(resources_of: Any, config: EnvironmentConfig, spec: resources.TableSpec) -> Any:
    [table_id] = [
        lid
        for lid, t in resources_of("AWS::DynamoDB::Table").items()
        if t["Properties"]["TableName"] == config.physical_name(spec.name)
    ]
    return {"Fn::GetAtt": [table_id, "Arn"]}


def _on(granted: dict[str, list[Any]], resource: Any) -> set[str]:
    return {a for a, targets in granted.items() if a.startswith("dynamodb:") and resource in targets}


def _queue_arn(resources_of: Any, name: str) -> Any:
    [queue_id] = [lid for lid, q in resources_of("AWS::SQS::Queue").items() if q["Properties"]["QueueName"] == name]
    return {"Fn::GetAtt": [queue_id, "Arn"]}


def _env(resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition) -> dict[str, Any]:
    env: dict[str, Any] = _function(resources_of, config, definition)[1]["Properties"]["Environment"]["Variables"]
    return env


# -- the domain checker's schedule --------------------------------------------------------------------


def test_a_rule_runs_the_domain_checker_every_interval(resources_of: Any, config: EnvironmentConfig) -> None:
    function_id, function = _function(resources_of, config, DOMAIN_CHECKER)
    [rule] = [
        r["Properties"]
        for r in resources_of("AWS::Events::Rule").values()
        if r["Properties"]["Name"] == config.physical_name("domain-checker")
    ]
    assert config.domain_check_minutes == 60  # cdk.json: dev re-checks hourly
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # A run missed is made up by the next one: no retry, and no backlog of runs.
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    [invoke_config] = [
        c["Properties"]
        for c in resources_of("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 0 and invoke_config["MaximumEventAgeInSeconds"] == 60
    assert function["Properties"]["ReservedConcurrentExecutions"] == 1  # one run at a time
    assert function["Properties"]["Timeout"] == config.domain_checker_timeout_seconds
    assert function["Properties"]["MemorySize"] == config.domain_checker_memory_mb


def test_the_check_interval_and_the_reservation_come_from_the_config(tmp_path: Path, synthesizer: Any) -> None:
    raw = copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])
    raw["dev"]["domain_check_minutes"] = 360
    raw["dev"]["domain_checker_one_at_a_time"] = False
    raw["dev"]["dns_resolvers"] = "192.0.2.53, [2001:db8::53]:5353"
    raw["dev"]["dns_timeout_seconds"] = 2.5
    assembly = synthesizer(tmp_path, "dev", environments=raw)
    found = assembly.get_stack_artifact(petrel_app.stack_id("dev")).template["Resources"].values()
    [rule] = [
        r["Properties"]
        for r in found
        if r["Type"] == "AWS::Events::Rule" and r["Properties"]["Name"] == "petrel-dev-domain-checker"
    ]
    assert rule["ScheduleExpression"] == "rate(6 hours)"
    functions = {
        r["Properties"]["FunctionName"]: r["Properties"] for r in found if r["Type"] == "AWS::Lambda::Function"
    }
    assert "ReservedConcurrentExecutions" not in functions["petrel-dev-domain-checker"]
    for name in ("petrel-dev-api", "petrel-dev-admin-api", "petrel-dev-domain-checker"):
        env = functions[name]["Environment"]["Variables"]
        assert env[resources.DNS_RESOLVERS_ENV] == "192.0.2.53, [2001:db8::53]:5353", name
        assert env[resources.DNS_TIMEOUT_ENV] == "2.5", name


def test_cdk_json_sets_the_dns_keys_of_every_environment() -> None:
    raw = petrel_app.cdk_json_context()[CONTEXT_KEY]
    configs = parse_environments(raw)
    for name, config in configs.items():
        assert {"dns_resolvers", "domain_check_minutes"} <= set(raw[name]), name
        assert config.dns_resolvers == ""  # the Lambda environment's own resolver
    assert [c.domain_check_minutes for c in configs.values()] == [60, 360, 360]


# -- DNS settings ----------------------------------------------------------------------------------------


def test_only_the_functions_that_look_records_up_get_the_resolvers(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    # The send worker looks up its recipients' MX hosts (their provider group, for its token buckets).
    looking_up = {API.name, ADMIN_API.name, DOMAIN_CHECKER.name, SEND_WORKER.name}
    for definition in FUNCTIONS:
        env = _env(resources_of, config, definition)
        if definition.name in looking_up:
            assert env[resources.DNS_RESOLVERS_ENV] == config.dns_resolvers, definition.name
            assert env[resources.DNS_TIMEOUT_ENV] == f"{config.dns_timeout_seconds:g}", definition.name
        else:
            assert resources.DNS_RESOLVERS_ENV not in env and resources.DNS_TIMEOUT_ENV not in env, definition.name


def test_the_admin_api_environment(resources_of: Any, config: EnvironmentConfig) -> None:
    env = _env(resources_of, config, ADMIN_API)
    assert env[resources.MAX_MESSAGE_AGE_HOURS_ENV] == str(config.max_message_age_hours)
    assert env[resources.SECRETS_PREFIX_ENV] == resources.secrets_prefix(config.name_prefix)
    for queue in resources.SEND_QUEUES:
        assert queue.env_var in env
    # Nothing it does not use: bodies, suppressions, schedules, inbound mail.
    for name in (
        resources.BODIES_BUCKET_ENV,
        resources.SUPPRESSIONS.env_var,
        resources.SCHEDULES.group_env_var,
        resources.INBOUND.env_var,
        resources.INGEST.env_var,
    ):
        assert name not in env, name
    _, function = _function(resources_of, config, ADMIN_API)
    assert function["Properties"]["Timeout"] == config.api_timeout_seconds  # within API Gateway's 29 s
    assert function["Properties"]["MemorySize"] == config.admin_api_memory_mb


# -- secrets: DKIM keys and passwords ----------------------------------------------------------------------


def test_dkim_keys_are_secrets_under_the_granted_pattern() -> None:
    """The services name a key `<prefix><tenant>/dkim/<domain>/<selector>`: the DKIM grants must match it
    (IAM's `*` spans `/`) and must not match a password (`<prefix><tenant>/smtp/<id>`, `/imap/<id>`)."""
    prefix = resources.secrets_prefix("petrel-dev")
    # secret_name reads only the prefix of its deps.
    name = secret_name(cast("DomainDeps", SimpleNamespace(secrets_prefix=prefix)), "t_1", "example.com", "p2026a")
    pattern = prefix + resources.DKIM_SECRETS_PATTERN
    assert fnmatchcase(name, pattern)
    assert fnmatchcase(name + "-AbCdEf", pattern)  # the suffix Secrets Manager appends to the ARN
    for password in (f"{prefix}t_1/smtp/s_1", f"{prefix}t_1/imap/m_1"):
        assert not fnmatchcase(password, pattern), password


def test_the_api_may_manage_dkim_keys_and_no_other_secret(resources_of: Any, config: EnvironmentConfig) -> None:
    granted = _grants(resources_of, config, API)
    dkim = resources.secrets_prefix(config.name_prefix) + resources.DKIM_SECRETS_PATTERN
    assert {a for a in granted if a.startswith("secretsmanager:")} == SECRET_WRITE
    for action in SECRET_WRITE:
        assert _secret_names(granted, action) == {dkim}, action


def test_the_worker_reads_dkim_keys_and_passwords_and_changes_none(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    granted = _grants(resources_of, config, SEND_WORKER)
    assert {a for a in granted if a.startswith("secretsmanager:")} == {"secretsmanager:GetSecretValue"}
    assert _secret_names(granted, "secretsmanager:GetSecretValue") == {
        resources.secrets_prefix(config.name_prefix) + "*"
    }


def test_the_domain_checker_may_only_delete_dkim_keys(resources_of: Any, config: EnvironmentConfig) -> None:
    granted = _grants(resources_of, config, DOMAIN_CHECKER)
    tenants = _table_arn(resources_of, config, resources.TENANTS)
    assert _on(granted, tenants) == {*ACCESS_ACTIONS["read_update"], "dynamodb:Scan"}
    assert granted["dynamodb:Scan"] == [tenants]
    assert _secret_names(granted, "secretsmanager:DeleteSecret") == {
        resources.secrets_prefix(config.name_prefix) + resources.DKIM_SECRETS_PATTERN
    }
    assert set(granted) == {
        *ACCESS_ACTIONS["read_update"],
        "dynamodb:Scan",
        "secretsmanager:DeleteSecret",
        *LOG_ACTIONS,
    }


def test_the_admin_api_may_do_its_job_only(resources_of: Any, config: EnvironmentConfig) -> None:
    granted = _grants(resources_of, config, ADMIN_API)
    tenants = _table_arn(resources_of, config, resources.TENANTS)
    messages = _table_arn(resources_of, config, resources.MESSAGES)
    assert _on(granted, tenants) == {*ACCESS_ACTIONS["read_write"], "dynamodb:Scan"}
    assert granted["dynamodb:Scan"] == [tenants]
    assert _on(granted, messages) == set(ACCESS_ACTIONS["read"])  # resume reads held mail, changes none
    by_status = {"Fn::Join": ["", [messages, f"/index/{resources.BY_TENANT_STATUS.name}"]]}
    assert [r for r in granted["dynamodb:Query"] if "Fn::Join" in r] == [by_status]
    assert sorted(map(str, granted["sqs:SendMessage"])) == sorted(
        str(_queue_arn(resources_of, config.physical_name(q.name))) for q in resources.SEND_QUEUES
    )
    everything = resources.secrets_prefix(config.name_prefix) + "*"
    for action in SECRET_WRITE:
        assert _secret_names(granted, action) == {everything}, action
    # Tenants' API keys and their usage plans' key links (tests/infra/test_infra_api.py checks where).
    assert set(granted) == {
        "apigateway:GET",
        "apigateway:POST",
        "apigateway:DELETE",
        *ACCESS_ACTIONS["read_write"],
        "dynamodb:Scan",
        "sqs:SendMessage",
        *SECRET_WRITE,
        *LOG_ACTIONS,
    }


@pytest.mark.parametrize("definition", [AUTHORIZER, SWEEPER, INGEST_WORKER], ids=lambda d: d.name)
def test_functions_without_secrets_get_neither_grant_nor_prefix(
    resources_of: Any, config: EnvironmentConfig, definition: FunctionDefinition
) -> None:
    assert not {a for a in _grants(resources_of, config, definition) if a.startswith("secretsmanager:")}
    assert resources.SECRETS_PREFIX_ENV not in _env(resources_of, config, definition)


def test_no_function_but_the_admin_api_may_write_passwords(resources_of: Any, config: EnvironmentConfig) -> None:
    """Only the admin API creates or replaces a secret outside the DKIM pattern."""
    dkim = resources.secrets_prefix(config.name_prefix) + resources.DKIM_SECRETS_PATTERN
    for definition in FUNCTIONS:
        granted = _grants(resources_of, config, definition)
        for action in ("secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret"):
            names = _secret_names(granted, action)
            if definition is not ADMIN_API:
                assert names <= {dkim}, (definition.name, action)


def test_the_poller_reads_passwords_only(resources_of: Any, config: EnvironmentConfig) -> None:
    granted = _grants(resources_of, config, IMAP_POLLER)
    assert {a for a in granted if a.startswith("secretsmanager:")} == {"secretsmanager:GetSecretValue"}
