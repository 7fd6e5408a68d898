"""Which environment `petrel` acts on (cli.target), how it prints (cli.output), its help and its errors."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from cli.errors import CliError
from cli.main import EXIT_FAILED, EXIT_REFUSED, explain, parser
from cli.output import table
from cli.passwords import read_password
from cli.target import LOCAL_DOWN, deployed_target, local_target
from infra.config import EnvironmentConfig
from petrel.errors import ConfigurationError
from petrel.ports import RecordNotFound

REPO = Path(__file__).resolve().parents[2]


def _local_json(workdir: Path, **extra: object) -> None:
    aws = {
        "endpoint_url": "http://127.0.0.1:4566",
        "region": "eu-west-1",
        "prefix": "petrel-local",
        "tables": {"tenants": "petrel-local-tenants", "messages": "petrel-local-messages"},
        "secrets_prefix": "petrel-local/tenants/",
    }
    (workdir / "local.json").write_text(json.dumps({"aws": aws, **extra}))


def test_the_local_target_comes_from_local_json(tmp_path: Path) -> None:
    _local_json(tmp_path)
    target = local_target(tmp_path)
    settings = target.settings
    assert target.is_local
    assert (settings.name_prefix, settings.tenants_table, settings.messages_table, settings.secrets_prefix) == (
        "petrel-local",
        "petrel-local-tenants",
        "petrel-local-messages",
        "petrel-local/tenants/",
    )
    assert settings.endpoint_urls() == dict.fromkeys(("dynamodb", "secretsmanager", "sqs"), "http://127.0.0.1:4566")
    assert target.session_arguments() == {
        "region_name": "eu-west-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }


def test_a_missing_or_broken_state_file_is_one_line_of_advice(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"local.json not found: start the local stack with `make run` first"):
        local_target(tmp_path)
    (tmp_path / "local.json").write_text('{"aws": {}}')
    with pytest.raises(CliError, match=r"is not the local stack's state \(KeyError"):
        local_target(tmp_path)


def test_the_local_relay_is_the_relay_section_completed_by_the_stand_ins_ports(tmp_path: Path) -> None:
    ports = {"host": "127.0.0.1", "submission_port": 2587, "smtps_port": 2465, "username": "relay@petrel.test"}
    account = {"host": "127.0.0.1", "port": 2587, "security": "starttls", "username": "relay@petrel.test"}
    _local_json(tmp_path, smtp_server=ports, relay={**account, "password": "pw", "ca_file": "/ca.pem"})
    relay = local_target(tmp_path).local_relay()
    assert (relay.host, relay.ports, relay.security, relay.password, relay.ca_file) == (
        "127.0.0.1",
        {"starttls": 2587, "tls": 2465},
        "starttls",
        "pw",
        "/ca.pem",
    )
    _local_json(tmp_path, relay=account)
    assert local_target(tmp_path).local_relay().ports == {"starttls": 2587}


def test_a_deployed_environment_comes_from_cdk_json_through_infra_config(tmp_path: Path) -> None:
    cdk_json = tmp_path / "cdk.json"
    shutil.copy(REPO / "cdk.json", cdk_json)
    raw = json.loads(cdk_json.read_text())
    raw["context"]["environments"]["staging"].update(
        name_prefix="acme-stg", max_message_age_hours=36, message_retention_days=40, body_retention_days=40
    )
    cdk_json.write_text(json.dumps(raw))

    target = deployed_target("staging", cdk_json)

    settings = target.settings
    assert not target.is_local and settings.endpoint_urls() == {}
    assert (settings.tenants_table, settings.messages_table, settings.secrets_prefix) == (
        "acme-stg-tenants",
        "acme-stg-messages",
        "acme-stg/tenants/",
    )
    assert settings.max_age_hours_limit == 36
    assert "aws_access_key_id" not in target.session_arguments()


def test_the_repositorys_environments_default_to_the_tenant_default_age(tmp_path: Path) -> None:
    default = EnvironmentConfig.model_fields["max_message_age_hours"].default
    assert deployed_target("dev", REPO / "cdk.json").settings.max_age_hours_limit == default


def test_an_unknown_or_invalid_environment_is_infra_configs_message(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"env='qa' is not one of \['dev', 'prod', 'staging'\]"):
        deployed_target("qa", REPO / "cdk.json")
    broken = tmp_path / "cdk.json"
    raw = json.loads((REPO / "cdk.json").read_text())
    raw["context"]["environments"]["dev"]["batch_size"] = 0
    broken.write_text(json.dumps(raw))
    with pytest.raises(CliError, match=r"^cdk.json context environments.dev.batch_size: "):
        deployed_target("dev", broken)
    with pytest.raises(CliError, match=r"cannot read .*nowhere.json"):
        deployed_target("dev", tmp_path / "nowhere.json")


def test_a_table_has_an_upper_case_header_and_aligned_columns() -> None:
    rows: list[dict[str, object]] = [
        {"id": "a", "name": "Acme", "enabled": True},
        {"id": "bbbb", "name": None, "enabled": False},
    ]
    assert table(rows, ["id", "name", "enabled"]) == (
        "ID    NAME  ENABLED\n"
        "a     Acme  yes\n"
        "bbbb  -     no"
    )  # fmt: skip
    assert table([], ["id", "name"]) == "ID  NAME"


def _subcommands(root: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [root]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _subcommands(sub)
    return found


def test_help_explains_every_default() -> None:
    """Every option with a default says it in `--help` (each subcommand uses cli.command's formatter); a
    flag (no argument: store_true, store_false) says what it does instead, never "(default: True)"."""
    commands = _subcommands(parser())
    assert len(commands) > 20
    for command in commands:
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if action.option_strings and action.nargs == 0:
                assert f"(default: {action.default})" not in text or action.default in (None, False), command.prog
                continue
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
                continue
            assert f"(default: {action.default})" in text or "default" in (action.help or ""), (
                command.prog,
                action.dest,
            )


@pytest.mark.parametrize(
    ("error", "local", "line", "status"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, LOCAL_DOWN, EXIT_REFUSED),
        (
            EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/"),
            False,
            'cannot reach AWS: Could not connect to the endpoint URL: "https://dynamodb.eu-west-1.amazonaws.com/"',
            EXIT_FAILED,
        ),
        (
            ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not you"}}, "PutItem"),
            False,
            "AWS AccessDeniedException: not you",
            EXIT_FAILED,
        ),
        (
            NoCredentialsError(),
            False,
            "Unable to locate credentials: configure AWS credentials and a region (e.g. AWS_PROFILE)",
            EXIT_REFUSED,
        ),
        (ConfigurationError("no tenant 'x'"), True, "no tenant 'x'", EXIT_REFUSED),
        (RecordNotFound("no such secret\nsecond line"), True, "no such secret", EXIT_REFUSED),
        (RuntimeError("boom\nat line 2"), True, "RuntimeError: boom", EXIT_FAILED),
    ],
)
def test_every_error_is_one_line_and_a_non_zero_status(error: Exception, local: bool, line: str, status: int) -> None:
    assert explain(error, local=local) == (line, status)


def test_a_usage_error_is_one_line_naming_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["tenant", "update", "tn_1", "--max-age-hours", "soon"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "petrel tenant update: argument --max-age-hours: invalid int value: 'soon' (see petrel tenant update --help)\n"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_asked_for_the_password_through_the_no_echo_prompt() -> None:
    args = argparse.Namespace(password_env=None, password_stdin=False)
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    assert read_password(args, stdin=_Terminal(""), prompt=prompt) == "typed"
    assert asked == ["SMTP password: "]
    with pytest.raises(CliError, match="no password given"):
        read_password(args, stdin=_Terminal(""), prompt=lambda _: "")
    with pytest.raises(CliError, match="never on the command line"):
        read_password(args, stdin=io.StringIO("piped\n"), prompt=prompt)
    assert asked == ["SMTP password: "]  # a pipe is read only when --password-stdin says so
