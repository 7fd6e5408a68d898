"""`petrel tenant|key|domain|server` through the admin API (in process, signed, on the in-memory fakes):
what an operator sees, what is stored, and what never travels or prints (passwords, key hashes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import parser
from local.tls import make_tls_files
from petrel.models.admin import Step
from petrel.models.records import SmtpServer
from tests.fakes.world import FakeWorld
from tests.unit.cli_fakes import Cli, one_line_refusal, stdin

TENANT_HEADER = "TENANT_ID  NAME  STATUS  API_PLAN  MAX_MESSAGE_BYTES  MAX_AGE_HOURS  CREATED_AT"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(FakeWorld(), tmp_path)


def _server(cli: Cli, tenant_id: str, monkeypatch: pytest.MonkeyPatch, password: str = "pw") -> SmtpServer:
    stdin(monkeypatch, f"{password}\n")
    added = cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay", "--password-stdin")
    assert added.status == 0, added.err
    [server] = cli.world.tenants.list_servers(tenant_id)
    return server


# tenants


def test_tenant_create_takes_its_settings_and_prints_a_table_with_headers(cli: Cli) -> None:
    result = cli(
        "tenant", "create", "  Acme  ", "--max-message-bytes", "2000000", "--max-age-hours", "12",
        "--daily-quota", "5000", "--per-second-quota", "10", "--allow-unverified-domains",
    )  # fmt: skip

    assert result.status == 0, result.err
    header, row = result.out.splitlines()
    assert header.split()[:7] == [
        "TENANT_ID", "NAME", "STATUS", "MAX_MESSAGE_BYTES", "MAX_AGE_HOURS", "DAILY_QUOTA", "PER_SECOND_QUOTA",
    ]  # fmt: skip
    [tenant] = cli.world.tenants.list_tenants()
    assert row.split()[:8] == [tenant.tenant_id, "Acme", "active", "2000000", "12", "5000", "10", "yes"]
    assert (tenant.max_message_bytes, tenant.max_age_hours) == (2_000_000, 12)
    assert (tenant.daily_quota, tenant.per_second_quota, tenant.allow_unverified_domains) == (5000, 10, True)


def test_tenant_create_without_settings_keeps_the_model_defaults(cli: Cli) -> None:
    tenant_id = cli.tenant()
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and (tenant.max_message_bytes, tenant.max_age_hours) == (25 * 1024 * 1024, 24)
    assert (tenant.daily_quota, tenant.per_second_quota, tenant.allow_unverified_domains) == (None, None, False)


@pytest.mark.parametrize("command", ["update", "set"])  # `set`: the older name keeps working
def test_tenant_update_changes_only_what_is_given(cli: Cli, command: str) -> None:
    tenant_id = cli.tenant("--max-message-bytes", "2000000")

    result = cli("--json", "tenant", command, tenant_id, "--max-age-hours", "36")

    assert result.status == 0, result.err
    shown = result.json()
    assert (shown["max_age_hours"], shown["max_message_bytes"], shown["name"]) == (36, 2_000_000, "Acme")
    stored = cli.world.tenants.get_tenant(tenant_id)
    assert stored is not None and (stored.max_age_hours, stored.max_message_bytes) == (36, 2_000_000)


def test_a_quota_of_none_removes_the_limit_and_travels_as_an_explicit_null(cli: Cli) -> None:
    tenant_id = cli.tenant("--daily-quota", "100", "--per-second-quota", "5")

    result = cli("tenant", "update", tenant_id, "--daily-quota", "none")

    assert result.status == 0, result.err
    stored = cli.world.tenants.get_tenant(tenant_id)
    assert stored is not None and (stored.daily_quota, stored.per_second_quota) == (None, 5)
    assert json.loads(cli.bodies()[-1]) == {"daily_quota": None}  # the per-second quota: not sent, kept


def test_unverified_domains_are_allowed_and_required_again(cli: Cli) -> None:
    tenant_id = cli.tenant()
    assert cli("tenant", "update", tenant_id, "--allow-unverified-domains").status == 0
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and tenant.allow_unverified_domains
    assert cli("tenant", "update", tenant_id, "--require-verified-domains").status == 0
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and not tenant.allow_unverified_domains


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
def test_tenant_update_refuses_in_one_line_and_changes_nothing(cli: Cli, options: list[str], message: str) -> None:
    tenant_id = cli.tenant()
    before = cli.world.tenants.get_tenant(tenant_id)

    result = cli("tenant", "update", tenant_id, *options)

    one_line_refusal(result, message)
    assert cli.world.tenants.get_tenant(tenant_id) == before


@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_a_quota_is_a_positive_count_or_none(cli: Cli, value: str) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["tenant", "update", "tn_1", "--daily-quota", value])


def test_a_missing_tenant_is_named(cli: Cli) -> None:
    for command in (["tenant", "update", "tn_nope", "--max-age-hours", "2"], ["tenant", "show", "tn_nope"]):
        result = cli(*command)
        assert (result.status, result.err) == (2, "petrel: Not found: no tenant 'tn_nope'\n")


def test_suspend_holds_the_tenant_with_its_reason_and_resume_lifts_it(cli: Cli) -> None:
    tenant_id = cli.tenant()

    suspended = cli("--json", "tenant", "suspend", tenant_id, "--reason", "unpaid invoice")

    assert suspended.status == 0, suspended.err
    assert (suspended.json()["status"], suspended.json()["suspended_reason"]) == ("suspended", "unpaid invoice")
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and tenant.suspended and tenant.suspended_reason == "unpaid invoice"
    shown = cli("tenant", "show", tenant_id)
    assert shown.out.splitlines()[1].split()[2] == "suspended"

    resumed = cli("tenant", "resume", tenant_id)

    assert resumed.status == 0, resumed.err
    assert resumed.out.splitlines()[1].split()[2] == "active"
    assert "0 held message(s) released" in resumed.err
    tenant = cli.world.tenants.get_tenant(tenant_id)
    assert tenant is not None and not tenant.suspended


@pytest.mark.parametrize(
    ("command", "header"),
    [
        (["tenant", "list"], TENANT_HEADER),
        (["key", "list", "{tenant}"], "KEY_ID  PREFIX  NAME  SCOPES  CREATED_AT  REVOKED_AT"),
        (["domain", "list", "{tenant}"], "DOMAIN  STATUS  SIGNER  RETURN_PATH_DOMAIN  SENDING_ALLOWED  CREATED_AT"),
        (
            ["server", "list", "{tenant}"],
            "SERVER_ID  HOST  PORT  SECURITY  USERNAME  POOL  WEIGHT  ENABLED  CA  PAUSED",
        ),
    ],
)
def test_every_list_has_a_header_even_when_empty(cli: Cli, command: list[str], header: str) -> None:
    tenant_id = cli.tenant() if "{tenant}" in command else ""
    result = cli(*(part.replace("{tenant}", tenant_id) for part in command))
    assert result.status == 0, result.err
    assert result.out == header + "\n" or (command == ["tenant", "list"] and result.out.startswith(header))


@pytest.mark.parametrize("group", ["key", "domain", "server"])
def test_a_list_of_a_missing_tenant_is_an_error_not_an_empty_table(cli: Cli, group: str) -> None:
    result = cli(group, "list", "tn_typo")
    assert (result.status, result.out, result.err) == (2, "", "petrel: Not found: no tenant 'tn_typo'\n")


# keys


def test_a_key_is_shown_once_and_its_listing_never_holds_it(cli: Cli) -> None:
    tenant_id = cli.tenant()
    created = cli("key", "create", tenant_id, "--name", "production")
    assert created.status == 0, created.err
    key_id, secret, scopes = created.out.splitlines()[1].split()
    assert scopes == "send,read,domains,suppressions,inbound,webhooks"  # every scope by default
    assert "shown once" in created.err  # advice on stderr, so --json output stays parseable

    listed = cli("key", "list", tenant_id)
    [stored] = cli.world.tenants.list_api_keys(tenant_id)
    assert listed.out.splitlines()[1].split()[:3] == [key_id, stored.prefix, "production"]
    assert secret.startswith(stored.prefix) and secret not in listed.out and stored.key_hash not in listed.out


def test_a_key_gets_the_scopes_asked_for_and_the_listing_filters_by_prefix(cli: Cli) -> None:
    tenant_id = cli.tenant()
    reader = cli("--json", "key", "create", tenant_id, "--scope", "read", "--scope", "domains", "--scope", "read")
    other = cli("--json", "key", "create", tenant_id)
    assert reader.status == 0 and other.status == 0, reader.err + other.err
    assert reader.json()["scopes"] == ["read", "domains"]

    listed = cli("--json", "key", "list", tenant_id, "--prefix", reader.json()["prefix"])

    assert [key["key_id"] for key in listed.json()] == [reader.json()["key_id"]]
    assert all("key_hash" not in key and "api_key" not in key for key in listed.json())
    stored = {key.key_id: key for key in cli.world.tenants.list_api_keys(tenant_id)}
    assert stored[reader.json()["key_id"]].granted == ("read", "domains")


def test_an_unknown_scope_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["key", "create", "tn_1", "--scope", "admin"])


def test_a_revoked_key_is_listed_as_revoked(cli: Cli) -> None:
    tenant_id = cli.tenant()
    key_id = cli("--json", "key", "create", tenant_id).json()["key_id"]

    revoked = cli("key", "revoke", tenant_id, key_id)

    assert revoked.status == 0 and revoked.out.startswith(f"revoked {key_id}")
    [stored] = cli.world.tenants.list_api_keys(tenant_id)
    assert stored.revoked_at is not None
    assert cli("--json", "key", "list", tenant_id).json()[0]["revoked_at"] is not None
    missing = cli("key", "revoke", tenant_id, "key_nope")
    assert missing.status == 2 and "key_nope" in missing.err


# domains


def _publish(cli: Cli, view: dict[str, object], *, skip: str = "") -> None:
    """Publish a domain's records in the fake DNS (all but those of purpose `skip`)."""
    records = [r for r in view["records"] if isinstance(r, dict) and r["purpose"] != skip]  # type: ignore[attr-defined]
    txts: dict[str, list[str]] = {}
    for record in records:
        if record["type"] == "TXT":
            txts.setdefault(record["name"], []).append(record["value"])
        else:
            preference, host = record["value"].split()
            cli.ports.resolver.publish_mx(record["name"], (int(preference), host))
    for name, values in txts.items():
        cli.ports.resolver.publish_txt(name, *values)


def test_domain_add_prints_the_records_to_publish_and_verify_finds_them(cli: Cli) -> None:
    tenant_id = cli.tenant()
    added = cli(
        "domain", "add", tenant_id, "Acme.Example", "--return-path-domain", "bounces.acme.example",
        "--spf", "a:mail.acme.example", "--mx", "mail.acme.example",
    )  # fmt: skip
    assert added.status == 0, added.err
    summary, records = added.out.split("\n\n")
    assert summary.splitlines()[1].split()[:4] == ["acme.example", "pending", "petrel", "bounces.acme.example"]
    assert records.splitlines()[0].split() == ["PURPOSE", "TYPE", "NAME", "VALUE", "REQUIRED", "STATUS", "DETAIL"]
    assert "v=spf1 a:mail.acme.example ~all" in records and "._domainkey.acme.example" in records
    assert "domain verify" in added.err
    view = cli("--json", "domain", "show", tenant_id, "acme.example").json()

    unpublished = cli("domain", "verify", tenant_id, "acme.example")
    assert unpublished.status == 1 and "missing" in unpublished.out

    _publish(cli, view)
    verified = cli("--json", "domain", "verify", tenant_id, "acme.example")
    assert verified.status == 0, verified.out + verified.err
    assert (verified.json()["status"], verified.json()["sending_allowed"]) == ("verified", True)
    [stored] = cli.world.tenants.list_domains(tenant_id)
    assert stored.sendable
    assert all("PRIVATE KEY" not in body.decode() for body in cli.bodies())  # answers aside: never sent


def test_a_domain_belongs_to_one_tenant_and_a_second_add_is_refused(cli: Cli) -> None:
    first, second = cli.tenant(), cli.tenant()
    assert cli("domain", "add", first, "acme.example", "--spf", "a:mail.acme.example").status == 0

    again = cli("domain", "add", first, "acme.example", "--spf", "a:mail.acme.example")
    other = cli("domain", "add", second, "acme.example", "--spf", "a:mail.acme.example")

    assert again.status == 2 and again.out == "" and again.err.count("\n") == 1
    assert other.status == 2 and other.out == "" and other.err.count("\n") == 1
    assert [d.domain for d in cli.world.tenants.list_domains(first)] == ["acme.example"]
    assert cli.world.tenants.list_domains(second) == []


def test_domain_remove_takes_the_domain_and_its_dkim_keys(cli: Cli) -> None:
    tenant_id = cli.tenant()
    assert cli("domain", "add", tenant_id, "acme.example", "--spf", "a:mail.acme.example", "--ed25519").status == 0
    assert len(cli.world.secrets.secrets) == 2  # the RSA and the Ed25519 private keys

    removed = cli("--json", "domain", "remove", tenant_id, "acme.example")

    assert removed.json() == {"domain": "acme.example", "result": "removed"}
    assert cli.world.tenants.list_domains(tenant_id) == [] and cli.world.secrets.secrets == {}
    missing = cli("domain", "show", tenant_id, "acme.example")
    assert missing.status == 2 and missing.err.startswith("petrel: Not found")


def test_domain_rotate_adds_a_next_key_whose_record_is_listed_to_publish(cli: Cli) -> None:
    tenant_id = cli.tenant()
    first = cli("--json", "domain", "add", tenant_id, "acme.example", "--spf", "a:mail.acme.example").json()
    [old] = [r for r in first["records"] if r["purpose"] == "dkim"]

    rotated = cli("--json", "domain", "rotate", tenant_id, "acme.example")

    assert rotated.status == 0, rotated.err
    dkim = [r for r in rotated.json()["records"] if r["purpose"] == "dkim"]
    [new] = [r for r in dkim if r["name"] != old["name"]]
    assert new["name"].endswith("._domainkey.acme.example") and not new["required"]
    assert "publish the new DKIM record" in rotated.err
    assert len(cli.world.secrets.secrets) == 2  # both private keys, in the secret store only


# servers


def test_server_add_reads_the_password_from_stdin_and_never_prints_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = cli.tenant()
    stdin(monkeypatch, "s3cret-pw\n")

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
    [sent] = [body for body in cli.bodies() if b"s3cret-pw" in body]  # in one body only, the add's
    assert json.loads(sent)["password"] == "s3cret-pw"
    assert all(b"s3cret-pw" not in r.url.encode() for r in cli.transport.requests)
    assert all("s3cret-pw" not in v for r in cli.transport.requests for v in r.headers.values())


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
    stdin(monkeypatch, "piped\n", tty=False)

    result = cli("server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay")

    assert result.status == 2 and "--password-env NAME or --password-stdin" in result.err
    assert cli.world.secrets.secrets == {}


def test_set_password_is_tried_first_then_stored(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch, "first")
    tried: list[str] = []

    def check(server: SmtpServer, password: str, mail_from: str, report: object) -> Step | None:
        tried.append(password)
        step = Step("auth", password == "second", "235 ok" if password == "second" else "535 refused")
        report(step)  # type: ignore[operator]
        return None if step.ok else step

    cli.ports.smtp_check = check
    monkeypatch.setenv("MAILU_PASSWORD", "wrong")
    refused = cli("server", "set-password", tenant_id, server.server_id, "--password-env", "MAILU_PASSWORD")
    one_line_refusal(refused, "the new password was not stored")
    assert cli.world.secrets.secrets == {server.secret_name: "first"}  # the good one kept

    monkeypatch.setenv("MAILU_PASSWORD", "second")
    result = cli("server", "set-password", tenant_id, server.server_id, "--password-env", "MAILU_PASSWORD")

    assert (result.status, result.out) == (0, f"{server.server_id}: password updated\n")
    assert cli.world.secrets.secrets == {server.secret_name: "second"} and tried == ["wrong", "second"]
    assert "second" not in result.out + result.err
    monkeypatch.delenv("MAILU_PASSWORD")
    empty = cli("server", "set-password", tenant_id, server.server_id, "--password-env", "MAILU_PASSWORD")
    assert empty.status == 2 and empty.err == "petrel: environment variable MAILU_PASSWORD is empty or not set\n"


def test_set_password_without_verify_stores_it_untried(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch, "first")
    cli.ports.smtp_check = lambda *args: pytest.fail("the password was tried")
    monkeypatch.setenv("MAILU_PASSWORD", "untried")

    result = cli(
        "server", "set-password", tenant_id, server.server_id, "--no-verify", "--password-env", "MAILU_PASSWORD"
    )

    assert result.status == 0 and "not tried" in result.out
    assert cli.world.secrets.secrets == {server.secret_name: "untried"}


def test_set_password_of_a_missing_server_never_asks_for_the_password(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = cli.tenant()
    stdin(monkeypatch, "", tty=True)  # a prompt would fail the test: there is nothing to read

    result = cli("server", "set-password", tenant_id, "srv_nope")

    one_line_refusal(result, "srv_nope")


def test_server_update_pause_and_resume(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch)
    (tmp_path / "tls").mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text(make_tls_files(tmp_path / "tls").ca_pem)

    changed = cli(
        "server", "update", tenant_id, server.server_id, "--weight", "7", "--pool", "bulk", "--ca-file", str(ca)
    )
    paused = cli("--json", "server", "pause", tenant_id, server.server_id)

    assert changed.status == 0 and paused.status == 0, changed.err + paused.err
    assert changed.out.splitlines()[1].split()[5:10] == ["bulk", "7", "yes", "own", "no"]
    assert paused.json()["enabled"] is False
    [stored] = cli.world.tenants.list_servers(tenant_id)
    assert (stored.weight, stored.pool, stored.enabled, stored.ca_bundle) == (7, "bulk", False, ca.read_text())
    assert cli("server", "resume", tenant_id, server.server_id).status == 0
    assert cli("server", "update", tenant_id, server.server_id, "--system-ca").status == 0
    [stored] = cli.world.tenants.list_servers(tenant_id)
    assert (stored.enabled, stored.ca_bundle) == (True, None)
    one_line_refusal(cli("server", "update", tenant_id, server.server_id), "nothing to change")


def test_server_test_prints_each_step_and_its_status_is_the_verdict(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    assert cli("domain", "add", tenant_id, "acme.example", "--spf", "a:mail.acme.example").status == 0
    server = _server(cli, tenant_id, monkeypatch)

    passed = cli("server", "test", tenant_id, server.server_id)

    assert passed.status == 0, passed.err
    lines = passed.out.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["connect", "auth"]
    assert "bounces+" in lines[2] and "@acme.example" in lines[2]
    assert lines[-1] == f"OK: {server.server_id} (mail.acme.example:587) accepts mail from the tenant"

    def refuse(server: SmtpServer, password: str, mail_from: str, report: object) -> Step | None:
        step = Step("auth", False, "535 5.7.8 authentication failed")
        report(step)  # type: ignore[operator]
        return step

    cli.ports.smtp_check = refuse
    failed = cli("--json", "server", "test", tenant_id, server.server_id)
    assert failed.status == 1
    assert failed.json() == {
        "server_id": server.server_id,
        "ok": False,
        "steps": [{"name": "auth", "ok": False, "detail": "535 5.7.8 authentication failed"}],
    }


def test_server_remove_deletes_the_server_and_its_secret(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch)

    assert cli("--json", "server", "remove", tenant_id, server.server_id).json() == {
        "server_id": server.server_id,
        "result": "removed",
    }
    assert cli.world.tenants.list_servers(tenant_id) == [] and cli.world.secrets.secrets == {}
    again = cli("server", "remove", tenant_id, server.server_id)
    one_line_refusal(again, server.server_id)


# the signature


def test_a_request_signed_with_another_secret_is_refused_and_changes_nothing(cli: Cli) -> None:
    cli.secret_key = "not-the-local-secret"

    result = cli("tenant", "create", "Acme")

    one_line_refusal(result, "Missing or invalid AWS signature: the signature does not match the request")
    assert cli.world.tenants.list_tenants() == []


# API plans, sending rates and traffic shaping (issue 11)


def test_tenant_create_and_update_take_the_api_plan_and_the_send_rate(cli: Cli) -> None:
    tenant_id = cli.tenant("--api-plan", "bulk", "--send-rate", "12.5")
    stored = cli.world.tenants.get_tenant(tenant_id)
    assert stored is not None and (stored.api_plan, stored.send_rate_per_second) == ("bulk", 12.5)
    plans = cli.ports.usage_plans
    [key] = plans.keys
    assert plans.plans_of(key) == {"petrel-test-plan-bulk"}  # enrolled on creation

    shown = cli("--json", "tenant", "update", tenant_id, "--api-plan", "standard", "--send-rate", "none")
    assert shown.status == 0, shown.err
    assert (shown.json()["api_plan"], shown.json()["send_rate_per_second"]) == ("standard", None)
    assert plans.plans_of(key) == {"petrel-test-plan-standard"}  # moved
    one_line_refusal(cli("tenant", "update", tenant_id, "--api-plan", "gold"), "unknown API plan 'gold'")
    with pytest.raises(SystemExit):  # a usage error
        cli("tenant", "update", tenant_id, "--send-rate", "0")


def test_tenant_enroll_all_enrolls_every_tenant_and_one_tenant_alone(cli: Cli) -> None:
    from petrel.models.records import Tenant

    world = cli.world
    for tenant_id in ("tn_old1", "tn_old2"):
        world.tenants.put_tenant(Tenant(tenant_id=tenant_id, name=tenant_id, created_at=world.clock.now()))
    result = cli("--json", "tenant", "enroll", "--all")
    assert result.status == 0, result.err
    assert [(e["tenant_id"], e["enrolled"]) for e in result.json()] == [("tn_old1", True), ("tn_old2", True)]
    assert len(cli.ports.usage_plans.plans["petrel-test-plan-standard"]) == 2
    one = cli("--json", "tenant", "enroll", "tn_old1")
    assert one.status == 0 and one.json() == {"tenant_id": "tn_old1", "api_plan": "standard", "enrolled": True}
    with pytest.raises(SystemExit):  # a tenant or --all
        cli("tenant", "enroll")


def test_server_add_and_update_take_the_shaping_flags(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    stdin(monkeypatch, "pw\n")
    added = cli(
        "--json", "server", "add", tenant_id, "--host", "mail.acme.example", "--username", "relay",
        "--password-stdin", "--rate", "7.5", "--burst", "15", "--warmup", "1:1000,0:500",
        "--bounce-threshold", "0.05", "--probation-minutes", "30",
    )  # fmt: skip
    assert added.status == 0, added.err
    [server] = cli.world.tenants.list_servers(tenant_id)
    shaping = server.shaping
    assert (shaping.rate_per_second, shaping.burst, shaping.bounce_threshold, shaping.probation_minutes) == (
        7.5,
        15,
        0.05,
        30,
    )
    assert [(s.day, s.daily_cap) for s in shaping.warmup] == [(0, 500), (1, 1000)]
    assert added.json()["shaping"]["warmup"] == [{"day": 0, "daily_cap": 500}, {"day": 1, "daily_cap": 1000}]

    changed = cli(
        "server", "update", tenant_id, server.server_id, "--no-warmup", "--concurrency", "8",
        "--provider-rate", "2", "--provider-burst", "4", "--bounce-window", "500", "--bounce-min-sends", "100",
        "--failure-threshold", "3",
    )  # fmt: skip
    assert changed.status == 0, changed.err
    assert "7.5/s burst 15" in changed.out and "none" in changed.out
    [stored] = cli.world.tenants.list_servers(tenant_id)
    after = stored.shaping
    assert after.warmup == () and after.rate_per_second == 7.5  # kept
    assert (after.concurrency, after.provider_rate_per_second, after.provider_burst) == (8, 2.0, 4)
    assert (after.bounce_window, after.bounce_min_sends, after.failure_threshold) == (500, 100, 3)


@pytest.mark.parametrize("options", [["--warmup", "0-500"], ["--warmup", "0:500", "--no-warmup"], ["--rate", "x"]])
def test_a_malformed_shaping_flag_is_a_usage_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, options: list[str]
) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch)
    with pytest.raises(SystemExit):
        cli("server", "update", tenant_id, server.server_id, *options)
    assert cli.world.tenants.list_servers(tenant_id) == [server]


@pytest.mark.parametrize("options", [["--concurrency", "99"], ["--bounce-window", "20", "--bounce-min-sends", "50"]])
def test_a_shaping_out_of_bounds_is_refused_and_changes_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, options: list[str]
) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch)
    result = cli("server", "update", tenant_id, server.server_id, *options)
    assert result.status == 2 and result.out == "", result
    assert cli.world.tenants.list_servers(tenant_id) == [server]


def test_server_resume_ends_an_automatic_pause_and_shows_its_event(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    server = _server(cli, tenant_id, monkeypatch)
    now = cli.world.clock.now()
    cli.world.tenants.put_server(server.model_copy(update={"paused_at": now, "paused_reason": "5 connection failures"}))
    listed = cli("server", "list", tenant_id)
    assert listed.out.splitlines()[1].split()[-1] == "yes"  # PAUSED
    resumed = cli("--json", "server", "resume", tenant_id, server.server_id)
    assert resumed.status == 0, resumed.err
    view = resumed.json()
    assert view["paused"] == "no" and "server.resumed" in view["last_events"]
    assert view["events"][-1]["type"] == "server.resumed" and view["paused_at"] is None
    [stored] = cli.world.tenants.list_servers(tenant_id)
    assert not stored.paused and stored.events[-1].type == "server.resumed"


def test_enroll_all_goes_on_past_a_tenant_it_cannot_enroll_and_says_so(cli: Cli) -> None:
    from petrel.models.records import Tenant

    world = cli.world
    for tenant_id, plan in (("tn_a", "standard"), ("tn_b", "retired-plan"), ("tn_c", "bulk")):
        world.tenants.put_tenant(
            Tenant(tenant_id=tenant_id, name=tenant_id, created_at=world.clock.now(), api_plan=plan)
        )
    result = cli("--json", "tenant", "enroll", "--all")
    assert result.status == 1
    assert [(e["tenant_id"], e["enrolled"]) for e in result.json()] == [("tn_a", True), ("tn_b", False), ("tn_c", True)]
    assert "tn_b" in result.err and "retired-plan" in result.err
    plans = cli.ports.usage_plans.plans
    assert (len(plans["petrel-test-plan-standard"]), len(plans["petrel-test-plan-bulk"])) == (1, 1)
