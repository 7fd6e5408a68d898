"""`petrel tenant|key|domain|server` on the in-memory fakes: what an operator sees and what is stored."""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cli.command import Context
from cli.main import parser, run
from cli.output import Output
from cli.target import LOCAL, Target
from local.tls import make_tls_files
from petrel.adapters.dead_letters import SqsDeadLetters
from petrel.container.admin import AdminSettings
from petrel.services.redrive import RedriveDeps
from petrel.services.tenants import AdminDeps
from tests.fakes.world import FakeWorld

SETTINGS = AdminSettings(
    name_prefix="petrel-test",
    tenants_table="petrel-test-tenants",
    messages_table="petrel-test-messages",
    secrets_prefix="petrel-test/tenants/",
)


@dataclass
class FakeServices:
    """The admin container's surface, on fakes; the DLQ commands are tested against moto instead."""

    admin: AdminDeps

    @property
    def redrive(self) -> RedriveDeps:
        raise AssertionError("no DLQ here")

    @property
    def dead_letters(self) -> SqsDeadLetters:
        raise AssertionError("no DLQ here")


@dataclass
class Result:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    world: FakeWorld
    workdir: Path
    state: dict[str, object] = field(default_factory=dict)
    max_age_hours_limit: int = 48

    def __call__(self, *argv: str) -> Result:
        args: argparse.Namespace = parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        deps = AdminDeps(
            tenants=self.world.tenants,
            secrets=self.world.secrets,
            clock=self.world.clock,
            secrets_prefix=SETTINGS.secrets_prefix,
            max_age_hours_limit=self.max_age_hours_limit,
        )
        context = Context(
            env=LOCAL,
            workdir=self.workdir,
            output=Output(as_json=args.json, out=out, err=err),
            target=Target(env=LOCAL, settings=SETTINGS, state=self.state),
            services=FakeServices(deps),
        )
        status = run(args, context)
        return Result(status, out.getvalue(), err.getvalue())

    def tenant(self, *options: str) -> str:
        created = self("--json", "tenant", "create", "Acme", *options)
        assert created.status == 0, created.err
        tenant_id: str = created.json()["tenant_id"]
        return tenant_id


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(FakeWorld(), tmp_path)


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str, *, tty: bool = False) -> None:
    class Input(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stdin", Input(text))


def test_tenant_create_takes_its_settings_and_prints_a_table_with_headers(cli: Cli) -> None:
    result = cli("tenant", "create", "  Acme  ", "--max-message-bytes", "2000000", "--max-age-hours", "12")

    assert result.status == 0, result.err
    header, row = result.out.splitlines()
    assert header.split() == ["TENANT_ID", "NAME", "MAX_MESSAGE_BYTES", "MAX_AGE_HOURS", "CREATED_AT"]
    [tenant] = cli.world.tenants.list_tenants()
    assert row.split()[:4] == [tenant.tenant_id, "Acme", "2000000", "12"]
    assert (tenant.max_message_bytes, tenant.max_age_hours) == (2_000_000, 12)


def test_tenant_create_without_settings_keeps_the_model_defaults(cli: Cli) -> None:
    tenant_id = cli.tenant()
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and (tenant.max_message_bytes, tenant.max_age_hours) == (25 * 1024 * 1024, 24)


def test_tenant_set_changes_only_what_is_given(cli: Cli) -> None:
    tenant_id = cli.tenant("--max-message-bytes", "2000000")

    result = cli("--json", "tenant", "set", tenant_id, "--max-age-hours", "36")

    assert result.status == 0, result.err
    shown = result.json()
    assert (shown["max_age_hours"], shown["max_message_bytes"], shown["name"]) == (36, 2_000_000, "Acme")
    stored = cli.world.tenants.get_tenant(tenant_id)
    assert stored is not None and (stored.max_age_hours, stored.max_message_bytes) == (36, 2_000_000)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-age-hours", "49"], "max age hours must be between 1 and 48 in this environment"),
        (["--max-age-hours", "0"], "max age hours must be between 1 and 48"),
        (["--max-message-bytes", "100"], "max message bytes must be between 10240 and"),
        (["--name", " "], "a tenant needs a name"),
        ([], "nothing to change"),
    ],
)
def test_tenant_set_refuses_in_one_line_and_changes_nothing(cli: Cli, options: list[str], message: str) -> None:
    tenant_id = cli.tenant()
    before = cli.world.tenants.get_tenant(tenant_id)

    result = cli("tenant", "set", tenant_id, *options)

    assert result.status == 2 and result.out == ""
    assert result.err.startswith(f"petrel: {message}") and result.err.count("\n") == 1
    assert cli.world.tenants.get_tenant(tenant_id) == before


def test_setting_a_missing_tenant_names_it(cli: Cli) -> None:
    result = cli("tenant", "set", "tn_nope", "--max-age-hours", "2")
    assert (result.status, result.err) == (2, "petrel: no tenant 'tn_nope'\n")


@pytest.mark.parametrize(
    ("command", "header"),
    [
        (["tenant", "list"], "TENANT_ID  NAME  MAX_MESSAGE_BYTES  MAX_AGE_HOURS  CREATED_AT"),
        (["key", "list", "{tenant}"], "KEY_ID  PREFIX  NAME  SCOPES  CREATED_AT  REVOKED_AT"),
        (["domain", "list", "{tenant}"], "DOMAIN  RETURN_PATH_DOMAIN  CREATED_AT"),
        (["server", "list", "{tenant}"], "SERVER_ID  HOST  PORT  SECURITY  USERNAME  POOL  WEIGHT  ENABLED  CA"),
    ],
)
def test_every_list_has_a_header_even_when_empty(cli: Cli, command: list[str], header: str) -> None:
    tenant_id = cli.tenant() if "{tenant}" in command else ""
    if not tenant_id:
        cli.world.tenants.tenants.clear()
    result = cli(*(part.replace("{tenant}", tenant_id) for part in command))
    assert (result.status, result.out) == (0, header + "\n")


@pytest.mark.parametrize("group", ["key", "domain", "server"])
def test_a_list_of_a_missing_tenant_is_an_error_not_an_empty_table(cli: Cli, group: str) -> None:
    result = cli(group, "list", "tn_typo")
    assert (result.status, result.out, result.err) == (2, "", "petrel: no tenant 'tn_typo'\n")


def test_domain_add_refuses_to_overwrite_and_update_changes_the_return_path(cli: Cli) -> None:
    tenant_id = cli.tenant()
    assert cli("domain", "add", tenant_id, "Acme.Example", "--return-path-domain", "bounces.acme.example").status == 0

    again = cli("domain", "add", tenant_id, "acme.example")

    assert again.status == 2
    assert "already has domain 'acme.example'" in again.err and "domain update" in again.err
    [kept] = cli.world.tenants.list_domains(tenant_id)
    assert kept.return_path_domain == "bounces.acme.example"

    updated = cli("domain", "update", tenant_id, "acme.example", "--return-path-domain", "rp.acme.example")
    assert updated.status == 0, updated.err
    assert updated.out.splitlines()[1].split()[:2] == ["acme.example", "rp.acme.example"]
    [changed] = cli.world.tenants.list_domains(tenant_id)
    assert (changed.return_path_domain, changed.created_at) == ("rp.acme.example", kept.created_at)


def test_domain_update_needs_an_existing_domain(cli: Cli) -> None:
    tenant_id = cli.tenant()
    result = cli("domain", "update", tenant_id, "acme.example", "--return-path-domain", "rp.acme.example")
    assert result.status == 2 and "has no domain 'acme.example'; add it with `domain add`" in result.err
    assert cli.world.tenants.list_domains(tenant_id) == []


def test_a_key_is_shown_once_and_its_listing_never_holds_it(cli: Cli) -> None:
    tenant_id = cli.tenant()
    created = cli("key", "create", tenant_id, "--name", "production")
    assert created.status == 0
    key_id, secret = created.out.splitlines()[1].split()
    assert "shown once" in created.err  # advice on stderr, so --json output stays parseable

    listed = cli("key", "list", tenant_id)
    [stored] = cli.world.tenants.list_api_keys(tenant_id)
    assert listed.out.splitlines()[1].split()[:3] == [key_id, stored.prefix, "production"]
    assert secret.startswith(stored.prefix) and secret not in listed.out and stored.key_hash not in listed.out


def test_server_add_reads_the_password_from_stdin_and_never_prints_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = cli.tenant()
    _stdin(monkeypatch, "s3cret-pw\n")

    result = cli(
        "server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay@acme.example",
        "--security", "tls", "--password-stdin",
    )  # fmt: skip

    assert result.status == 0, result.err
    [server] = cli.world.tenants.list_servers(tenant_id)
    assert (server.port, server.security.value, server.pool) == (465, "tls", "transactional")  # tls: 465
    assert cli.world.secrets.secrets == {server.secret_name: "s3cret-pw"}
    assert "s3cret-pw" not in result.out + result.err
    assert f"server test {tenant_id} {server.server_id}" in result.err


def test_server_add_with_the_local_relay_takes_local_json(cli: Cli, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    (tmp_path / "tls").mkdir()
    ca.write_text(make_tls_files(tmp_path / "tls").ca_pem)
    cli.state = {
        "relay": {
            "host": "127.0.0.1",
            "submission_port": 2587,
            "smtps_port": 2465,
            "username": "relay@petrel.test",
            "password": "relay-pw",
            "ca_file": str(ca),
        }
    }
    tenant_id = cli.tenant()

    starttls = cli("server", "add", tenant_id, "--local-relay")
    tls = cli("server", "add", tenant_id, "--local-relay", "--security", "tls", "--pool", "bulk")

    assert starttls.status == 0 and tls.status == 0, starttls.err + tls.err
    servers = sorted(cli.world.tenants.list_servers(tenant_id), key=lambda s: s.port)
    assert [(s.host, s.port, s.security.value, s.username, s.pool) for s in servers] == [
        ("127.0.0.1", 2465, "tls", "relay@petrel.test", "bulk"),
        ("127.0.0.1", 2587, "starttls", "relay@petrel.test", "transactional"),
    ]
    assert all(s.ca_bundle == ca.read_text() for s in servers)
    assert set(cli.world.secrets.secrets.values()) == {"relay-pw"}
    assert "relay-pw" not in starttls.out + starttls.err + tls.out + tls.err


def test_the_local_relay_needs_its_section_in_local_json(cli: Cli) -> None:
    tenant_id = cli.tenant()
    result = cli("server", "add", tenant_id, "--local-relay")
    assert result.status == 2 and "local.json has no relay account" in result.err
    assert cli.world.tenants.list_servers(tenant_id) == []


def test_a_password_is_never_an_argument_and_never_read_from_a_pipe_unasked(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["server", "add", "tn_1", "--host", "h", "--username", "u", "--password", "pw"])
    tenant_id = cli.tenant()
    _stdin(monkeypatch, "piped\n", tty=False)

    result = cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay")

    assert result.status == 2 and "--password-env NAME or --password-stdin" in result.err
    assert cli.world.secrets.secrets == {}


def test_set_password_from_the_environment_rotates_the_secret(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    _stdin(monkeypatch, "first\n")
    cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay", "--password-stdin")
    [server] = cli.world.tenants.list_servers(tenant_id)
    monkeypatch.setenv("MAILU_PASSWORD", "second")

    result = cli("server", "set-password", tenant_id, server.server_id, "--password-env", "MAILU_PASSWORD")

    assert (result.status, result.out) == (0, f"{server.server_id}: password updated\n")
    assert cli.world.secrets.secrets == {server.secret_name: "second"}
    monkeypatch.delenv("MAILU_PASSWORD")
    empty = cli("server", "set-password", tenant_id, server.server_id, "--password-env", "MAILU_PASSWORD")
    assert empty.status == 2 and empty.err == "petrel: environment variable MAILU_PASSWORD is empty or not set\n"


def test_server_test_needs_a_sending_domain_for_its_mail_from(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    _stdin(monkeypatch, "pw\n")
    cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay", "--password-stdin")
    [server] = cli.world.tenants.list_servers(tenant_id)

    result = cli("server", "test", tenant_id, server.server_id)

    assert result.status == 2 and result.out == ""
    assert result.err == f"petrel: tenant '{tenant_id}' has no sending domain yet: add one with `domain add` first\n"


def test_server_remove_deletes_the_server_and_its_secret(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    _stdin(monkeypatch, "pw\n")
    cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay", "--password-stdin")
    [server] = cli.world.tenants.list_servers(tenant_id)

    assert cli("--json", "server", "remove", tenant_id, server.server_id).json() == {
        "server_id": server.server_id,
        "result": "removed",
    }
    assert cli.world.tenants.list_servers(tenant_id) == [] and cli.world.secrets.secrets == {}
    again = cli("server", "remove", tenant_id, server.server_id)
    assert again.status == 2 and again.err == f"petrel: no SMTP server '{server.server_id}' for tenant '{tenant_id}'\n"
