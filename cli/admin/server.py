"""`petrel server add|list|test|set-password|remove`: a tenant's MailU submission servers.

Passwords go to Secrets Manager only; they are read from an environment variable, standard input or
a prompt that does not echo, never from the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli import passwords
from cli.command import Context, Groups, add_groups, add_parser
from cli.errors import CliError
from cli.smtp_check import Step, check_server
from petrel.mail.addresses import AddressError, normalize_domain
from petrel.models.records import POOLS, SmtpSecurity, SmtpServer
from petrel.services import tenants as admin

COLUMNS = ("server_id", "host", "port", "security", "username", "pool", "weight", "enabled", "ca")
DEFAULT_PORTS = {SmtpSecurity.STARTTLS.value: 587, SmtpSecurity.TLS.value: 465}
SECURITY_CHOICES = [security.value for security in SmtpSecurity]


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "server", "MailU SMTP servers"), "server commands")
    _register_add(commands)

    listing = add_parser(commands, "list", "list a tenant's SMTP servers")
    listing.add_argument("tenant", help="the tenant id (tn_...)")
    listing.set_defaults(handler=list_servers)

    test = add_parser(
        commands,
        "test",
        "check a server before mail depends on it (sends nothing)",
        "Connect to the server, set up TLS as configured (the certificate verified), AUTH with the stored "
        "password and say MAIL FROM the tenant's return path, then RSET and QUIT: no mail is sent. Each "
        "step is printed; the exit status is 0 when every step passed, 1 otherwise.",
    )
    _server_id_arguments(test)
    test.add_argument("--domain", help="the sending domain whose return path to use (default: the tenant's first)")
    test.add_argument("--timeout", type=float, default=30.0, help="seconds for each network operation")
    test.set_defaults(handler=test_server)

    password = add_parser(commands, "set-password", "rotate a server's SMTP password")
    _server_id_arguments(password)
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
    add.add_argument("tenant", help="the tenant id (tn_...)")
    add.add_argument("--host", help="the server's host name (required unless --local-relay)")
    add.add_argument("--port", type=int, help="default: 587 with starttls, 465 with tls")
    add.add_argument("--security", choices=SECURITY_CHOICES, help="default: starttls")
    add.add_argument("--username", help="the relay account, e.g. relay@acme.example (required unless --local-relay)")
    add.add_argument("--pool", choices=POOLS, default=POOLS[0], help="which traffic it carries")
    add.add_argument("--weight", type=int, default=1, help="its share of the pool's traffic (1-1000)")
    add.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust (a self-signed MailU certificate)")
    add.add_argument(
        "--local-relay",
        action="store_true",
        help="use the local MailU stand-in's relay account from local.json (--env local)",
    )
    passwords.add_arguments(add)
    add.set_defaults(handler=add_server)


def _server_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tenant", help="the tenant id (tn_...)")
    parser.add_argument("server_id", help="the server's id (server list)")


def _row(server: SmtpServer) -> dict[str, object]:
    row = server.model_dump(mode="json", exclude={"ca_bundle", "secret_name"})
    row["ca"] = "own" if server.ca_bundle else "system"
    return row


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
    password = password or passwords.read_password(args)
    try:
        ca_bundle = Path(ca_file).read_text() if ca_file else None
    except OSError as exc:
        raise CliError(f"cannot read the CA file {ca_file}: {exc.strerror}") from None
    server = admin.add_smtp_server(
        context.admin,
        args.tenant,
        host=host,
        port=port or DEFAULT_PORTS[security],
        security=security,
        username=username,
        password=password,
        pool=args.pool,
        weight=args.weight,
        ca_bundle=ca_bundle,
    )
    context.output.record(_row(server), COLUMNS)
    context.output.note(f"check it with: petrel --env {context.env} server test {args.tenant} {server.server_id}")
    return 0


def list_servers(args: argparse.Namespace, context: Context) -> int:
    admin.get_tenant(context.admin, args.tenant)
    servers = context.admin.tenants.list_servers(args.tenant)
    context.output.rows([_row(server) for server in servers], COLUMNS)
    return 0


def set_password(args: argparse.Namespace, context: Context) -> int:
    admin.find_server(context.admin, args.tenant, args.server_id)  # before asking for a password
    admin.set_smtp_password(context.admin, args.tenant, args.server_id, passwords.read_password(args))
    _done(context, args.server_id, "password updated")
    return 0


def remove_server(args: argparse.Namespace, context: Context) -> int:
    admin.remove_smtp_server(context.admin, args.tenant, args.server_id)
    _done(context, args.server_id, "removed")
    return 0


def _done(context: Context, server_id: str, what: str) -> None:
    if context.output.as_json:
        context.output.json({"server_id": server_id, "result": what})
    else:
        context.output.line(f"{server_id}: {what}")


def test_server(args: argparse.Namespace, context: Context) -> int:
    deps = context.admin
    server = admin.find_server(deps, args.tenant, args.server_id)
    mail_from = f"bounces+petrel-server-test@{_return_path_domain(context, args.tenant, args.domain)}"
    password = deps.secrets.get_secret(server.secret_name)
    steps: list[Step] = []

    def report(step: Step) -> None:
        steps.append(step)
        if not context.output.as_json:
            context.output.line(f"{step.name:<10} {'ok' if step.ok else 'FAILED':<6} {step.detail}")

    failed = check_server(server, password, mail_from, report, timeout=args.timeout)
    where = f"{server.server_id} ({server.host}:{server.port})"
    result = f"FAILED at {failed.name}: {failed.detail}" if failed else f"OK: {where} accepts mail from the tenant"
    if context.output.as_json:
        context.output.json(
            {"server_id": server.server_id, "ok": failed is None, "steps": [vars(step) for step in steps]}
        )
    else:
        context.output.line(result if failed is None else f"{where} {result}")
    return 0 if failed is None else 1


def _return_path_domain(context: Context, tenant_id: str, wanted: str | None) -> str:
    domains = context.admin.tenants.list_domains(tenant_id)
    if wanted is not None:
        try:
            name = normalize_domain(wanted)
        except AddressError as exc:
            raise CliError(str(exc)) from None
        found = next((d for d in domains if d.domain == name), None)
        if found is None:
            raise CliError(f"tenant {tenant_id!r} has no domain {wanted!r} (domain list)")
        return found.return_path_domain
    if not domains:
        raise CliError(f"tenant {tenant_id!r} has no sending domain yet: add one with `domain add` first")
    return domains[0].return_path_domain
