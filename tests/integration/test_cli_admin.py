"""`petrel` end to end against a moto server laid out as `make run` leaves it (.petrel/local.json): every
command a SigV4-signed request through the local front to the real admin function and its adapters, and
`petrel server test` (run by the admin function) against scripted submission servers (aiosmtpd). No fakes."""

from __future__ import annotations

import io
import json
import socket
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli.main import main
from cli.target import LOCAL_DOWN
from local.knot import KnotServer
from local.provision import LocalResources, provision
from local.tls import TlsFiles
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.cli_stack import admin_front
from tests.integration.smtp_server import PASSWORD, USERNAME, RunningServer
from tests.support_dns import unique_zone

pytestmark = pytest.mark.integration

PREFIX = "petrel-clitest"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    workdir: Path
    session: boto3.session.Session
    endpoint: str
    ca_file: Path
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def relay(self, server: RunningServer, password: str = PASSWORD) -> None:
        """local.json's relay account: the scripted server, as the local stack writes the stand-in's."""
        state = json.loads((self.workdir / "local.json").read_text())
        port = "submission_port" if server.security == "starttls" else "smtps_port"
        state["relay"] = {
            "host": server.host,
            port: server.port,
            "security": server.security,
            "username": USERNAME,
            "password": password,
            "ca_file": str(self.ca_file),
        }
        (self.workdir / "local.json").write_text(json.dumps(state))

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(["--workdir", str(self.workdir), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err

    def json(self, *argv: str) -> Any:
        status, out, err = self("--json", *argv)
        assert status == 0, err
        return json.loads(out)

    def secret(self, name: str) -> str:
        client = self.session.client("secretsmanager", endpoint_url=self.endpoint)
        return str(client.get_secret_value(SecretId=name)["SecretString"])


@dataclass(frozen=True)
class Moto:
    endpoint: str
    session: boto3.session.Session
    aws: dict[str, Any]  # local.json's `aws` section
    api_url: str  # the local front, serving the admin API
    made: LocalResources


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    """One moto server and the front of the admin API for the module (each test makes tenants of its own,
    with new ids, and domains of its own: a domain belongs to one tenant)."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_aws_environment(monkeypatch)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        try:
            session = boto3.session.Session(
                region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local"
            )
            clients = {
                name: session.client(name, endpoint_url=endpoint)
                for name in ("dynamodb", "sqs", "s3", "scheduler", "iam")
            }
            made = provision(
                clients["dynamodb"],
                clients["sqs"],
                clients["s3"],
                prefix=PREFIX,
                visibility_timeout=30,
                max_receive_count=3,
                scheduler=clients["scheduler"],
                iam=clients["iam"],
            )
            aws = {
                "endpoint_url": endpoint,
                "region": REGION,
                "prefix": PREFIX,
                "tables": made.tables,
                "secrets_prefix": made.secrets_prefix,
            }
            with admin_front(made, session, endpoint, REGION) as api_url:
                yield Moto(endpoint, session, aws, api_url, made)
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
            server.stop()


@pytest.fixture
def stack(
    moto: Moto,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> Stack:
    clean_aws_environment(monkeypatch)
    (tmp_path / "local.json").write_text(json.dumps({"aws": moto.aws, "api_url": moto.api_url}))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(tls_files.ca_pem)
    return Stack(tmp_path, moto.session, moto.endpoint, ca_file, capsys, monkeypatch)


def _tenant_with_domain(stack: Stack) -> tuple[str, str]:
    """A new tenant and its new domain (`acme-<hex>.example`, return path `bounces.` of it)."""
    tenant_id: str = stack.json("tenant", "create", "Acme", "--max-age-hours", "12")["tenant_id"]
    domain = f"acme-{uuid.uuid4().hex[:10]}.example"
    stack.json(
        "domain", "add", tenant_id, domain, "--return-path-domain", f"bounces.{domain}", "--spf", "ip4:127.0.0.1",
    )  # fmt: skip
    return tenant_id, domain


def test_a_tenant_is_set_up_and_its_server_checked_without_sending_mail(
    stack: Stack, submission_server: RunningServer
) -> None:
    stack.relay(submission_server)
    tenant_id, domain = _tenant_with_domain(stack)

    listed = {tenant["tenant_id"]: tenant for tenant in stack.json("tenant", "list")}
    assert (listed[tenant_id]["max_age_hours"], listed[tenant_id]["status"]) == (12, "active")
    status, _, err = stack("domain", "add", tenant_id, domain, "--spf", "ip4:127.0.0.1")
    assert status == 2 and "petrel: Conflict: " in err and domain in err
    server = stack.json("server", "add", tenant_id, "--local-relay")
    assert (server["host"], server["port"], server["security"]) == ("127.0.0.1", submission_server.port, "starttls")
    assert stack.secret(f"{PREFIX}/tenants/{tenant_id}/smtp/{server['server_id']}") == PASSWORD
    key = stack.json("key", "create", tenant_id, "--name", "first")
    assert key["api_key"].startswith("ptl_")

    status, out, err = stack("server", "test", tenant_id, server["server_id"])

    assert status == 0, out + err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["connect", "ok"],
        ["starttls", "ok"],
        ["auth", "ok"],
        ["mail", "from"],
        ["rset/quit", "ok"],
    ]
    assert "certificate verified" in lines[1]
    assert f"<bounces+petrel-server-test@bounces.{domain}>: 250" in lines[3]
    assert lines[-1] == f"OK: {server['server_id']} (127.0.0.1:{submission_server.port}) accepts mail from the tenant"
    assert submission_server.handler.received == []  # nothing was sent
    assert submission_server.handler.logins == [("PLAIN", True)]
    assert PASSWORD not in out + err


def test_a_wrong_password_fails_the_check_at_auth_with_exit_status_1(
    stack: Stack, submission_server: RunningServer
) -> None:
    stack.relay(submission_server)
    tenant_id, _ = _tenant_with_domain(stack)
    server_id = stack.json("server", "add", tenant_id, "--local-relay")["server_id"]
    status, _, _ = stack(
        "server", "set-password", tenant_id, server_id, "--no-verify", "--password-stdin", stdin="wrong\n"
    )  # fmt: skip
    assert status == 0

    status, out, err = stack("server", "test", tenant_id, server_id)

    assert status == 1
    *_, auth, result = out.splitlines()
    assert auth.split()[:2] == ["auth", "FAILED"] and "535" in auth
    assert result.startswith(f"{server_id} (127.0.0.1:{submission_server.port}) FAILED at auth: as {USERNAME}: 535")
    assert "wrong" not in out + err


def test_implicit_tls_is_checked_too(stack: Stack, smtp_servers: Callable[..., RunningServer]) -> None:
    server = smtp_servers("tls")
    stack.relay(server)
    tenant_id, _ = _tenant_with_domain(stack)
    added = stack.json("server", "add", tenant_id, "--local-relay")
    assert (added["port"], added["security"]) == (server.port, "tls")

    report = stack.json("server", "test", tenant_id, added["server_id"])

    assert report["ok"] is True
    assert [step["name"] for step in report["steps"]] == ["connect", "tls", "auth", "mail from", "rset/quit"]


def test_an_untrusted_certificate_fails_at_starttls(stack: Stack, submission_server: RunningServer) -> None:
    tenant_id, _ = _tenant_with_domain(stack)
    stack.monkeypatch.setenv("RELAY_PASSWORD", PASSWORD)
    server_id = stack.json(
        "server", "add", tenant_id, "--host", "127.0.0.1", "--port", str(submission_server.port),
        "--username", USERNAME, "--password-env", "RELAY_PASSWORD",
    )["server_id"]  # fmt: skip

    status, out, _ = stack("server", "test", tenant_id, server_id)

    assert status == 1
    assert "FAILED at starttls: TLS certificate not trusted" in out.splitlines()[-1]
    assert submission_server.handler.logins == []  # the password never left


def test_a_stopped_local_stack_is_named_as_such(stack: Stack) -> None:
    state = json.loads((stack.workdir / "local.json").read_text())
    state["api_url"] = f"http://127.0.0.1:{_free_port()}"
    (stack.workdir / "local.json").write_text(json.dumps(state))

    assert stack("tenant", "list") == (2, "", f"petrel: {LOCAL_DOWN}\n")


def test_a_password_rotation_stores_only_a_password_the_server_takes(
    stack: Stack, submission_server: RunningServer
) -> None:
    stack.relay(submission_server)
    tenant_id, _ = _tenant_with_domain(stack)
    server_id = stack.json("server", "add", tenant_id, "--local-relay")["server_id"]
    secret = f"{PREFIX}/tenants/{tenant_id}/smtp/{server_id}"
    logins = submission_server.handler.logins
    before = len(logins)

    status, out, err = stack("server", "set-password", tenant_id, server_id, "--password-stdin", stdin="wrong-pw\n")

    assert (status, out) == (2, "") and err.count("\n") == 1
    assert "the new password was not stored" in err and "535" in err and "wrong-pw" not in err
    assert stack.secret(secret) == PASSWORD  # the good one kept: mail keeps going out
    assert logins[before:] and not any(ok for _, ok in logins[before:])  # tried, refused
    before = len(logins)

    status, out, err = stack("server", "set-password", tenant_id, server_id, "--password-stdin", stdin=f"{PASSWORD}\n")

    assert (status, out) == (0, f"{server_id}: password updated\n"), err
    assert stack.secret(secret) == PASSWORD
    assert logins[before:] == [("PLAIN", True)]
    assert submission_server.handler.received == []  # tried, nothing sent


@pytest.fixture(scope="module")
def verifying_api(moto: Moto, dns_server: KnotServer) -> Iterator[str]:
    """A second front whose admin function asks the real Knot server (as `make run` sets it up)."""
    resolvers = f"{dns_server.host}:{dns_server.port}"
    with admin_front(moto.made, moto.session, moto.endpoint, REGION, dns_resolvers=resolvers) as url:
        yield url


def test_a_domain_is_verified_once_its_records_are_in_dns(
    stack: Stack, verifying_api: str, dns_server: KnotServer
) -> None:
    state = json.loads((stack.workdir / "local.json").read_text())
    (stack.workdir / "local.json").write_text(json.dumps({**state, "api_url": verifying_api}))
    tenant_id: str = stack.json("tenant", "create", "Acme")["tenant_id"]
    domain = unique_zone("cli")
    dns_server.add_zone(domain)
    added = stack.json("domain", "add", tenant_id, domain, "--spf", "ip4:127.0.0.1", "--mx", f"mx.{domain}")
    assert added["status"] == "pending" and added["sending_allowed"] is False

    status, out, _ = stack("domain", "verify", tenant_id, domain)
    assert status == 1 and " missing " in out  # nothing published yet

    published: dict[tuple[str, str], list[str]] = {}
    for record in added["records"]:
        published.setdefault((record["name"], record["type"]), []).append(record["value"])
    for (name, rtype), values in published.items():
        dns_server.publish(name, rtype, values)
    status, out, err = stack("--json", "domain", "verify", tenant_id, domain)

    assert status == 0, out + err
    view = json.loads(out)
    assert (view["status"], view["sending_allowed"]) == ("verified", True)
    assert {record["status"] for record in view["records"] if record["required"]} == {"verified"}
    [listed] = stack.json("domain", "list", tenant_id)
    assert (listed["domain"], listed["status"]) == (domain, "verified")


def test_a_domain_update_stops_mail_until_its_new_records_are_verified(
    stack: Stack, verifying_api: str, dns_server: KnotServer
) -> None:
    """On DynamoDB (moto) and Knot: a new return path is pending until DNS has its records."""
    state = json.loads((stack.workdir / "local.json").read_text())
    (stack.workdir / "local.json").write_text(json.dumps({**state, "api_url": verifying_api}))
    tenant_id: str = stack.json("tenant", "create", "Acme")["tenant_id"]
    domain = unique_zone("upd")
    dns_server.add_zone(domain)

    def publish(view: dict[str, Any]) -> None:
        published: dict[tuple[str, str], list[str]] = {}
        for record in view["records"]:
            published.setdefault((record["name"], record["type"]), []).append(record["value"])
        for (name, rtype), values in published.items():
            dns_server.publish(name, rtype, values)

    publish(stack.json("domain", "add", tenant_id, domain, "--spf", "ip4:127.0.0.1", "--mx", f"mx.{domain}"))
    assert stack.json("domain", "verify", tenant_id, domain)["status"] == "verified"

    changed = stack.json("domain", "update", tenant_id, domain, "--return-path-domain", f"bounces.{domain}")
    assert (changed["status"], changed["sending_allowed"]) == ("pending", False)
    assert {r["status"] for r in changed["records"] if r["name"] == f"bounces.{domain}"} == {"pending"}
    status, out, _ = stack("domain", "verify", tenant_id, domain)
    assert status == 1 and " missing " in out  # the new return path's SPF is not published yet

    publish(changed)
    status, out, err = stack("--json", "domain", "verify", tenant_id, domain)
    assert status == 0, out + err
    view = json.loads(out)
    assert (view["status"], view["return_path_domain"]) == ("verified", f"bounces.{domain}")
    assert [e["type"] for e in view["events"]] == ["domain.verified", "domain.dns_error", "domain.verified"]


def test_migrate_listing_lists_the_messages_stored_before_by_tenant_v3_once(stack: Stack, moto: Moto) -> None:
    """A message item as the release before stored it (listing keys `tenant_id`, `created_key`): not
    in GET /v1/emails' index until `petrel migrate listing` gives it its keys; a second run lists none."""
    from petrel import resources

    tenant_id = f"tn_{uuid.uuid4().hex[:26].upper()}"
    db = moto.session.client("dynamodb", endpoint_url=moto.endpoint)
    table = moto.aws["tables"][resources.MESSAGES.name]
    email_id, message_id = "em_01KB00000000000000000M0000", "msg_01KB00000000000000000M0001"
    pk = resources.email_pk(tenant_id, email_id)
    db.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "EMAIL"}, "expires_at": {"N": "1900000000"}})
    db.put_item(
        TableName=table,
        Item={
            "pk": {"S": pk},
            "sk": {"S": resources.message_sk(message_id)},
            "tenant_id": {"S": tenant_id},
            "created_key": {"S": f"2026-11-30T10:00:00.250000+00:00#{message_id}"},
            "status": {"S": "relayed"},
        },
    )

    def listed() -> list[dict[str, Any]]:
        index = resources.BY_TENANT
        page = db.query(
            TableName=table,
            IndexName=index.name,
            KeyConditionExpression="#t = :t",
            ExpressionAttributeNames={"#t": index.partition_key.name},
            ExpressionAttributeValues={":t": {"S": tenant_id}},
        )
        return list(page["Items"])

    assert listed() == []
    assert stack("migrate", "listing") == (0, "listed 1 message(s)\n", "")
    [entry] = listed()
    assert entry["sk"]["S"] == resources.message_sk(message_id)
    assert entry[resources.LISTED_AT]["N"] == "1796032800.250000"
    assert stack.json("migrate", "listing") == {"listed": 0}
