"""`petrel mailbox ...` through the admin API (in process, signed) and petrel.services.mailboxes on the
in-memory fakes: what an operator sees, what is stored, and what never is (the password, anywhere but
its secret and the body of the one signed request that carries it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.imap_check import check_mailbox
from cli.main import parser
from cli.smtp_check import Step
from local.tls import make_tls_files
from petrel.errors import ConfigurationError
from petrel.models.records import FolderCursor, Mailbox, MailboxHealth
from petrel.ports import FetchedMessage, MailboxError, RecordNotFound
from petrel.services import mailboxes as service
from petrel.services.mailboxes import MailboxDeps
from tests.fakes.clock import DEFAULT_START
from tests.fakes.mailboxes import FakeMailboxStore
from tests.fakes.world import FakeWorld
from tests.unit.cli_fakes import Cli as AdminCli
from tests.unit.cli_fakes import one_line_refusal, stdin

PASSWORD = "imap-s3cret-pw"
ADD_HEADER = ["MAILBOX_ID", "ADDRESS", "HOST", "PORT", "SECURITY", "USERNAME", "FOLDERS", "AFTER", "ENABLED", "CA"]
LIST_HEADER = (
    "MAILBOX_ID  ADDRESS  HOST  PORT  SECURITY  AFTER  ENABLED  FOLDERS  POLLED_AT  LAST_SUCCESS_AT  ERROR_AT  ERROR"
)


class Crash(Exception):
    """The process dying at a chosen step."""


class CrashingMailboxStore(FakeMailboxStore):
    """A store whose creates and deletes fail the next `crashes` times, then work."""

    def __init__(self) -> None:
        super().__init__()
        self.create_crashes = 0
        self.delete_crashes = 0

    def create_mailbox(self, mailbox: Mailbox) -> None:
        if self.create_crashes:
            self.create_crashes -= 1
            raise Crash("killed before the mailbox was written")
        super().create_mailbox(mailbox)

    def delete_mailbox(self, tenant_id: str, mailbox_id: str) -> None:
        if self.delete_crashes:
            self.delete_crashes -= 1
            raise Crash("killed before the mailbox was deleted")
        super().delete_mailbox(tenant_id, mailbox_id)


class Cli(AdminCli):
    """`petrel mailbox ...` through the admin API on the fakes, with a tenant that has a domain."""

    @property
    def store(self) -> CrashingMailboxStore:
        assert isinstance(self.world.mailboxes, CrashingMailboxStore)
        return self.world.mailboxes

    @property
    def deps(self) -> MailboxDeps:
        return self.ports.mailbox_admin

    def passwords(self) -> dict[str, str]:
        """The stored secrets but the domains' DKIM keys: the mailboxes' passwords."""
        return {name: value for name, value in self.world.secrets.secrets.items() if "/dkim/" not in name}

    def tenant(self, domain: str = "acme.example", return_path: str = "bounces.acme.example") -> str:  # type: ignore[override]
        tenant_id = super().tenant()
        added = self(
            "domain", "add", tenant_id, domain, "--return-path-domain", return_path, "--spf", f"a:mail.{domain}"
        )
        assert added.status == 0, added.err
        return tenant_id

    def add(self, tenant_id: str, *options: str, address: str = "bounces@bounces.acme.example") -> Mailbox:
        result = self(
            "--json", "mailbox", "add", tenant_id, "--address", address, "--host", "mail.acme.example",
            "--password-env", "IMAP_PW", *options,
        )  # fmt: skip
        assert result.status == 0, result.err
        mailbox = self.world.mailboxes.get_mailbox(tenant_id, result.json()["mailbox_id"])
        assert mailbox is not None
        return mailbox


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("IMAP_PW", PASSWORD)
    _stdin(monkeypatch, "")
    return Cli(FakeWorld(mailboxes=CrashingMailboxStore()), tmp_path)


_stdin = stdin
_one_line_refusal = one_line_refusal


# add


def test_add_keeps_the_defaults_and_stores_the_password_only_as_a_secret(cli: Cli) -> None:
    tenant_id = cli.tenant()

    result = cli(
        "mailbox", "add", tenant_id, "--address", "Bounces@Bounces.Acme.Example", "--host", " mail.acme.example ",
        "--password-env", "IMAP_PW",
    )  # fmt: skip

    assert result.status == 0, result.err
    header, row = result.out.splitlines()
    assert header.split() == ADD_HEADER
    [mailbox] = cli.world.mailboxes.list_mailboxes(tenant_id)
    assert row.split() == [
        mailbox.mailbox_id, "Bounces@bounces.acme.example", "mail.acme.example", "993", "tls",
        "Bounces@bounces.acme.example", "INBOX", "leave", "yes", "system",
    ]  # fmt: skip
    assert mailbox.mailbox_id.startswith("mbx_") and mailbox.enabled and mailbox.move_to is None
    assert mailbox.secret_name == f"petrel-test/tenants/{tenant_id}/imap/{mailbox.mailbox_id}"
    assert cli.passwords() == {mailbox.secret_name: PASSWORD}
    assert PASSWORD not in mailbox.model_dump_json()
    assert PASSWORD not in result.out + result.err and mailbox.secret_name not in result.out
    assert f"mailbox test {tenant_id} {mailbox.mailbox_id}" in result.err


def test_add_takes_every_setting(cli: Cli, tmp_path: Path) -> None:
    tenant_id = cli.tenant()
    (tmp_path / "tls").mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text(make_tls_files(tmp_path / "tls").ca_pem)

    mailbox = cli.add(
        tenant_id, "--security", "starttls", "--username", "poller", "--folder", "INBOX", "--folder", "Junk Mail",
        "--after", "move", "--move-to", "Petrel/Done", "--ca-file", str(ca),
        address="replies@acme.example",
    )  # fmt: skip

    assert (mailbox.port, mailbox.security.value, mailbox.username) == (143, "starttls", "poller")
    assert (mailbox.folders, mailbox.after.value, mailbox.move_to) == (("INBOX", "Junk Mail"), "move", "Petrel/Done")
    assert mailbox.ca_bundle == ca.read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--address", "not-an-address"], "the mailbox address 'not-an-address' is not an email address"),
        (["--address", "box@elsewhere.example"], "elsewhere.example is not a domain of tenant"),
        (["--port", "0"], "/port: Input should be greater than or equal to 1"),
        (["--port", "65536"], "/port: Input should be less than or equal to 65535"),
        (["--host", "mail host"], "'mail host' is not a host name or address"),
        (["--host", " "], "a mailbox needs its IMAP host"),
        (["--folder", ""], "a folder name must not be empty"),
        (["--folder", "INBOX", "--folder", "INBOX"], "a folder is named twice in INBOX, INBOX"),
        (["--folder", "a\rb"], "a folder name 'a\\rb' is not a usable IMAP folder name"),
        (["--after", "move"], "after 'move' needs the folder to move to (move-to)"),
        (["--move-to", "Done"], "a move-to folder goes with after 'move' only"),
        (["--after", "move", "--move-to", "INBOX"], "the move-to folder 'INBOX' is one the mailbox reads"),
        (["--username", " "], "the username must be non-empty printable text"),
    ],
)
def test_add_refuses_in_one_line_and_writes_nothing(cli: Cli, options: list[str], message: str) -> None:
    tenant_id = cli.tenant()
    defaults = {"--address": "bounces@bounces.acme.example", "--host": "mail.acme.example"}
    given = dict.fromkeys(option for option in options if option.startswith("--"))
    argv = [part for name, value in defaults.items() if name not in given for part in (name, value)]

    result = cli("mailbox", "add", tenant_id, *argv, *options, "--password-env", "IMAP_PW")

    _one_line_refusal(result, message)
    assert cli.world.mailboxes.mailboxes == {} and cli.passwords() == {}


def test_add_names_a_missing_tenant_and_a_missing_address(cli: Cli) -> None:
    result = cli("mailbox", "add", "tn_nope", "--address", "a@acme.example", "--host", "h", "--password-env", "IMAP_PW")
    _one_line_refusal(result, "no tenant 'tn_nope'")
    tenant_id = cli.tenant()
    _one_line_refusal(cli("mailbox", "add", tenant_id, "--host", "h"), "give --address and --host")
    assert cli.passwords() == {}


def test_a_ca_file_that_is_not_pem_is_refused(cli: Cli, tmp_path: Path) -> None:
    tenant_id = cli.tenant()
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    result = cli(
        "mailbox", "add", tenant_id, "--address", "b@acme.example", "--host", "h", "--ca-file", str(bad),
        "--password-env", "IMAP_PW",
    )  # fmt: skip
    _one_line_refusal(result, "the CA bundle is not valid PEM")
    missing = cli("mailbox", "add", tenant_id, "--address", "b@acme.example", "--host", "h", "--ca-file", "/nope.pem")
    _one_line_refusal(missing, "cannot read the CA file /nope.pem")
    assert cli.world.mailboxes.mailboxes == {} and cli.passwords() == {}


def test_a_second_mailbox_for_the_same_address_is_refused(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    first = cli.add(tenant_id)
    monkeypatch.setenv("IMAP_PW", "another")

    again = cli(
        "mailbox", "add", tenant_id, "--address", "BOUNCES@bounces.acme.example", "--host", "other.example",
        "--password-env", "IMAP_PW",
    )  # fmt: skip

    _one_line_refusal(again, f"tenant '{tenant_id}' already has a mailbox for bounces@bounces.acme.example")
    assert first.mailbox_id in again.err
    assert cli.world.mailboxes.list_mailboxes(tenant_id) == [first]
    assert cli.passwords() == {first.secret_name: PASSWORD}
    # The same address at another tenant (its return-path domain too) is that tenant's business.
    other = cli.tenant(domain="other.example", return_path="bounces.acme.example")
    assert cli.add(other).address == first.address


def test_the_password_comes_from_stdin_or_a_prompt_never_the_command_line(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["mailbox", "add", "tn_1", "--address", "a@b.example", "--host", "h", "--password", "x"])
    tenant_id = cli.tenant()
    piped = cli("mailbox", "add", tenant_id, "--address", "a@acme.example", "--host", "h")
    _one_line_refusal(piped, "give the password with --password-env NAME or --password-stdin")
    _stdin(monkeypatch, "from-stdin\n")

    result = cli("mailbox", "add", tenant_id, "--address", "a@acme.example", "--host", "h", "--password-stdin")

    assert result.status == 0, result.err
    [mailbox] = cli.world.mailboxes.list_mailboxes(tenant_id)
    assert cli.passwords() == {mailbox.secret_name: "from-stdin"}


def test_an_add_that_dies_before_the_record_leaves_no_secret_behind(cli: Cli) -> None:
    tenant_id = cli.tenant()
    cli.store.create_crashes = 2
    argv = ("mailbox", "add", tenant_id, "--address", "b@acme.example", "--host", "h", "--password-env", "IMAP_PW")

    for _ in range(2):
        crashed = cli(*argv)  # the admin function dies: a 500, one line, exit status 1
        assert crashed.status == 1 and crashed.err.count("\n") == 1 and "Internal error" in crashed.err
        assert cli.world.mailboxes.mailboxes == {} and cli.passwords() == {}

    assert cli(*argv).status == 0
    [mailbox] = cli.world.mailboxes.list_mailboxes(tenant_id)
    assert cli.passwords() == {mailbox.secret_name: PASSWORD}


# --local


def _local_state(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "tls").mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text(make_tls_files(tmp_path / "tls").ca_pem)
    return {
        "test_mailbox": {
            "address": "inbox@petrel.test",
            "imap_host": "127.0.0.1",
            "imap_port": 10993,
            "imap_security": "tls",
            "username": "inbox@petrel.test",
            "password": "local-inbox-pw",
            "ca_file": str(ca),
        }
    }


def test_local_takes_the_stand_ins_imap_server_and_test_mailbox(cli: Cli, tmp_path: Path) -> None:
    cli.state = _local_state(tmp_path)
    tenant_id = cli.tenant(domain="petrel.test", return_path="petrel.test")

    result = cli("--json", "mailbox", "add", tenant_id, "--local")

    assert result.status == 0, result.err
    mailbox = cli.world.mailboxes.get_mailbox(tenant_id, result.json()["mailbox_id"])
    assert mailbox is not None
    assert (mailbox.address, mailbox.host, mailbox.port, mailbox.security.value, mailbox.username) == (
        "inbox@petrel.test", "127.0.0.1", 10993, "tls", "inbox@petrel.test",
    )  # fmt: skip
    assert mailbox.ca_bundle == (tmp_path / "ca.pem").read_text()
    assert cli.passwords() == {mailbox.secret_name: "local-inbox-pw"}
    assert "local-inbox-pw" not in result.out + result.err
    assert result.json()["ca"] == "own" and "ca_bundle" not in result.json() and "secret_name" not in result.json()


def test_local_with_another_address_asks_for_its_password(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.state = _local_state(tmp_path)
    tenant_id = cli.tenant(domain="petrel.test", return_path="petrel.test")
    _stdin(monkeypatch, "bounces-pw\n")

    result = cli(
        "--json", "mailbox", "add", tenant_id, "--local", "--address", "bounces@petrel.test", "--password-stdin"
    )

    assert result.status == 0, result.err
    [mailbox] = cli.world.mailboxes.list_mailboxes(tenant_id)
    assert (mailbox.username, mailbox.port) == ("bounces@petrel.test", 10993)
    assert cli.passwords() == {mailbox.secret_name: "bounces-pw"}


def test_local_needs_local_json_s_imap_server_and_a_port_for_another_security(cli: Cli, tmp_path: Path) -> None:
    tenant_id = cli.tenant(domain="petrel.test", return_path="petrel.test")
    _one_line_refusal(cli("mailbox", "add", tenant_id, "--local"), "local.json has no IMAP server")
    cli.state = _local_state(tmp_path)
    other = cli("mailbox", "add", tenant_id, "--local", "--security", "starttls")
    _one_line_refusal(other, "local.json gives the stand-in's IMAP port for tls only: give --port")
    assert cli.world.mailboxes.mailboxes == {} and cli.passwords() == {}


# list


def test_list_has_a_header_even_when_empty_and_names_a_missing_tenant(cli: Cli) -> None:
    tenant_id = cli.tenant()
    assert (cli("mailbox", "list", tenant_id).out, cli("mailbox", "list", tenant_id).status) == (LIST_HEADER + "\n", 0)
    _one_line_refusal(cli("mailbox", "list", "tn_typo"), "no tenant 'tn_typo'")


def test_list_shows_each_mailbox_s_health_and_folder_cursors(cli: Cli) -> None:
    tenant_id = cli.tenant()
    polled = cli.add(tenant_id, "--folder", "INBOX", "--folder", "Junk")
    fresh = cli.add(tenant_id, "--after", "seen", address="replies@acme.example")
    now = cli.world.clock.now()
    failed_at = now - timedelta(minutes=3)
    store = cli.world.mailboxes
    store.save_cursor(
        FolderCursor(
            tenant_id=tenant_id, mailbox_id=polled.mailbox_id, folder="INBOX", uidvalidity=1700, last_uid=42,
            updated_at=now,
        ),
        expected=None,
    )  # fmt: skip
    store.put_health(
        MailboxHealth(
            tenant_id=tenant_id, mailbox_id=polled.mailbox_id, polled_at=now, error="login refused:\n  bad",
            error_at=failed_at, last_success_at=now - timedelta(hours=1),
        )
    )  # fmt: skip

    table = cli("mailbox", "list", tenant_id)

    assert table.status == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == LIST_HEADER.split()
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[polled.mailbox_id][7:] == [
        "INBOX=1700/42,Junk=-", "2026-01-15T09:30:00Z", "2026-01-15T08:30:00Z", "2026-01-15T09:27:00Z",
        "login", "refused:", "bad",
    ]  # fmt: skip
    assert by_id[fresh.mailbox_id][5:] == ["seen", "yes", "INBOX=-", "-", "-", "-", "-"]

    shown = {row["mailbox_id"]: row for row in cli("--json", "mailbox", "list", tenant_id).json()}
    assert shown[polled.mailbox_id]["cursors"] == [
        {"folder": "INBOX", "uidvalidity": 1700, "last_uid": 42, "updated_at": "2026-01-15T09:30:00Z"},
        {"folder": "Junk"},
    ]
    assert shown[polled.mailbox_id]["health"]["error"] == "login refused:\n  bad"
    assert shown[fresh.mailbox_id]["health"] is None
    assert all("secret_name" not in row and PASSWORD not in json.dumps(row) for row in shown.values())


# set


def test_set_changes_only_what_is_given(cli: Cli, tmp_path: Path) -> None:
    tenant_id = cli.tenant()
    (tmp_path / "tls").mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text(make_tls_files(tmp_path / "tls").ca_pem)
    mailbox = cli.add(tenant_id, "--ca-file", str(ca))

    moved = cli(
        "--json", "mailbox", "set", tenant_id, mailbox.mailbox_id, "--folder", "INBOX", "--folder", "Reports",
        "--after", "move", "--move-to", "Done", "--security", "starttls", "--disable", "--system-ca",
    )  # fmt: skip

    assert moved.status == 0, moved.err
    stored = cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id)
    assert stored is not None
    assert (stored.folders, stored.after.value, stored.move_to) == (("INBOX", "Reports"), "move", "Done")
    assert (stored.security.value, stored.port, stored.enabled, stored.ca_bundle) == ("starttls", 143, False, None)
    assert (stored.address, stored.host, stored.secret_name, stored.created_at) == (
        mailbox.address, mailbox.host, mailbox.secret_name, mailbox.created_at,
    )  # fmt: skip
    assert moved.json()["after"] == "move" and moved.json()["move_to"] == "Done"

    kept = cli("mailbox", "set", tenant_id, mailbox.mailbox_id, "--port", "1143", "--enable")
    assert kept.status == 0, kept.err
    assert kept.out.splitlines()[1].split()[3:] == [
        "1143", "starttls", mailbox.address, "INBOX,Reports", "move:Done", "yes", "system",
    ]  # fmt: skip
    again = cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id)
    assert again is not None and (again.port, again.enabled, again.move_to) == (1143, True, "Done")

    left = cli("mailbox", "set", tenant_id, mailbox.mailbox_id, "--after", "leave", "--security", "tls")
    assert left.status == 0, left.err
    last = cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id)
    assert last is not None and (last.after.value, last.move_to, last.port) == ("leave", None, 1143)  # own port kept


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "nothing to change: give at least one setting"),
        (["--move-to", "Done"], "a move-to folder goes with after 'move' only"),
        (["--after", "move"], "after 'move' needs the folder to move to (move-to)"),
        (["--port", "70000"], "/port: Input should be less than or equal to 65535"),
        (["--folder", " "], "a folder name must not be empty"),
    ],
)
def test_set_refuses_in_one_line_and_changes_nothing(cli: Cli, options: list[str], message: str) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    _one_line_refusal(cli("mailbox", "set", tenant_id, mailbox.mailbox_id, *options), message)
    assert cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id) == mailbox


def test_set_keeps_the_move_to_folder_out_of_the_folders_read(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id, "--after", "move", "--move-to", "Done")
    result = cli("mailbox", "set", tenant_id, mailbox.mailbox_id, "--folder", "INBOX", "--folder", "Done")
    _one_line_refusal(result, "the move-to folder 'Done' is one the mailbox reads")
    assert cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id) == mailbox


def test_an_unknown_mailbox_is_named_by_every_command(cli: Cli) -> None:
    tenant_id = cli.tenant()
    expected = f"petrel: Not found: no mailbox 'mbx_nope' for tenant '{tenant_id}'\n"
    for command in (["set", "--disable"], ["set-password"], ["remove"], ["test"]):
        name, *options = command
        result = cli("mailbox", name, tenant_id, "mbx_nope", *options)
        assert (result.status, result.out, result.err) == (2, "", expected), command


# set-password, remove


def test_set_password_rotates_the_secret_and_never_prints_it(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    monkeypatch.setenv("NEW_PW", "rotated-pw")

    result = cli("mailbox", "set-password", tenant_id, mailbox.mailbox_id, "--password-env", "NEW_PW")

    assert (result.status, result.out) == (0, f"{mailbox.mailbox_id}: password updated\n")
    assert cli.passwords() == {mailbox.secret_name: "rotated-pw"}
    assert "rotated-pw" not in result.err
    assert cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id) == mailbox


def _polled(cli: Cli, mailbox: Mailbox) -> None:
    now = cli.world.clock.now()
    for folder in mailbox.folders:
        cursor = FolderCursor(
            tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id, folder=folder, uidvalidity=7, updated_at=now
        )
        cli.world.mailboxes.save_cursor(cursor, expected=None)
    cli.world.mailboxes.put_health(
        MailboxHealth(tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id, polled_at=now, last_success_at=now)
    )


def test_remove_takes_the_record_its_secret_cursors_and_health(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id, "--folder", "INBOX", "--folder", "Junk")
    kept = cli.add(tenant_id, address="replies@acme.example")
    _polled(cli, mailbox)
    _polled(cli, kept)

    result = cli("--json", "mailbox", "remove", tenant_id, mailbox.mailbox_id)

    assert result.json() == {"mailbox_id": mailbox.mailbox_id, "result": "removed"}
    store = cli.world.mailboxes
    assert list(store.mailboxes.values()) == [kept] and cli.passwords() == {kept.secret_name: PASSWORD}
    assert [key[1] for key in store.cursors] == [kept.mailbox_id] and list(store.health) == [
        (tenant_id, kept.mailbox_id)
    ]


def test_a_removal_that_dies_half_way_finishes_when_run_again(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    _polled(cli, mailbox)
    cli.store.delete_crashes = 2

    for _ in range(2):
        crashed = cli("mailbox", "remove", tenant_id, mailbox.mailbox_id)
        assert crashed.status == 1 and "Internal error" in crashed.err
        # The password went first: what is left is a record the operator sees and can remove again.
        assert cli.passwords() == {}
        assert cli.world.mailboxes.get_mailbox(tenant_id, mailbox.mailbox_id) == mailbox

    assert cli("mailbox", "remove", tenant_id, mailbox.mailbox_id).status == 0
    store = cli.world.mailboxes
    assert (store.mailboxes, store.cursors, store.health, cli.passwords()) == ({}, {}, {}, {})


def test_test_needs_the_stored_password(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    cli.world.secrets.secrets.clear()
    result = cli("mailbox", "test", tenant_id, mailbox.mailbox_id)
    _one_line_refusal(result, f"mailbox {mailbox.mailbox_id} has no stored password")


def test_test_runs_the_check_in_the_admin_api_and_prints_each_step(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id, "--folder", "INBOX", "--folder", "Junk")
    session = ScriptedSession({"INBOX": (1700, [1, 2]), "Junk": (9, [])})
    reader = ScriptedReader(session)
    cli.ports.mailbox_reader = reader

    result = cli("mailbox", "test", tenant_id, mailbox.mailbox_id)

    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert [line.split()[:2] for line in lines[:5]] == [
        ["connect", "ok"], ["tls", "ok"], ["login", "ok"], ["select", "ok"], ["select", "ok"],
    ]  # fmt: skip
    assert lines[-1] == f"OK: {mailbox.mailbox_id} (mail.acme.example:993) can be read (INBOX, Junk)"
    assert reader.passwords == [PASSWORD] and PASSWORD not in result.out + result.err
    assert session.calls == ["select INBOX ro", "uids_after 0", "select Junk ro", "uids_after 0"]


def test_a_failed_check_is_exit_status_1_naming_the_step(cli: Cli) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    refused = MailboxError("login refused: [AUTHENTICATIONFAILED] failed", stage="login")
    cli.ports.mailbox_reader = ScriptedReader(error=refused)

    table = cli("mailbox", "test", tenant_id, mailbox.mailbox_id)
    shown = cli("--json", "mailbox", "test", tenant_id, mailbox.mailbox_id)

    assert table.status == 1 and table.out.splitlines()[-1].startswith(
        f"{mailbox.mailbox_id} (mail.acme.example:993) FAILED at login"
    )
    assert shown.status == 1 and shown.json()["ok"] is False
    assert [(step["name"], step["ok"]) for step in shown.json()["steps"]] == [
        ("connect", True),
        ("tls", True),
        ("login", False),
    ]


def test_a_new_password_travels_only_in_its_one_signed_request(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id = cli.tenant()
    mailbox = cli.add(tenant_id)
    monkeypatch.setenv("NEW_PW", "rotated-pw")
    before = len(cli.transport.requests)

    assert cli("mailbox", "set-password", tenant_id, mailbox.mailbox_id, "--password-env", "NEW_PW").status == 0

    sent = cli.transport.requests[before:]
    assert [r.method for r in sent] == ["GET", "PUT"]  # the mailbox exists before the password is read
    assert json.loads(sent[1].body or b"") == {"password": "rotated-pw"}
    assert all("rotated-pw" not in r.url and "rotated-pw" not in str(r.headers) for r in sent)


# the check itself, on a scripted reader


@dataclass
class ScriptedSession:
    folders: dict[str, tuple[int, list[int]]]  # folder -> (uidvalidity, uids)
    refuse: dict[str, MailboxError] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    closed: bool = False

    def select(self, folder: str, *, writable: bool) -> int:
        self.calls.append(f"select {folder} {'rw' if writable else 'ro'}")
        if folder in self.refuse:
            raise self.refuse[folder]
        self.selected = folder
        return self.folders[folder][0]

    def uids_after(self, last_uid: int) -> list[int]:
        self.calls.append(f"uids_after {last_uid}")
        return [uid for uid in self.folders[self.selected][1] if uid > last_uid]

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        raise AssertionError("the check fetches nothing")

    def mark_seen(self, uids: Sequence[int]) -> None:
        raise AssertionError("the check flags nothing")

    def move(self, uids: Sequence[int], folder: str) -> None:
        raise AssertionError("the check moves nothing")

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedReader:
    session: ScriptedSession | None = None
    error: MailboxError | None = None
    passwords: list[str] = field(default_factory=list)

    def open(self, mailbox: Mailbox, password: str, *, deadline: float | None = None) -> ScriptedSession:
        self.passwords.append(password)
        if self.error is not None:
            raise self.error
        assert self.session is not None
        return self.session


def _mailbox(*folders: str) -> Mailbox:
    return Mailbox(
        tenant_id="tn_1", mailbox_id="mbx_1", address="inbox@acme.example", host="imap.acme.example", port=993,
        username="inbox@acme.example", secret_name="s", folders=folders or ("INBOX",), created_at=DEFAULT_START,
    )  # fmt: skip


def _run(reader: ScriptedReader, mailbox: Mailbox) -> tuple[Step | None, list[Step]]:
    steps: list[Step] = []
    failed = check_mailbox(reader, mailbox, PASSWORD, steps.append)
    return failed, steps


def test_the_check_examines_each_folder_read_only_and_counts_its_messages() -> None:
    session = ScriptedSession({"INBOX": (1700, [1, 2, 5]), "Junk": (9, [4])})

    failed, steps = _run(ScriptedReader(session), _mailbox("INBOX", "Junk"))

    assert failed is None and session.closed
    assert [(s.name, s.ok) for s in steps] == [
        ("connect", True), ("tls", True), ("login", True), ("select", True), ("select", True),
    ]  # fmt: skip
    assert steps[0].detail == "imap.acme.example:993 (implicit TLS)"
    assert [s.detail for s in steps[3:]] == ["INBOX: UIDVALIDITY 1700, 3 messages", "Junk: UIDVALIDITY 9, 1 message"]
    assert session.calls == ["select INBOX ro", "uids_after 0", "select Junk ro", "uids_after 0"]


@pytest.mark.parametrize(("stage", "passed"), [("connect", []), ("tls", ["connect"]), ("login", ["connect", "tls"])])
def test_a_failure_to_open_is_reported_at_its_step_and_ends_the_check(stage: str, passed: list[str]) -> None:
    reader = ScriptedReader(error=MailboxError("login refused: [AUTHENTICATIONFAILED] failed", stage=stage))

    failed, steps = _run(reader, _mailbox())

    assert [s.name for s in steps if s.ok] == passed
    assert failed is not None and failed == steps[-1] and failed.name == stage and not failed.ok
    assert failed.detail.endswith("login refused: [AUTHENTICATIONFAILED] failed")
    assert reader.passwords == [PASSWORD] and all(PASSWORD not in s.detail for s in steps)


def test_a_refused_folder_fails_the_check_but_the_next_folder_is_still_examined() -> None:
    refused = MailboxError("the server refused select: Mailbox doesn't exist", stage="select", connection_lost=False)
    session = ScriptedSession({"INBOX": (3, [])}, refuse={"Archive": refused})

    failed, steps = _run(ScriptedReader(session), _mailbox("Archive", "INBOX"))

    assert failed is not None and failed.detail == "Archive: the server refused select: Mailbox doesn't exist"
    assert [(s.name, s.ok) for s in steps[3:]] == [("select", False), ("select", True)]
    assert steps[-1].detail == "INBOX: UIDVALIDITY 3, 0 messages" and session.closed


def test_a_lost_connection_stops_at_that_folder() -> None:
    lost = MailboxError("the connection broke during select", stage="select")
    session = ScriptedSession({"INBOX": (3, [])}, refuse={"Archive": lost})

    failed, steps = _run(ScriptedReader(session), _mailbox("Archive", "INBOX"))

    assert failed is not None and failed.name == "select" and len(steps) == 4 and session.closed
    assert session.calls == ["select Archive ro"]


def test_the_service_refuses_an_empty_password_and_an_empty_folder_list(cli: Cli) -> None:
    tenant_id = cli.tenant()
    with pytest.raises(ConfigurationError, match="a mailbox needs its IMAP password"):
        service.add_mailbox(cli.deps, tenant_id, address="b@acme.example", host="h", password="")
    with pytest.raises(ConfigurationError, match="at least one folder"):
        service.add_mailbox(cli.deps, tenant_id, address="b@acme.example", host="h", password="pw", folders=())
    assert cli.world.mailboxes.mailboxes == {} and cli.passwords() == {}


def test_two_adds_of_one_address_racing_past_the_check_one_wins_and_the_loser_keeps_no_secret() -> None:
    """Both adds read "no mailbox for this address" before either writes: the store's address claim
    decides, and the loser takes its secret back."""
    world = FakeWorld()
    tenant = world.seed(domain="acme.example").tenant
    deps = MailboxDeps(
        tenants=world.tenants,
        mailboxes=world.mailboxes,
        secrets=world.secrets,
        clock=world.clock,
        secrets_prefix="petrel-test/tenants/",
    )
    first = service.new_mailbox(deps, tenant.tenant_id, address="bounces@acme.example", host="imap.acme.example")
    second = service.new_mailbox(deps, tenant.tenant_id, address="Bounces@acme.example", host="imap.acme.example")

    service.save_new_mailbox(deps, first, "pw-1")
    racing = MailboxDeps(  # the loser's own read of the mailboxes still saw none
        tenants=world.tenants,
        mailboxes=_Blind(world.mailboxes),
        secrets=world.secrets,
        clock=world.clock,
        secrets_prefix="petrel-test/tenants/",
    )
    with pytest.raises(ConfigurationError, match="already"):
        service.save_new_mailbox(racing, second, "pw-2")

    assert [m.mailbox_id for m in world.mailboxes.list_mailboxes(tenant.tenant_id)] == [first.mailbox_id]
    with pytest.raises(RecordNotFound):
        world.secrets.get_secret(second.secret_name)


class _Blind:
    """A MailboxStore whose listing misses what another add just wrote (a read that lost the race)."""

    def __init__(self, inner: FakeMailboxStore) -> None:
        self.inner = inner

    def list_mailboxes(self, tenant_id: str) -> list[Mailbox]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
