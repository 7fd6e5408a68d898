"""`make run BACKEND=localstack`: each service's endpoint, as the local stack's clients, its child
processes (AWS_ENDPOINT_URL_<SERVICE>) and the CLI (`--env local`, from local.json) see it."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.errors import CliError
from cli.target import LOCAL_DOWN, local_target
from local.aws import LocalAws
from local.platform import LocalConfig
from local.provision import LocalResources
from petrel import resources as r
from petrel.container.admin_api import AdminApiContainer
from petrel.models.records import Tenant
from petrel.services.tenants import MAX_AGE_HOURS_CEILING
from petrel.settings import AdminApiSettings

MOTO = "http://127.0.0.1:5000"
LOCALSTACK = "http://127.0.0.1:4566"
ON_LOCALSTACK = ("sqs", "s3", "secretsmanager", "scheduler")


def _aws() -> LocalAws:
    return LocalAws(MOTO, service_endpoints=dict.fromkeys(ON_LOCALSTACK, LOCALSTACK), backend="localstack")


def test_each_service_goes_to_the_backend_that_serves_it() -> None:
    aws = _aws()
    assert {service: aws.endpoint_for(service) for service in ("dynamodb", *ON_LOCALSTACK)} == {
        "dynamodb": MOTO,
        **dict.fromkeys(ON_LOCALSTACK, LOCALSTACK),
    }
    clients = aws.clients()
    assert clients.client("dynamodb").meta.endpoint_url == MOTO
    assert clients.client("sqs").meta.endpoint_url == LOCALSTACK
    assert aws.client("secretsmanager").meta.endpoint_url == LOCALSTACK
    environment = aws.environment()
    assert environment["AWS_ENDPOINT_URL"] == MOTO
    assert environment["AWS_ENDPOINT_URL_SECRETS_MANAGER"] == LOCALSTACK
    assert environment["AWS_ENDPOINT_URL_SQS"] == LOCALSTACK
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in environment


def test_moto_alone_serves_everything() -> None:
    aws = LocalAws(MOTO)
    assert set(aws.endpoints().values()) == {MOTO}
    assert not [name for name in aws.environment() if name.startswith("AWS_ENDPOINT_URL_")]


@pytest.mark.parametrize(("field", "value"), [("backend", "docker"), ("log_format", "xml")])
def test_an_unknown_backend_or_log_format_is_refused(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"unknown {field.replace('_', ' ')} '{value}'"):
        LocalConfig(workdir=tmp_path, **{field: value})  # type: ignore[arg-type]


def _resources() -> LocalResources:
    """Names as `local.provision` makes them (nothing is created: only the environments are built)."""
    return LocalResources(
        prefix="petrel-local",
        tables={spec.name: f"petrel-local-{spec.name}" for spec in r.TABLES},
        queue_urls={spec.name: f"{MOTO}/000000000000/petrel-local-{spec.name}" for spec in r.QUEUES},
        queue_arns={spec.name: f"arn:aws:sqs:us-east-1:000000000000:petrel-local-{spec.name}" for spec in r.QUEUES},
        dlq_urls={},
        bucket="petrel-local-bodies",
        secrets_prefix="petrel-local/tenants/",
        schedule_group="petrel-local-retries",
        scheduler_role_arn="arn:aws:iam::000000000000:role/petrel-local-scheduler",
        schedules_dlq_url=f"{MOTO}/000000000000/petrel-local-schedules-dlq",
        schedules_dlq_arn="arn:aws:sqs:us-east-1:000000000000:petrel-local-schedules-dlq",
    )


@pytest.mark.parametrize("hours", [None, 72])
def test_the_admin_api_bounds_max_age_hours_by_the_local_environments_maximum(
    tmp_path: Path, hours: int | None
) -> None:
    """As deployed (infra's construct sets it from cdk.json), the admin function's environment names
    the environment's max_message_age_hours: not left to AdminApiSettings' default."""
    config = (
        LocalConfig(workdir=tmp_path) if hours is None else LocalConfig(workdir=tmp_path, max_message_age_hours=hours)
    )
    expected = Tenant.model_fields["max_age_hours"].default if hours is None else hours

    environment = config.environments(_resources())["admin-api"]

    assert environment[r.MAX_MESSAGE_AGE_HOURS_ENV] == str(expected)
    settings = AdminApiSettings.model_validate(environment)
    assert settings.max_message_age_hours == expected
    assert AdminApiContainer(settings).max_age_hours_limit == expected
    assert settings.tenants_table == "petrel-local-tenants"


@pytest.mark.parametrize("hours", [0, MAX_AGE_HOURS_CEILING + 1])
def test_a_maximum_message_age_out_of_bounds_is_refused(tmp_path: Path, hours: int) -> None:
    with pytest.raises(ValueError, match=f"max_message_age_hours must be between 1 and {MAX_AGE_HOURS_CEILING}"):
        LocalConfig(workdir=tmp_path, max_message_age_hours=hours)


def _local_json(workdir: Path, moto: str, localstack: str) -> None:
    aws = {
        "endpoint_url": moto,
        "endpoint_urls": {"dynamodb": moto, **dict.fromkeys(ON_LOCALSTACK, localstack)},
        "region": "us-east-1",
        "prefix": "petrel-local",
        "tables": {"tenants": "petrel-local-tenants", "messages": "petrel-local-messages"},
        "secrets_prefix": "petrel-local/tenants/",
    }
    (workdir / "local.json").write_text(json.dumps({"backend": "localstack", "aws": aws}))


def test_the_cli_follows_local_jsons_endpoint_per_service(tmp_path: Path) -> None:
    _local_json(tmp_path, MOTO, LOCALSTACK)
    settings = local_target(tmp_path).settings
    assert settings.endpoint_urls() == {"dynamodb": MOTO, "secretsmanager": LOCALSTACK, "sqs": LOCALSTACK}


@pytest.fixture
def listening() -> Iterator[str]:
    """An endpoint something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def _closed_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_the_cli_says_the_stack_is_down_when_localstack_is_gone(tmp_path: Path, listening: str) -> None:
    _local_json(tmp_path, listening, listening)
    local_target(tmp_path).check_reachable()  # both listen
    _local_json(tmp_path, listening, _closed_endpoint())
    with pytest.raises(CliError, match=re.escape(LOCAL_DOWN)):
        local_target(tmp_path).check_reachable()


def test_the_local_admin_api_and_authorizer_know_the_plans_and_the_usage_key_prefix(tmp_path: Path) -> None:
    """The plans make run's front throttles by are the ones a tenant may be given, with no usage plan
    to enroll in (the front is the edge locally); both functions make usage keys of the same prefix."""
    from infra.config import ApiPlan
    from petrel.settings import AuthorizerSettings

    plans = {"standard": ApiPlan(rate_per_second=5, burst=10), "gold": ApiPlan(rate_per_second=50, burst=60)}
    config = LocalConfig(workdir=tmp_path, api_plans=plans)
    environments = config.environments(_resources())
    admin = AdminApiSettings.model_validate(environments["admin-api"])
    assert admin.api_plans == {"standard": "", "gold": ""}
    container = AdminApiContainer(admin)
    assert container.usage_plans is None  # nothing to enroll in
    assert container.api_plans == {"standard": "", "gold": ""}  # what AdminDeps checks a plan against
    authorizer = AuthorizerSettings.model_validate(environments["authorizer"])
    assert authorizer.usage_key_prefix == admin.usage_key_prefix == config.prefix
