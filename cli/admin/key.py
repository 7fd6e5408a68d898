"""`petrel key create|list|revoke`: a tenant's API keys (shown once, stored only as a hash)."""

from __future__ import annotations

import argparse

from cli.command import Context, Groups, add_groups, add_parser
from petrel.services import tenants as admin

COLUMNS = ("key_id", "prefix", "name", "scopes", "created_at", "revoked_at")


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "key", "API keys"), "key commands")

    create = add_parser(
        commands,
        "create",
        "mint an API key (shown once)",
        "Mint an API key for a tenant. The key is printed once and stored only as a SHA-256 hash: keep it now.",
    )
    create.add_argument("tenant", help="the tenant id (tn_...)")
    create.add_argument("--name", default="", help="a label for people, e.g. production (default: none)")
    create.set_defaults(handler=create_key)

    listing = add_parser(commands, "list", "list a tenant's keys (never the keys themselves)")
    listing.add_argument("tenant", help="the tenant id (tn_...)")
    listing.set_defaults(handler=list_keys)

    revoke = add_parser(
        commands,
        "revoke",
        "revoke a key",
        "Revoke an API key. API Gateway may still accept it for up to its authorizer cache TTL (60 s).",
    )
    revoke.add_argument("tenant", help="the tenant id (tn_...)")
    revoke.add_argument("key_id", help="the key's id (key list)")
    revoke.set_defaults(handler=revoke_key)


def create_key(args: argparse.Namespace, context: Context) -> int:
    minted = admin.create_api_key(context.admin, args.tenant, args.name)
    context.output.record({"key_id": minted.key.key_id, "api_key": minted.secret}, ("key_id", "api_key"))
    context.output.note("Store the key now: it is shown once and kept only as a hash.")
    return 0


def list_keys(args: argparse.Namespace, context: Context) -> int:
    admin.get_tenant(context.admin, args.tenant)
    keys = context.admin.tenants.list_api_keys(args.tenant)
    rows = []
    for key in keys:
        row = key.model_dump(mode="json", exclude={"key_hash"})
        row["scopes"] = ",".join(key.scopes)
        rows.append(row)
    context.output.rows(rows, COLUMNS)
    return 0


def revoke_key(args: argparse.Namespace, context: Context) -> int:
    admin.revoke_api_key(context.admin, args.tenant, args.key_id)
    if context.output.as_json:
        context.output.json({"key_id": args.key_id, "revoked": True})
    else:
        context.output.line(f"revoked {args.key_id} (API Gateway may accept it for up to its cache TTL, 60 s)")
    return 0
