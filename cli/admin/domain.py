"""`petrel domain add|list|show|update|verify|rotate|remove`: a tenant's sending domains, through the admin API.

A domain is created with its DKIM key(s) (private keys in Secrets Manager only) and the DNS records the
tenant must publish; `show` prints them as a table to copy, `verify` looks each one up and says what it
found. Mail from the domain is refused until its SPF and DKIM records are verified; `update` changes the
return path, SPF, MX, receiving or DMARC reports, and a changed required record stops mail until verified.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.admin.tenant import tenant_path
from cli.client import segment
from cli.command import Context, Groups, add_groups, add_parser, add_tenant_argument
from cli.errors import CliError

COLUMNS = ("domain", "status", "signer", "return_path_domain", "sending_allowed", "created_at")
RECORD_COLUMNS = ("purpose", "type", "name", "value", "required", "status", "detail")
SIGNERS = ("petrel", "mailu")
_RETURN_PATH_HELP = (
    "the domain of the envelope sender, bounces+<message id>@<this>, whose mailbox receives "
    "the delivery reports (default: the domain itself)"
)


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "domain", "sending domains"), "domain commands")
    _register_add(commands)

    listing = add_parser(commands, "list", "list a tenant's sending domains and their verification status")
    add_tenant_argument(listing)
    listing.set_defaults(handler=list_domains)

    show = add_parser(
        commands,
        "show",
        "show a domain and the DNS records to publish",
        "Show a sending domain: its status, and a table of the DNS records the tenant must publish with "
        "the result of their last check (REQUIRED records must be verified before mail may go out).",
    )
    _domain_arguments(show)
    show.set_defaults(handler=show_domain)

    _register_update(commands)

    verify = add_parser(
        commands,
        "verify",
        "look up the domain's DNS records now",
        "Look up every record of the domain in DNS now and print what was found. The exit status is 0 "
        "when the domain may send (its SPF and DKIM records verified), 1 otherwise.",
    )
    _domain_arguments(verify)
    verify.set_defaults(handler=verify_domain)

    rotate = add_parser(
        commands,
        "rotate",
        "start a DKIM key rotation",
        "Add a new DKIM key under a new selector. Publish its record (domain show); the next verify that "
        "finds it makes it the signing key and retires the old one, so no mail goes out unsigned.",
    )
    _domain_arguments(rotate)
    rotate.set_defaults(handler=rotate_key)

    remove = add_parser(commands, "remove", "remove a sending domain and its DKIM keys")
    _domain_arguments(remove)
    remove.set_defaults(handler=remove_domain)


def _register_add(commands: Groups[argparse.ArgumentParser]) -> None:
    add = add_parser(
        commands,
        "add",
        "add a sending domain (prints the DNS records to publish)",
        "Add a sending domain to a tenant, with an RSA-2048 DKIM key (and an Ed25519 one with --ed25519), "
        "and print the DNS records to publish: SPF, DKIM, DMARC, the return path's MX and SPF, and MX when "
        "the tenant receives mail there. A domain any tenant already has is refused.",
    )
    add_tenant_argument(add)
    add.add_argument("domain", help="the domain of the From addresses, e.g. acme.example")
    add.add_argument("--return-path-domain", metavar="DOMAIN", help=_RETURN_PATH_HELP)
    add.add_argument(
        "--signer",
        choices=SIGNERS,
        help="who signs: petrel (its own keys), or mailu (the tenant's MailU signs; Petrel checks the "
        "published key) (default: petrel)",
    )
    add.add_argument("--selector", help="the DKIM selector (required with --signer mailu; default: one is generated)")
    add.add_argument("--ed25519", action="store_true", help="also sign with an Ed25519 key (RFC 8463)")
    add.add_argument(
        "--spf",
        action="append",
        metavar="MECH",
        help="an SPF mechanism authorizing the tenant's MailU (include:x, a:host, ip4:cidr, ...); repeat "
        "for several (default: a:<host> of each of the tenant's SMTP servers)",
    )
    add.add_argument(
        "--mx",
        action="append",
        metavar="HOST",
        help="a MailU host receiving for the return-path domain; repeat for several (default: the SMTP servers' hosts)",
    )
    add.add_argument(
        "--receives",
        action="store_true",
        default=None,
        help="the tenant receives mail at the domain itself: ask for its MX too (default: when it has a mailbox there)",
    )
    add.add_argument(
        "--dmarc-rua", metavar="URI", help="where DMARC aggregate reports go (default: mailto:dmarc@<domain>)"
    )
    add.set_defaults(handler=add_domain)


def _register_update(commands: Groups[argparse.ArgumentParser]) -> None:
    update = add_parser(
        commands,
        "update",
        "change a domain's return path, SPF, MX, receiving or DMARC reports",
        "Change a sending domain: only the options given change. The records are recomputed and printed; "
        "when a required record is new or changed, mail from the domain stops (status pending) until it is "
        "published and `domain verify` finds it. DKIM keys are not changed here (domain rotate).",
    )
    _domain_arguments(update)
    update.add_argument("--return-path-domain", metavar="DOMAIN", help=_RETURN_PATH_HELP)
    update.add_argument(
        "--spf",
        action="append",
        metavar="MECH",
        help="an SPF mechanism authorizing the tenant's MailU (include:x, a:host, ip4:cidr, ...); repeat for "
        "several: they replace the current ones",
    )
    update.add_argument(
        "--mx",
        action="append",
        metavar="HOST",
        help="a MailU host receiving for the return-path domain; repeat for several: they replace the current ones",
    )
    update.add_argument(
        "--receives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the tenant receives mail at the domain itself (an MX record is asked for)",
    )
    update.add_argument("--dmarc-rua", metavar="URI", help="where DMARC aggregate reports go")
    update.set_defaults(handler=update_domain)


def _domain_arguments(parser: argparse.ArgumentParser) -> None:
    add_tenant_argument(parser)
    parser.add_argument("domain", help="a domain of the tenant (domain list)")


def domain_path(tenant_id: str, domain: str) -> str:
    return f"{tenant_path(tenant_id)}/domains/{segment(domain.strip().lower())}"


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body: the domain, and only the options given (the API's defaults otherwise)."""
    body: dict[str, Any] = {"domain": args.domain}
    for name in ("return_path_domain", "signer", "selector", "spf", "mx", "receives", "dmarc_rua"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.ed25519:
        body["ed25519"] = True
    return body


def update_body(args: argparse.Namespace) -> dict[str, Any]:
    """The PATCH body: only the options given."""
    fields = ("return_path_domain", "spf", "mx", "receives", "dmarc_rua")
    return {name: getattr(args, name) for name in fields if getattr(args, name) is not None}


def _record_row(record: dict[str, Any]) -> dict[str, Any]:
    found = record.get("found") or []
    detail = record.get("detail") or ("found: " + " | ".join(found) if found else None)
    return {**record, "detail": detail}


def show(context: Context, view: dict[str, Any]) -> None:
    """A domain: one summary row, then the records to publish (or the view itself with --json)."""
    if context.output.as_json:
        context.output.json(view)
        return
    context.output.record(view, COLUMNS)
    context.output.line("")
    context.output.rows([_record_row(record) for record in view.get("records") or []], RECORD_COLUMNS)


def add_domain(args: argparse.Namespace, context: Context) -> int:
    view = context.client.post(f"{tenant_path(args.tenant)}/domains", create_body(args))
    show(context, view)
    context.output.note(
        f"publish these records, then: petrel --env {context.env} domain verify {args.tenant} {view['domain']}"
    )
    return 0


def list_domains(args: argparse.Namespace, context: Context) -> int:
    answer = context.client.get(f"{tenant_path(args.tenant)}/domains")
    context.output.rows(answer["domains"], COLUMNS)
    return 0


def show_domain(args: argparse.Namespace, context: Context) -> int:
    show(context, context.client.get(domain_path(args.tenant, args.domain)))
    return 0


def update_domain(args: argparse.Namespace, context: Context) -> int:
    body = update_body(args)
    if not body:
        raise CliError(
            "nothing to change: give --return-path-domain, --spf, --mx, --receives/--no-receives or --dmarc-rua"
        )
    view = context.client.patch(domain_path(args.tenant, args.domain), body)
    show(context, view)
    if view.get("status") == "pending":
        context.output.note(
            f"publish the pending records, then: petrel --env {context.env} domain verify "
            f"{args.tenant} {view['domain']}"
        )
    return 0


def verify_domain(args: argparse.Namespace, context: Context) -> int:
    view = context.client.post(f"{domain_path(args.tenant, args.domain)}/verify")
    show(context, view)
    return 0 if view.get("sending_allowed") else 1


def rotate_key(args: argparse.Namespace, context: Context) -> int:
    view = context.client.post(f"{domain_path(args.tenant, args.domain)}/rotate")
    show(context, view)
    context.output.note("publish the new DKIM record (status pending above), then run `domain verify`")
    return 0


def remove_domain(args: argparse.Namespace, context: Context) -> int:
    context.client.delete(domain_path(args.tenant, args.domain))
    if context.output.as_json:
        context.output.json({"domain": args.domain.strip().lower(), "result": "removed"})
    else:
        context.output.line(f"{args.domain.strip().lower()}: removed (and its DKIM keys)")
    return 0
