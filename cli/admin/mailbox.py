"""`petrel mailbox add|list|set|set-password|remove|test`: the tenant's MailU mailboxes Petrel reads,
through the admin API.

The poller reads each mailbox over IMAP (delivery reports at the return-path domain's mailbox, replies
and new mail in any inbox the tenant wants). Passwords go to Secrets Manager only; they are read from an
environment variable, standard input or a prompt that does not echo, never from the command line, and
sent only in the body of the signed request.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Mapping
from typing import Any

from cli import passwords
from cli.admin.server import CHECK_TIMEOUT, read_ca, report_check
from cli.admin.tenant import tenant_path
from cli.client import segment
from cli.command import Context, Groups, add_groups, add_parser, add_tenant_argument
from cli.errors import CliError
from petrel.models.records import MailboxAfter, SmtpSecurity

COLUMNS = ("mailbox_id", "address", "host", "port", "security", "username", "folders", "after", "enabled", "ca")
LIST_COLUMNS = (
    "mailbox_id",
    "address",
    "host",
    "port",
    "security",
    "after",
    "enabled",
    "folders",
    "polled_at",
    "last_success_at",
    "error_at",
    "error",
)
SECURITY_CHOICES = [security.value for security in SmtpSecurity]
AFTER_CHOICES = [after.value for after in MailboxAfter]
_LIST_DESCRIPTION = (
    "List a tenant's mailboxes with the poller's view of each: POLLED_AT its last poll, LAST_SUCCESS_AT "
    "its last good one, ERROR the error that stopped the last poll (none when it went well) and ERROR_AT "
    "when the last error happened. FOLDERS shows each folder as NAME=UIDVALIDITY/LAST_UID, how far the "
    "poller has read it (NAME=- before its first poll); --json gives the same as fields."
)


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "mailbox", "IMAP mailboxes Petrel reads"), "mailbox commands")
    _register_add(commands)

    listing = add_parser(commands, "list", "list a tenant's mailboxes and how their polls went", _LIST_DESCRIPTION)
    add_tenant_argument(listing)
    listing.set_defaults(handler=list_mailboxes)

    _register_set(commands)

    test = add_parser(
        commands,
        "test",
        "check a mailbox before the poller depends on it (reads nothing, changes nothing)",
        "Have the admin API (which reaches the server as the poller does) connect to the IMAP server, "
        "set up TLS as configured (the certificate verified), log in with the "
        "stored password and examine each folder read-only, printing its UIDVALIDITY and message count. No "
        "message is fetched or flagged. Each step is printed; the exit status is 0 when every step passed, "
        "1 otherwise.",
    )
    _mailbox_id_arguments(test)
    test.add_argument("--timeout", type=float, default=CHECK_TIMEOUT, help="seconds to wait for the check's answer")
    test.set_defaults(handler=test_mailbox)

    password = add_parser(commands, "set-password", "rotate a mailbox's IMAP password")
    _mailbox_id_arguments(password)
    passwords.add_arguments(password)
    password.set_defaults(handler=set_password)

    remove = add_parser(commands, "remove", "remove a mailbox, its stored password and the poller's cursors and health")
    _mailbox_id_arguments(remove)
    remove.set_defaults(handler=remove_mailbox)


def _register_add(commands: Groups[argparse.ArgumentParser]) -> None:
    add = add_parser(
        commands,
        "add",
        "add a mailbox for the poller to read",
        "Add a MailU mailbox the poller reads over IMAP: at least the mailbox of the return-path domain, "
        "where delivery reports (bounces) land, and any inbox whose replies and mail the tenant wants. "
        "The address's domain must be one of the tenant's domains or return-path domains. The password "
        "goes to Secrets Manager only. Check it afterwards with `mailbox test`.\n\nAgainst the local "
        "stack, --local takes the host, port, security and CA of the MailU stand-in's IMAP server from "
        "local.json (and, without --address, its test mailbox's address and password).",
    )
    add_tenant_argument(add)
    add.add_argument("--address", help="the mailbox's address, e.g. bounces@acme.example (required unless --local)")
    add.add_argument("--host", help="the IMAP server's host name (required unless --local)")
    add.add_argument("--port", type=int, help="default: 993 with tls, 143 with starttls")
    add.add_argument("--security", choices=SECURITY_CHOICES, help="default: tls (implicit TLS)")
    add.add_argument("--username", help="the IMAP login (default: the address)")
    add.add_argument(
        "--folder",
        dest="folders",
        action="append",
        metavar="NAME",
        help="a folder to read; repeat for several (default: INBOX)",
    )
    _disposal_arguments(add, default=MailboxAfter.LEAVE.value)
    add.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust (a self-signed MailU certificate)")
    add.add_argument(
        "--local",
        action="store_true",
        help="use the local MailU stand-in's IMAP server from local.json (--env local)",
    )
    passwords.add_arguments(add)
    add.set_defaults(handler=add_mailbox)


def _register_set(commands: Groups[argparse.ArgumentParser]) -> None:
    change = add_parser(
        commands,
        "set",
        "change a mailbox's settings",
        "Change some settings of a mailbox; those not given stay as they are. --folder replaces the list "
        "of folders read. The poller uses the change at its next run. The address cannot change: add "
        "another mailbox instead; the password changes with `mailbox set-password`.",
    )
    _mailbox_id_arguments(change)
    change.add_argument("--host", help="the IMAP server's host name")
    change.add_argument(
        "--port", type=int, help="the port (a port left at the old security's default follows the new one)"
    )
    change.add_argument("--security", choices=SECURITY_CHOICES, help="tls (implicit) or starttls")
    change.add_argument("--username", help="the IMAP login")
    change.add_argument(
        "--folder", dest="folders", action="append", metavar="NAME", help="a folder to read (repeat for several)"
    )
    _disposal_arguments(change, default=None)
    ca = change.add_mutually_exclusive_group()
    ca.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust from now on")
    ca.add_argument("--system-ca", action="store_true", help="drop the mailbox's own CA: trust the system's")
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True, help="poll it again")
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False, help="stop polling it")
    change.set_defaults(handler=set_mailbox)


def _disposal_arguments(parser: argparse.ArgumentParser, *, default: str | None) -> None:
    parser.add_argument(
        "--after",
        choices=AFTER_CHOICES,
        default=default,
        help="what the poller does with a message once ingested: leave it, mark it \\Seen, or move it",
    )
    parser.add_argument("--move-to", metavar="FOLDER", help="the folder to move messages to (with --after move)")


def _mailbox_id_arguments(parser: argparse.ArgumentParser) -> None:
    add_tenant_argument(parser)
    parser.add_argument("mailbox_id", help="the mailbox's id (mailbox list)")


def _read_password(args: argparse.Namespace) -> str:
    return passwords.read_password(args, prompt=lambda _: getpass.getpass("IMAP password: "))


def _after(mailbox: Mapping[str, Any]) -> str:
    after = str(mailbox.get("after") or MailboxAfter.LEAVE.value)
    return f"move:{mailbox.get('move_to')}" if after == MailboxAfter.MOVE.value else after


def _row(mailbox: Mapping[str, Any]) -> dict[str, Any]:
    """The mailbox as shown: never its CA's text (its presence only), nor its health and cursors."""
    row = {name: value for name, value in mailbox.items() if name not in ("ca_bundle", "health", "cursors")}
    row["ca"] = "own" if mailbox.get("ca_bundle") else "system"
    return row


def _cells(mailbox: Mapping[str, Any]) -> dict[str, Any]:
    return {**_row(mailbox), "folders": ",".join(mailbox.get("folders") or ()), "after": _after(mailbox)}


def _cursor_cell(folder: str, cursor: Mapping[str, Any] | None) -> str:
    return f"{folder}=-" if cursor is None else f"{folder}={cursor['uidvalidity']}/{cursor['last_uid']}"


def _cursors(mailbox: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None]:
    """Each folder read, with how far (None before its first poll), in the mailbox's folder order."""
    known: Mapping[str, Any] = mailbox.get("cursors") or {}
    return {folder: known.get(folder) for folder in mailbox.get("folders") or known}


def _view_row(mailbox: Mapping[str, Any], *, as_json: bool) -> dict[str, Any]:
    """A mailbox with its health and cursors: structured with --json, cells in a table."""
    health: Mapping[str, Any] = mailbox.get("health") or {}
    if as_json:
        cursors = [{"folder": folder, **(cursor or {})} for folder, cursor in _cursors(mailbox).items()]
        return {**_row(mailbox), "health": dict(health) or None, "cursors": cursors}
    error = health.get("error")
    return {
        **_cells(mailbox),
        **health,
        "error": " ".join(str(error).split()) if error else None,
        "folders": ",".join(_cursor_cell(folder, cursor) for folder, cursor in _cursors(mailbox).items()),
    }


def _show(context: Context, mailbox: Mapping[str, Any]) -> None:
    context.output.record(_row(mailbox) if context.output.as_json else _cells(mailbox), COLUMNS)


def mailboxes_path(tenant_id: str) -> str:
    return f"{tenant_path(tenant_id)}/mailboxes"


def mailbox_path(tenant_id: str, mailbox_id: str) -> str:
    return f"{mailboxes_path(tenant_id)}/{segment(mailbox_id)}"


def _local_imap(context: Context) -> dict[str, Any]:
    """local.json's `test_mailbox`: the stand-in's IMAP server and its test mailbox's account."""
    state = context.target.state
    if state is None:
        raise CliError("--local needs the local stack (--env local)")
    section = state.get("test_mailbox")
    if not isinstance(section, dict) or "imap_host" not in section:
        raise CliError(
            "local.json has no IMAP server (`test_mailbox` section): restart the local stack with `make run`"
        )
    return section


def _with_local(args: argparse.Namespace, context: Context) -> argparse.Namespace:
    """The add arguments completed from local.json's stand-in (`--local`): its IMAP host, port, security
    and CA; and, for its test mailbox (no --address, or that one), the address, username and password."""
    local = _local_imap(context)
    local_security = str(local.get("imap_security", SmtpSecurity.TLS.value))
    security = args.security or local_security
    port = args.port
    if port is None and security == local_security and local.get("imap_port"):
        port = int(local["imap_port"])
    if port is None:
        raise CliError(f"local.json gives the stand-in's IMAP port for {local_security} only: give --port")
    filled = {
        "host": args.host or str(local["imap_host"]),
        "port": port,
        "security": security,
        "ca_file": args.ca_file or local.get("ca_file"),
        "local_password": None,
    }
    if args.address is None or args.address.lower() == str(local.get("address", "")).lower():
        filled.update(address=args.address or local.get("address"), username=args.username or local.get("username"))
        if not (args.password_env or args.password_stdin):
            filled["local_password"] = local.get("password")
    return argparse.Namespace(**{**vars(args), **filled})


def add_mailbox(args: argparse.Namespace, context: Context) -> int:
    args = _with_local(args, context) if args.local else argparse.Namespace(**vars(args), local_password=None)
    if not args.address or not args.host:
        raise CliError("give --address and --host (or --local against the local stack)")
    body: dict[str, Any] = {
        "address": args.address,
        "host": args.host,
        "security": args.security or SmtpSecurity.TLS.value,
        "after": args.after,
    }
    optional = {
        "port": args.port,
        "username": args.username,
        "folders": list(args.folders) if args.folders else None,
        "move_to": args.move_to,
        "ca_bundle": read_ca(args.ca_file),
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    body["password"] = args.local_password or _read_password(args)
    mailbox = context.client.post(mailboxes_path(args.tenant), body)
    _show(context, mailbox)
    context.output.note(f"check it with: petrel --env {context.env} mailbox test {args.tenant} {mailbox['mailbox_id']}")
    return 0


def list_mailboxes(args: argparse.Namespace, context: Context) -> int:
    mailboxes = context.client.get(mailboxes_path(args.tenant))["mailboxes"]
    as_json = context.output.as_json
    context.output.rows([_view_row(mailbox, as_json=as_json) for mailbox in mailboxes], LIST_COLUMNS)
    return 0


def set_mailbox(args: argparse.Namespace, context: Context) -> int:
    changes = {
        "host": args.host,
        "port": args.port,
        "security": args.security,
        "username": args.username,
        "ca_bundle": "" if args.system_ca else read_ca(args.ca_file),
        "folders": list(args.folders) if args.folders else None,
        "after": args.after,
        "move_to": args.move_to,
        "enabled": args.enabled,
    }
    body = {name: value for name, value in changes.items() if value is not None}
    if not body:
        raise CliError("nothing to change: give at least one setting (see mailbox set --help)")
    _show(context, context.client.patch(mailbox_path(args.tenant, args.mailbox_id), body))
    return 0


def set_password(args: argparse.Namespace, context: Context) -> int:
    path = mailbox_path(args.tenant, args.mailbox_id)
    context.client.get(path)  # it exists, before asking for a password
    context.client.put(f"{path}/password", {"password": _read_password(args)})
    _done(context, args.mailbox_id, "password updated")
    return 0


def remove_mailbox(args: argparse.Namespace, context: Context) -> int:
    context.client.delete(mailbox_path(args.tenant, args.mailbox_id))
    _done(context, args.mailbox_id, "removed")
    return 0


def _done(context: Context, mailbox_id: str, what: str) -> None:
    if context.output.as_json:
        context.output.json({"mailbox_id": mailbox_id, "result": what})
    else:
        context.output.line(f"{mailbox_id}: {what}")


def test_mailbox(args: argparse.Namespace, context: Context) -> int:
    path = mailbox_path(args.tenant, args.mailbox_id)
    mailbox = context.client.get(path)
    answer = context.client.post(f"{path}/test", timeout=args.timeout)
    where = f"{args.mailbox_id} ({mailbox['host']}:{mailbox['port']})"
    success = f"OK: {where} can be read ({', '.join(mailbox.get('folders') or ())})"
    return report_check(context, {"mailbox_id": args.mailbox_id}, answer, success, where)
