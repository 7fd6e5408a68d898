"""infra.config: cdk.json environments are validated, and a bad one is named precisely."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from pydantic import BaseModel

import app as petrel_app
from infra.config import CONTEXT_KEY, ConfigError, parse_environments, select_environments
from infra.constructs.functions import API, FUNCTIONS, SEND_WORKER, FunctionDefinition
from petrel import resources, settings
from petrel.models.api import MAX_SCHEDULE_DAYS

pytestmark = pytest.mark.infra


@pytest.fixture
def raw() -> dict[str, Any]:
    return copy.deepcopy(petrel_app.cdk_json_context()[CONTEXT_KEY])


def test_cdk_json_has_the_three_environments(raw: dict[str, Any]) -> None:
    configs = parse_environments(raw)
    assert list(configs) == ["dev", "staging", "prod"]
    assert [c.name_prefix for c in configs.values()] == ["petrel-dev", "petrel-staging", "petrel-prod"]
    assert configs["dev"].removal_policy == "destroy"
    assert {configs["staging"].removal_policy, configs["prod"].removal_policy} == {"retain"}


def test_select_one_or_all(raw: dict[str, Any]) -> None:
    assert [c.name for c in select_environments(raw, None)] == ["dev", "staging", "prod"]
    assert [c.name for c in select_environments(raw, "prod")] == ["prod"]
    with pytest.raises(ConfigError, match=re.escape("env='qa' is not one of ['dev', 'prod', 'staging']")):
        select_environments(raw, "qa")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 0, "environments.dev.batch_size: Input should be greater than or equal to 1"),
        ("batch_size", "10", "environments.dev.batch_size: Input should be a valid integer"),
        ("log_retention_days", 10, "environments.dev.log_retention_days: CloudWatch Logs accepts only"),
        ("removal_policy", "keep", "environments.dev.removal_policy: Input should be 'destroy' or 'retain'"),
        ("tracing", "yes", "environments.dev.tracing: Input should be a valid boolean"),
        ("alarm_email", "nobody", "environments.dev.alarm_email: String should match pattern"),
        (
            "max_concurrency",
            {"send-transactional": 1, "send-bulk": 2},
            "maximum concurrency must be between 2",
        ),
        (
            "max_concurrency",
            {"send-transactional": 2},
            "environments.dev.max_concurrency: needs exactly one entry",
        ),
        ("colour", "blue", "environments.dev.colour: Extra inputs are not permitted"),
        ("retry_delays", [], "environments.dev.retry_delays: needs at least one delay"),
        ("retry_delays", [60, 0], "environments.dev.retry_delays: needs at least one delay"),
        ("retry_delays", "60,300", "environments.dev.retry_delays: Input should be a valid tuple"),
        ("retry_delays", [60, "300"], "environments.dev.retry_delays.1: Input should be a valid integer"),
        ("oldest_message_alarm_seconds", 30, "environments.dev.oldest_message_alarm_seconds: Input should be"),
        ("poll_interval_minutes", 0, "environments.dev.poll_interval_minutes: Input should be greater than or equal"),
        ("poll_interval_minutes", 61, "environments.dev.poll_interval_minutes: Input should be less than or equal"),
        ("poller_one_at_a_time", 1, "environments.dev.poller_one_at_a_time: Input should be a valid boolean"),
        ("poll_batch", 1001, "environments.dev.poll_batch: Input should be less than or equal to 1000"),
        ("ingest_max_concurrency", 1, "environments.dev.ingest_max_concurrency: Input should be greater than"),
        ("inbound_link_seconds", 30, "environments.dev.inbound_link_seconds: Input should be greater than"),
        ("inbound_retention_days", 14, "environments.dev: inbound_retention_days 14 must be longer than the ingest"),
        ("ingest_batch_size", 11, "environments.dev: ingest_batch_size 11 > 10 needs max_batching_window_seconds"),
        ("imap_timeout_seconds", 290, "environments.dev: imap_timeout_seconds plus the poller's 10 s margin"),
        ("dns_resolvers", "dns.google", "environments.dev.dns_resolvers: 'dns.google': a resolver is an IP address"),
        ("dns_resolvers", "1.1.1.1, 9.9.9.9:0", "environments.dev.dns_resolvers: 9.9.9.9:0: the port must be"),
        ("dns_resolvers", "1.1.1.1:dns", "environments.dev.dns_resolvers: '1.1.1.1:dns': expected ip, ip:port"),
        ("dns_resolvers", ["1.1.1.1"], "environments.dev.dns_resolvers: Input should be a valid string"),
        ("dns_timeout_seconds", 0, "environments.dev.dns_timeout_seconds: Input should be greater than 0"),
        ("dns_timeout_seconds", 11, "environments.dev.dns_timeout_seconds: Input should be less than or equal"),
        ("domain_check_minutes", 4, "environments.dev.domain_check_minutes: Input should be greater than or equal"),
        ("domain_check_minutes", 1441, "environments.dev.domain_check_minutes: Input should be less than or equal"),
        ("domain_checker_one_at_a_time", 0, "environments.dev.domain_checker_one_at_a_time: Input should be a valid"),
    ],
)
def test_bad_value_is_rejected_with_its_key(raw: dict[str, Any], key: str, value: Any, message: str) -> None:
    raw["dev"][key] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_environments(raw)


def test_missing_key_is_named(raw: dict[str, Any]) -> None:
    del raw["staging"]["worker_timeout_seconds"]
    with pytest.raises(ConfigError, match=re.escape("environments.staging.worker_timeout_seconds: Field required")):
        parse_environments(raw)


def test_cross_field_rules(raw: dict[str, Any]) -> None:
    raw["dev"]["batch_size"] = 50
    raw["dev"]["max_batching_window_seconds"] = 0
    with pytest.raises(ConfigError, match="needs max_batching_window_seconds >= 1"):
        parse_environments(raw)


@pytest.mark.parametrize("seconds", [10, 60])  # dev: smtp_timeout_seconds 20, worker_timeout_seconds 60
def test_smtp_transaction_limit_lies_between_the_socket_timeout_and_the_worker_timeout(
    raw: dict[str, Any], seconds: int
) -> None:
    assert parse_environments(raw)["dev"].smtp_transaction_seconds == 45  # the default fits every environment
    raw["dev"]["smtp_transaction_seconds"] = seconds
    with pytest.raises(ConfigError, match="smtp_transaction_seconds must be at least smtp_timeout_seconds"):
        parse_environments(raw)


def test_the_sweeper_waits_for_sqs_redelivery_first(raw: dict[str, Any]) -> None:
    """dev: worker timeout 60 s, so visibility 360 s and a dead worker's job is back 300 s after its lease."""
    raw["dev"]["sweep_grace_seconds"] = 300
    with pytest.raises(ConfigError, match="sweep_grace_seconds 300 must be longer than"):
        parse_environments(raw)
    raw["dev"]["sweep_grace_seconds"] = 301
    assert parse_environments(raw)["dev"].sweep_grace_seconds == 301


def test_configs_are_frozen(raw: dict[str, Any]) -> None:
    config = parse_environments(raw)["dev"]
    with pytest.raises(Exception, match="frozen"):
        config.batch_size = 3  # type: ignore[misc]


def test_retry_ladder_reaches_the_worker_only_when_configured(raw: dict[str, Any]) -> None:
    default = parse_environments(raw)["dev"]
    assert default.retry_delays is None
    assert resources.RETRY_DELAYS_ENV not in SEND_WORKER.extra_environment(default)

    raw["dev"]["retry_delays"] = [30, 120, 600]
    config = parse_environments(raw)["dev"]
    worker_env = SEND_WORKER.extra_environment(config)
    assert worker_env[resources.RETRY_DELAYS_ENV] == "30,120,600"
    assert resources.RETRY_DELAYS_ENV not in API.extra_environment(config)
    # The worker's own settings model reads it back as the same ladder.
    worker_settings = settings.SendWorkerSettings.model_validate(
        {**{name: "x" for name in _required(settings.SendWorkerSettings)}, **worker_env}
    )
    assert worker_settings.retry_delays == (30, 120, 600)


def test_oldest_message_alarm_defaults_to_fifteen_minutes(raw: dict[str, Any]) -> None:
    assert {c.oldest_message_alarm_seconds for c in parse_environments(raw).values()} == {900}
    raw["prod"]["oldest_message_alarm_seconds"] = 600
    assert parse_environments(raw)["prod"].oldest_message_alarm_seconds == 600


def _required(model: type[BaseModel]) -> set[str]:
    return {str(f.validation_alias) for f in model.model_fields.values() if f.is_required()}


@pytest.mark.parametrize("key", ["message_retention_days", "body_retention_days"])
def test_retention_shorter_than_the_schedule_horizon_plus_max_age_is_rejected(raw: dict[str, Any], key: str) -> None:
    """A message scheduled 30 days ahead, then retried for 24 h, must still exist (and so must its
    body): 30 days of retention are one day short."""
    raw["dev"][key] = 30
    with pytest.raises(ConfigError, match=re.escape(f"environments.dev: {key} 30 is shorter than a message can wait")):
        parse_environments(raw)
    raw["dev"][key] = 31
    assert getattr(parse_environments(raw)["dev"], key) == 31


def test_retention_follows_a_longer_max_age(raw: dict[str, Any]) -> None:
    raw["dev"]["message_retention_days"] = raw["dev"]["body_retention_days"] = 31
    raw["dev"]["max_message_age_hours"] = 72
    with pytest.raises(ConfigError, match="need at least 33 days"):
        parse_environments(raw)


def test_every_environment_keeps_messages_past_the_schedule_horizon(raw: dict[str, Any]) -> None:
    for config in parse_environments(raw).values():
        assert config.message_retention_days * 24 >= MAX_SCHEDULE_DAYS * 24 + config.max_message_age_hours
        assert config.body_retention_days * 24 >= MAX_SCHEDULE_DAYS * 24 + config.max_message_age_hours


def test_ingest_defaults(raw: dict[str, Any]) -> None:
    for environment in raw.values():
        for key in ("poll_interval_minutes", "ingest_batch_size", "poll_concurrency", "poll_batch"):
            environment.pop(key, None)
    config = parse_environments(raw)["dev"]
    assert config.poll_interval_minutes == 1
    assert config.poller_timeout_seconds == 300 and config.poller_one_at_a_time
    assert config.ingest_batch_size == 10
    assert config.poll_concurrency == settings.PollerSettings.model_fields["concurrency"].default
    assert config.poll_batch == settings.PollerSettings.model_fields["batch"].default
    assert config.queue_visibility_seconds(resources.INGEST) == 6 * config.ingest_timeout_seconds
    assert config.queue_visibility_seconds(resources.SEND_BULK) == 6 * config.worker_timeout_seconds


@pytest.mark.parametrize("definition", FUNCTIONS, ids=lambda d: d.name)
def test_each_functions_settings_model_reads_back_what_infra_sets(
    raw: dict[str, Any], definition: FunctionDefinition
) -> None:
    """Every value infra.config lets through is one the function accepts (a wider config range would
    deploy a function that fails its first invocation), and it reads the same value back."""
    for config in parse_environments(raw).values():
        environment = definition.extra_environment(config)
        model = definition.settings.model_validate(
            {**{name: "x" for name in _required(definition.settings)}, **environment}
        )
        by_alias = {
            str(field.validation_alias): getattr(model, name)
            for name, field in definition.settings.model_fields.items()
        }
        for variable, value in environment.items():
            assert variable in by_alias, f"{definition.name} sets {variable}, which its settings model does not read"
            read = by_alias[variable]
            if isinstance(read, dict):  # a JSON object (PETREL_API_PLANS)
                assert read == json.loads(value), variable
                continue
            if isinstance(read, bool):  # a switch (PETREL_API_ACCESS_LOG): set as `true` or `false`
                assert value == str(read).lower(), variable
                continue
            assert (",".join(map(str, read)) if isinstance(read, tuple) else str(read).removesuffix(".0")) == value
