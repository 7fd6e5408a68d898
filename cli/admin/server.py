"""`petrel server add|list|update|pause|resume|set-password|remove|test`: a tenant's MailU submission
servers, through the admin API.

Passwords go to Secrets Manager only (the admin function stores them); the CLI reads them from an
environment variable, standard input or a prompt that does not echo, never from the command line, and
sends them only in the body of the signed request. `set-password` has the admin API try the new password
with SMTP AUTH before storing it, so a wrong one never replaces a good one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli import passwords
from cli.admin.tenant import tenant_path
from cli.client import segment
from cli.command import Context, Groups, add_groups, add_parser, add_tenant_argument
from cli.errors import CliError
from petrel.models.records import POOLS, SmtpSecurity

COLUMNS = ("server_id", "host", "port", "security", "username", "pool", "weight", "enabled", "ca", "paused")
# `server show`: a server with its shaping, its pause and its last events.
DETAIL_COLUMNS = (*COLUMNS, "paused_reason", "resume_at", "rate", "warmup", "last_events")
# --flag -> the ServerShaping field it sets, its type and its help.
SHAPING_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--rate", "rate_per_second", float, "messages per second through the server (default 20)"),
    ("--burst", "burst", int, "messages it may take at once (its bucket; default 40)"),
    ("--provider-rate", "provider_rate_per_second", float, "messages per second to one provider (default 5)"),
    ("--provider-burst", "provider_burst", int, "at once to one provider (default 10)"),
    ("--concurrency", "concurrency", int, "SMTP sessions a worker keeps open to it (1-32; default 4)"),
    ("--bounce-window", "bounce_window", int, "the last N sends its bounce rate is taken over (default 200)"),
    ("--bounce-min-sends", "bounce_min_sends", int, "fewer sends than this never pause it (default 50)"),
    ("--bounce-threshold", "bounce_threshold", float, "hard bounces / sends that pause it (0-1; default 0.10)"),
    ("--failure-threshold", "failure_threshold", int, "consecutive connection failures that pause it (default 5)"),
    ("--probation-minutes", "probation_minutes", int, "a paused server resumes on its own after this (default 60)"),
)
DEFAULT_PORTS = {SmtpSecurity.STARTTLS.value: 587, SmtpSecurity.TLS.value: 465}
SECURITY_CHOICES = [security.value for security in SmtpSecurity]
# The admin API's check runs several network steps (30 s each at most, from the function): the CLI
# waits for all of them by default.
CHECK_TIMEOUT = 120.0


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "server", "MailU SMTP servers"), "server commands")
    _register_add(commands)

    listing = add_parser(commands, "list", "list a tenant's SMTP servers")
    add_tenant_argument(listing)
    listing.set_defaults(handler=list_servers)

    _register_update(commands)

    for name, help_text in (
        ("pause", "stop sending through a server (its traffic goes to the pool's others)"),
        ("resume", "send through a paused server again"),
    ):
        toggle = add_parser(commands, name, help_text)
        _server_id_arguments(toggle)
        toggle.set_defaults(handler=toggle_server, action=name)

    test = add_parser(
        commands,
        "test",
        "check a server before mail depends on it (sends nothing)",
        "Have the admin API (which reaches the server as the send worker does) connect to the server, set "
        "up TLS as configured (the certificate verified), AUTH with the stored password and say MAIL FROM "
        "the tenant's return path, then RSET and QUIT: no mail is sent. Each step is printed; the exit "
        "status is 0 when every step passed, 1 otherwise. The MAIL FROM is the return path of the tenant's "
        "first sending domain.",
    )
    _server_id_arguments(test)
    test.add_argument("--timeout", type=float, default=CHECK_TIMEOUT, help="seconds to wait for the check's answer")
    test.set_defaults(handler=test_server)

    password = add_parser(
        commands,
        "set-password",
        "rotate a server's SMTP password",
        "Rotate a server's SMTP password: the admin API first tries the new password with SMTP AUTH "
        "against the server and stores it only if the server takes it (change it on MailU first), so "
        "mail never goes out with a password the server refuses.",
    )
    _server_id_arguments(password)
    password.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="store the password without trying it first (the server is unreachable from the API)",
    )
    passwords.add_arguments(password)
    password.set_defaults(handler=set_password)

    remove = add_parser(commands, "remove", "remove a server and its stored password")
    _server_id_arguments(remove)
    remove.set_defaults(handler=remove_server)


def _register_add(commands: Groups[argparse.ArgumentParser]) -> None:
    add = add_parser(
        commands,
        "add",
        "add a MailU submission server",
        "Add a tenant's MailU submission server (port 587 with STARTTLS, or 465 with implicit TLS; "
        "AUTH required). The password goes to Secrets Manager only. Check it afterwards with "
        "`server test`.\n\nAgainst the local stack, --local-relay takes the host, port, username, "
        "password and CA of the MailU stand-in's relay account from local.json.",
    )
    add_tenant_argument(add)
    add.add_argument("--host", help="the server's host name (required unless --local-relay)")
    add.add_argument("--port", type=int, help="default: 587 with starttls, 465 with tls")
    add.add_argument("--security", choices=SECURITY_CHOICES, help="default: starttls")
    add.add_argument("--username", help="the relay account, e.g. relay@acme.example (required unless --local-relay)")
    add.add_argument("--pool", choices=POOLS, default=POOLS[0], help="which traffic it carries")
    add.add_argument("--weight", type=int, default=1, help="its share of the pool's traffic (1-1000)")
    add.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust (a self-signed MailU certificate)")
    _shaping_arguments(add)
    add.add_argument(
        "--local-relay",
        action="store_true",
        help="use the local MailU stand-in's relay account from local.json (--env local)",
    )
    passwords.add_arguments(add)
    add.set_defaults(handler=add_server)


def _register_update(commands: Groups[argparse.ArgumentParser]) -> None:
    change = add_parser(
        commands,
        "update",
        "change a server's settings",
        "Change some settings of a server; those not given stay as they are. The password changes with "
        "`server set-password`; pausing with `server pause`.",
    )
    _server_id_arguments(change)
    change.add_argument("--host", help="the server's host name")
    change.add_argument("--port", type=int, help="the port")
    change.add_argument("--security", choices=SECURITY_CHOICES, help="starttls or tls (implicit)")
    change.add_argument("--username", help="the relay account")
    change.add_argument("--pool", choices=POOLS, help="which traffic it carries")
    change.add_argument("--weight", type=int, help="its share of the pool's traffic (1-1000)")
    ca = change.add_mutually_exclusive_group()
    ca.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust from now on")
    ca.add_argument("--system-ca", action="store_true", help="drop the server's own CA: trust the system's")
    _shaping_arguments(change)
    change.set_defaults(handler=update_server)


def warmup(value: str) -> list[dict[str, int]]:
    """A warm-up ramp argument: `DAY:CAP,DAY:CAP,...` (from the server's DAY-th day of age, at most CAP
    messages a UTC day)."""
    steps: list[dict[str, int]] = []
    for part in value.split(","):
        day, sep, cap = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError
            steps.append({"day": int(day), "daily_cap": int(cap)})
        except ValueError:
            raise argparse.ArgumentTypeError(f"not DAY:CAP,DAY:CAP,...: {value!r}") from None
    return steps


def _shaping_arguments(parser: argparse.ArgumentParser) -> None:
    """The traffic shaping flags (README "Traffic shaping"); one not given keeps its value."""
    group = parser.add_argument_group("traffic shaping (a setting not given keeps its value, or the default)")
    for flag, field, kind, help_text in SHAPING_FLAGS:
        group.add_argument(flag, dest=f"shaping_{field}", type=kind, metavar=kind.__name__.upper(), help=help_text)
    ramp = group.add_mutually_exclusive_group()
    ramp.add_argument(
        "--warmup",
        dest="shaping_warmup",
        type=warmup,
        metavar="DAY:CAP,...",
        help="the warm-up ramp: from the server's DAY-th day of age at most CAP messages a day, e.g. "
        "0:500,1:1000,2:2000 (default: the platform's 45-day ramp)",
    )
    ramp.add_argument(
        "--no-warmup",
        dest="shaping_warmup",
        action="store_const",
        const=[],
        help="no warm-up ramp (a server that is warm already)",
    )


def shaping_body(args: argparse.Namespace) -> dict[str, Any]:
    """The shaping settings given on the command line, and only those."""
    fields = [field for _, field, _, _ in SHAPING_FLAGS] + ["warmup"]
    return {field: value for field in fields if (value := getattr(args, f"shaping_{field}", None)) is not None}


def _server_id_arguments(parser: argparse.ArgumentParser) -> None:
    add_tenant_argument(parser)
    parser.add_argument("server_id", help="the server's id (server list)")


def read_ca(ca_file: str | None) -> str | None:
    """A CA bundle file's PEM text (sent in the request; the admin API keeps it on the record)."""
    try:
        return Path(ca_file).read_text() if ca_file else None
    except OSError as exc:
        raise CliError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None


def _row(server: dict[str, Any]) -> dict[str, Any]:
    row = {name: value for name, value in server.items() if name != "ca_bundle"}
    row["ca"] = "own" if server.get("ca_bundle") else "system"
    row["paused"] = "yes" if server.get("paused_at") else "no"
    shaping = server.get("shaping") or {}
    if shaping:
        row["rate"] = f"{shaping['rate_per_second']:g}/s burst {shaping['burst']}"
        ramp = shaping.get("warmup") or []
        row["warmup"] = ",".join(f"{step['day']}:{step['daily_cap']}" for step in ramp) or "none"
    events = server.get("events") or []
    row["last_events"] = "; ".join(
        f"{e['at']} {e['type']}" + (f" ({e['detail']})" if e.get("detail") else "") for e in events[-3:]
    )
    return row


def servers_path(tenant_id: str) -> str:
    return f"{tenant_path(tenant_id)}/servers"


def server_path(tenant_id: str, server_id: str) -> str:
    return f"{servers_path(tenant_id)}/{segment(server_id)}"


def add_server(args: argparse.Namespace, context: Context) -> int:
    host, port, security, username, ca_file = args.host, args.port, args.security, args.username, args.ca_file
    password: str | None = None
    if args.local_relay:
        relay = context.target.local_relay()
        host, username = host or relay.host, username or relay.username
        security = security or relay.security
        port = port or relay.ports.get(security)
        ca_file = ca_file or relay.ca_file
        if not (args.password_env or args.password_stdin):
            password = relay.password
    if not host or not username:
        raise CliError("give --host and --username (or --local-relay against the local stack)")
    security = security or SmtpSecurity.STARTTLS.value
    body: dict[str, Any] = {
        "host": host,
        "port": port or DEFAULT_PORTS[security],
        "security": security,
        "username": username,
        "pool": args.pool,
        "weight": args.weight,
    }
    ca_bundle = read_ca(ca_file)
    if ca_bundle is not None:
        body["ca_bundle"] = ca_bundle
    if shaping := shaping_body(args):
        body["shaping"] = shaping
    body["password"] = password or passwords.read_password(args)
    server = context.client.post(servers_path(args.tenant), body)
    context.output.record(_row(server), DETAIL_COLUMNS)
    context.output.note(f"check it with: petrel --env {context.env} server test {args.tenant} {server['server_id']}")
    return 0


def list_servers(args: argparse.Namespace, context: Context) -> int:
    context.output.rows([_row(server) for server in _servers(context, args.tenant)], COLUMNS)
    return 0


def _servers(context: Context, tenant_id: str) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = context.client.get(servers_path(tenant_id))["servers"]
    return servers


def update_server(args: argparse.Namespace, context: Context) -> int:
    body = {
        name: getattr(args, name)
        for name in ("host", "port", "security", "username", "pool", "weight")
        if getattr(args, name) is not None
    }
    ca_bundle = "" if args.system_ca else read_ca(args.ca_file)
    if ca_bundle is not None:
        body["ca_bundle"] = ca_bundle
    if shaping := shaping_body(args):
        body["shaping"] = shaping
    if not body:
        raise CliError("nothing to change: give at least one setting (see server update --help)")
    server = context.client.patch(server_path(args.tenant, args.server_id), body)
    context.output.record(_row(server), DETAIL_COLUMNS)
    return 0


def toggle_server(args: argparse.Namespace, context: Context) -> int:
    server = context.client.post(f"{server_path(args.tenant, args.server_id)}/{args.action}")
    context.output.record(_row(server), DETAIL_COLUMNS)
    return 0


def set_password(args: argparse.Namespace, context: Context) -> int:
    context.client.get(server_path(args.tenant, args.server_id))  # it exists, before asking for a password
    body = {"password": passwords.read_password(args), "verify": args.verify}
    context.client.put(f"{server_path(args.tenant, args.server_id)}/password", body)
    _done(context, args.server_id, "password updated" + ("" if args.verify else " (not tried)"))
    return 0


def remove_server(args: argparse.Namespace, context: Context) -> int:
    context.client.delete(server_path(args.tenant, args.server_id))
    _done(context, args.server_id, "removed")
    return 0


def _done(context: Context, server_id: str, what: str) -> None:
    if context.output.as_json:
        context.output.json({"server_id": server_id, "result": what})
    else:
        context.output.line(f"{server_id}: {what}")


def print_steps(context: Context, steps: list[dict[str, Any]]) -> None:
    """A check's steps, one line each (with --json the caller prints the answer instead)."""
    for step in steps:
        context.output.line(f"{step['name']:<10} {'ok' if step['ok'] else 'FAILED':<6} {step['detail']}")


def test_server(args: argparse.Namespace, context: Context) -> int:
    path = server_path(args.tenant, args.server_id)
    server = context.client.get(path)
    answer = context.client.post(f"{path}/test", timeout=args.timeout)
    where = f"{args.server_id} ({server['host']}:{server['port']})"
    return report_check(
        context, {"server_id": args.server_id}, answer, f"OK: {where} accepts mail from the tenant", where
    )


def report_check(context: Context, subject: dict[str, Any], answer: dict[str, Any], success: str, where: str) -> int:
    """A connectivity check's answer ({ok, steps}): its steps one to a line, then the verdict (the answer
    itself with --json); exit status 0 when it passed, 1 otherwise."""
    steps: list[dict[str, Any]] = answer.get("steps") or []
    passed = bool(answer.get("ok"))
    if context.output.as_json:
        context.output.json({**subject, "ok": passed, "steps": steps})
        return 0 if passed else 1
    print_steps(context, steps)
    if passed:
        context.output.line(success)
        return 0
    failed = next((step for step in steps if not step["ok"]), None)
    context.output.line(f"{where} FAILED" + (f" at {failed['name']}: {failed['detail']}" if failed else ""))
    return 1
