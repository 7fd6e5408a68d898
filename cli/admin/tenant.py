"""`petrel tenant create|list|set`: tenants and their settings."""

from __future__ import annotations

import argparse
from typing import Any

from cli.command import Context, Groups, add_groups, add_parser
from petrel.models.records import Tenant
from petrel.services import tenants as admin

COLUMNS = ("tenant_id", "name", "max_message_bytes", "max_age_hours", "created_at")


def _default(field: str) -> Any:
    return Tenant.model_fields[field].default


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "tenant", "tenants and their settings"), "tenant commands")

    create = add_parser(commands, "create", "create a tenant (prints its id)")
    create.add_argument("name", help="a name for people to read")
    _settings_arguments(create, defaults=True)
    create.set_defaults(handler=create_tenant)

    add_parser(commands, "list", "list tenants").set_defaults(handler=list_tenants)

    change = add_parser(
        commands,
        "set",
        "change a tenant's settings",
        "Change some settings of a tenant; those not given stay as they are. Send workers see a change "
        "once their configuration cache expires (about a minute).",
    )
    change.add_argument("tenant", help="the tenant id (tn_...)")
    change.add_argument("--name", help="a new name")
    _settings_arguments(change, defaults=False)
    change.set_defaults(handler=set_tenant)


def _settings_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    size, hours = _default("max_message_bytes"), _default("max_age_hours")
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        metavar="BYTES",
        help=f"largest message accepted, encoded, attachments included ({admin.MIN_MESSAGE_BYTES}-"
        f"{admin.MAX_MESSAGE_BYTES})" + (f" (default: {size}, 25 MiB)" if defaults else ""),
    )
    parser.add_argument(
        "--max-age-hours",
        type=int,
        metavar="HOURS",
        help="how long a message is retried before it fails as expired, at most the environment's "
        "max_message_age_hours" + (f" (default: {hours})" if defaults else ""),
    )


def create_tenant(args: argparse.Namespace, context: Context) -> int:
    tenant = admin.create_tenant(context.admin, args.name, args.max_message_bytes, max_age_hours=args.max_age_hours)
    context.output.record(tenant.model_dump(mode="json"), COLUMNS)
    return 0


def list_tenants(args: argparse.Namespace, context: Context) -> int:
    tenants = context.admin.tenants.list_tenants()
    context.output.rows([tenant.model_dump(mode="json") for tenant in tenants], COLUMNS)
    return 0


def set_tenant(args: argparse.Namespace, context: Context) -> int:
    settings = admin.TenantSettings(
        name=args.name, max_message_bytes=args.max_message_bytes, max_age_hours=args.max_age_hours
    )
    tenant = admin.update_tenant(context.admin, args.tenant, settings)
    context.output.record(tenant.model_dump(mode="json"), COLUMNS)
    return 0
