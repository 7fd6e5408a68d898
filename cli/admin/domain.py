"""`petrel domain add|update|list`: a tenant's sending domains and their return-path (bounce) domains."""

from __future__ import annotations

import argparse

from cli.command import Context, Groups, add_groups, add_parser
from petrel.services import tenants as admin

COLUMNS = ("domain", "return_path_domain", "created_at")
_RETURN_PATH_HELP = (
    "the domain of the envelope sender, bounces+<message id>@<this>, whose mailbox receives "
    "the delivery reports (default: the domain itself)"
)


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "domain", "sending domains"), "domain commands")

    add = add_parser(
        commands,
        "add",
        "add a sending domain",
        "Add a sending domain to a tenant. A domain the tenant already has is refused: change it with `domain update`.",
    )
    add.add_argument("tenant", help="the tenant id (tn_...)")
    add.add_argument("domain", help="the domain of the From addresses, e.g. acme.example")
    add.add_argument("--return-path-domain", metavar="DOMAIN", help=_RETURN_PATH_HELP)
    add.set_defaults(handler=add_domain)

    update = add_parser(commands, "update", "change a sending domain's return-path domain")
    update.add_argument("tenant", help="the tenant id (tn_...)")
    update.add_argument("domain", help="a domain the tenant has (domain list)")
    update.add_argument("--return-path-domain", metavar="DOMAIN", required=True, help="the new return-path domain")
    update.set_defaults(handler=update_domain)

    listing = add_parser(commands, "list", "list a tenant's sending domains")
    listing.add_argument("tenant", help="the tenant id (tn_...)")
    listing.set_defaults(handler=list_domains)


def add_domain(args: argparse.Namespace, context: Context) -> int:
    domain = admin.add_domain(context.admin, args.tenant, args.domain, args.return_path_domain)
    context.output.record(domain.model_dump(mode="json"), COLUMNS)
    return 0


def update_domain(args: argparse.Namespace, context: Context) -> int:
    domain = admin.update_domain(context.admin, args.tenant, args.domain, args.return_path_domain)
    context.output.record(domain.model_dump(mode="json"), COLUMNS)
    return 0


def list_domains(args: argparse.Namespace, context: Context) -> int:
    admin.get_tenant(context.admin, args.tenant)
    domains = context.admin.tenants.list_domains(args.tenant)
    context.output.rows([domain.model_dump(mode="json") for domain in domains], COLUMNS)
    return 0
