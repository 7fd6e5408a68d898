"""`petrel mailbox ...` end to end: every command a SigV4-signed request through the local front to the
real admin function and its adapters, on a moto server laid out as `make run` leaves it
(.petrel/local.json), and `mailbox test` (run by the admin function) against the real Dovecot of the
MailU stand-in (local/mailu)."""

from __future__ import annotations

import imaplib
import io
import json
import re
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli.main import main
from local.mailu import MailuStandIn
from local.provision import provision
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.cli_stack import admin_front
from tests.integration.standin import running_standin

pytestmark = pytest.mark.integration

PREFIX = "petrel-clibox"
DOMAIN = "petrel.test"
INBOX = f"inbox@{DOMAIN}"
INBOX_PASSWORD = "inbox-imap-pw-1"
REPORTS = f"reports@{DOMAIN}"
REPORTS_PASSWORD = "reports-imap-pw-2"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    """The stand-in with two accounts: INBOX (two messages) and REPORTS (INBOX and an empty `Reports`)."""
    with running_standin("petrel-clibox-", {INBOX: INBOX_PASSWORD, REPORTS: REPORTS_PASSWORD}) as standin:
        with _imap(standin, INBOX, INBOX_PASSWORD) as imap:
            for n in range(2):
                imap.append("INBOX", "", None, _message(f"hello {n}"))
        with _imap(standin, REPORTS, REPORTS_PASSWORD) as imap:
            imap.create("Reports")
        yield standin


def _imap(mailu: MailuStandIn, user: str, password: str) -> imaplib.IMAP4_SSL:
    """The test's own look at the mailbox (setup and checks), apart from the code under test."""
    imap = imaplib.IMAP4_SSL(mailu.host, mailu.imaps_port, ssl_context=mailu.ssl_context(), timeout=15)
    imap.login(user, password)
    return imap


def _message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"someone@{DOMAIN}", INBOX, subject
    msg.set_content("for the mailbox check\n")
    return msg.as_bytes()


def _flags(mailu: MailuStandIn) -> list[bytes]:
    with _imap(mailu, INBOX, INBOX_PASSWORD) as imap:
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1:*", "(UID FLAGS)")
        return [item for item in data if isinstance(item, bytes)]


@dataclass
class Stack:
    workdir: Path
    session: boto3.session.Session
    endpoint: str
    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        status = main(["--workdir", str(self.workdir), *argv])
        out, err = self.capsys.readouterr()
        return status, out, err

    def json(self, *argv: str, stdin: str = "") -> Any:
        status, out, err = self("--json", *argv, stdin=stdin)
        assert status == 0, err
        return json.loads(out)

    def secret(self, name: str) -> str | None:
        """The secret's value; None when there is none, or it is deleted (awaiting its purge)."""
        client = self.session.client("secretsmanager", endpoint_url=self.endpoint)
        try:
            return str(client.get_secret_value(SecretId=name)["SecretString"])
        except (client.exceptions.ResourceNotFoundException, client.exceptions.InvalidRequestException):
            return None

    def tenant(self) -> str:
        """A new tenant whose bounces come back to DOMAIN (the stand-in's mailboxes); its sending domain
        is its own (a domain belongs to one tenant)."""
        tenant_id: str = self.json("tenant", "create", "Acme")["tenant_id"]
        domain = f"acme-{uuid.uuid4().hex[:10]}.example"
        self.json("domain", "add", tenant_id, domain, "--return-path-domain", DOMAIN, "--spf", "ip4:127.0.0.1")
        return tenant_id


@dataclass(frozen=True)
class Moto:
    endpoint: str
    session: boto3.session.Session
    aws: dict[str, Any]  # local.json's `aws` section
    api_url: str  # the local front, serving the admin API


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
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
                clients["dynamodb"], clients["sqs"], clients["s3"], prefix=PREFIX, visibility_timeout=30,
                max_receive_count=3, scheduler=clients["scheduler"], iam=clients["iam"],
            )  # fmt: skip
            aws = {
                "endpoint_url": endpoint,
                "region": REGION,
                "prefix": PREFIX,
                "tables": made.tables,
                "secrets_prefix": made.secrets_prefix,
            }
            with admin_front(made, session, endpoint, REGION) as api_url:
                yield Moto(endpoint, session, aws, api_url)
        finally:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
            server.stop()


@pytest.fixture
def stack(
    moto: Moto, mailu: MailuStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Stack:
    """local.json as `make run` writes it: the AWS names and the stand-in's test mailbox (IMAPS)."""
    clean_aws_environment(monkeypatch)
    test_mailbox = {
        "address": INBOX,
        "imap_host": mailu.host,
        "imap_port": mailu.imaps_port,
        "imap_security": "tls",
        "username": INBOX,
        "password": INBOX_PASSWORD,
        "ca_file": str(mailu.ca_file),
    }
    state = {"aws": moto.aws, "api_url": moto.api_url, "test_mailbox": test_mailbox}
    (tmp_path / "local.json").write_text(json.dumps(state))
    return Stack(tmp_path, moto.session, moto.endpoint, capsys, monkeypatch)


def test_a_local_mailbox_is_added_listed_and_checked_without_changing_anything(
    stack: Stack, mailu: MailuStandIn
) -> None:
    tenant_id = stack.tenant()
    mailbox = stack.json("mailbox", "add", tenant_id, "--local")
    mailbox_id = mailbox["mailbox_id"]
    assert (mailbox["address"], mailbox["port"], mailbox["security"]) == (INBOX, mailu.imaps_port, "tls")
    assert stack.secret(f"{PREFIX}/tenants/{tenant_id}/imap/{mailbox_id}") == INBOX_PASSWORD
    flags_before = _flags(mailu)

    status, out, err = stack("mailbox", "test", tenant_id, mailbox_id)

    assert status == 0, out + err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["connect", "ok"], ["tls", "ok"], ["login", "ok"], ["select", "ok"],
    ]  # fmt: skip
    assert re.search(r"INBOX: UIDVALIDITY [1-9]\d*, 2 messages$", lines[3]), lines[3]
    assert lines[-1] == f"OK: {mailbox_id} ({mailu.host}:{mailu.imaps_port}) can be read (INBOX)"
    assert INBOX_PASSWORD not in out + err
    assert _flags(mailu) == flags_before and all(b"\\Seen" not in item for item in flags_before)  # read nothing

    [listed] = stack.json("mailbox", "list", tenant_id)
    assert (listed["mailbox_id"], listed["health"], listed["cursors"]) == (mailbox_id, None, [{"folder": "INBOX"}])
    assert "secret_name" not in listed


def test_a_wrong_password_fails_at_login_in_one_line_with_exit_status_1(stack: Stack, mailu: MailuStandIn) -> None:
    tenant_id = stack.tenant()
    mailbox_id = stack.json("mailbox", "add", tenant_id, "--local")["mailbox_id"]
    status, _, _ = stack("mailbox", "set-password", tenant_id, mailbox_id, "--password-stdin", stdin="wrong-pw\n")
    assert status == 0

    status, out, err = stack("mailbox", "test", tenant_id, mailbox_id)

    assert status == 1 and err == ""
    *opened, login, result = out.splitlines()
    assert [line.split()[:2] for line in opened] == [["connect", "ok"], ["tls", "ok"]]
    assert login.split()[:2] == ["login", "FAILED"] and f"as {INBOX}: login refused" in login
    assert result.startswith(f"{mailbox_id} ({mailu.host}:{mailu.imaps_port}) FAILED at login: as {INBOX}: ")
    assert "wrong-pw" not in out + err


def test_starttls_and_several_folders_with_a_missing_one(stack: Stack, mailu: MailuStandIn) -> None:
    tenant_id = stack.tenant()
    stack.monkeypatch.setenv("REPORTS_PW", REPORTS_PASSWORD)
    added = stack.json(
        "mailbox", "add", tenant_id, "--address", REPORTS, "--host", mailu.host, "--port", str(mailu.imap_port),
        "--security", "starttls", "--ca-file", str(mailu.ca_file), "--folder", "INBOX", "--folder", "Reports",
        "--folder", "Nowhere", "--password-env", "REPORTS_PW",
    )  # fmt: skip

    status, out, _ = stack("--json", "mailbox", "test", tenant_id, added["mailbox_id"])

    assert status == 1
    shown = json.loads(out)
    assert shown["ok"] is False
    steps = [(step["name"], step["ok"]) for step in shown["steps"]]
    assert steps == [
        ("connect", True), ("tls", True), ("login", True), ("select", True), ("select", True), ("select", False),
    ]  # fmt: skip
    assert shown["steps"][1]["detail"].startswith("STARTTLS")
    assert re.fullmatch(r"INBOX: UIDVALIDITY \d+, 0 messages", shown["steps"][3]["detail"])
    assert re.fullmatch(r"Reports: UIDVALIDITY \d+, 0 messages", shown["steps"][4]["detail"])
    assert shown["steps"][5]["detail"].startswith("Nowhere: ")


def test_a_certificate_not_trusted_fails_at_tls(stack: Stack, mailu: MailuStandIn) -> None:
    tenant_id = stack.tenant()
    stack.monkeypatch.setenv("INBOX_PW", INBOX_PASSWORD)
    mailbox_id = stack.json(
        "mailbox", "add", tenant_id, "--address", INBOX, "--host", mailu.host, "--port", str(mailu.imaps_port),
        "--password-env", "INBOX_PW",
    )["mailbox_id"]  # fmt: skip

    status, out, _ = stack("mailbox", "test", tenant_id, mailbox_id)

    assert status == 1
    assert "FAILED at tls: TLS certificate not trusted" in out.splitlines()[-1]


def test_set_and_remove_reach_dynamodb_and_secrets_manager(stack: Stack) -> None:
    tenant_id = stack.tenant()
    mailbox_id = stack.json("mailbox", "add", tenant_id, "--local")["mailbox_id"]
    secret = f"{PREFIX}/tenants/{tenant_id}/imap/{mailbox_id}"

    changed = stack.json(
        "mailbox", "set", tenant_id, mailbox_id, "--after", "move", "--move-to", "Done", "--disable"
    )  # fmt: skip
    assert (changed["after"], changed["move_to"], changed["enabled"]) == ("move", "Done", False)
    [listed] = stack.json("mailbox", "list", tenant_id)
    assert (listed["after"], listed["move_to"], listed["enabled"]) == ("move", "Done", False)
    status, _, err = stack("mailbox", "add", tenant_id, "--local")
    assert status == 2 and f"already has a mailbox for {INBOX} ({mailbox_id})" in err

    assert stack.json("mailbox", "remove", tenant_id, mailbox_id) == {"mailbox_id": mailbox_id, "result": "removed"}

    assert stack.json("mailbox", "list", tenant_id) == [] and stack.secret(secret) is None
    status, _, err = stack("mailbox", "remove", tenant_id, mailbox_id)
    assert (status, err) == (2, f"petrel: Not found: no mailbox '{mailbox_id}' for tenant '{tenant_id}'\n")
