"""`petrel key create|list|revoke`: a tenant's API keys (shown once, stored only as a hash), through the admin API."""

from __future__ import annotations

import argparse
from typing import Any

from cli.admin.tenant import tenant_path
from cli.client import segment
from cli.command import Context, Groups, add_groups, add_parser, add_tenant_argument
from petrel.models.records import SCOPES

COLUMNS = ("key_id", "prefix", "name", "scopes", "created_at", "revoked_at")


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "key", "API keys"), "key commands")

    create = add_parser(
        commands,
        "create",
        "mint an API key (shown once)",
        "Mint an API key for a tenant. The key is printed once and stored only as a SHA-256 hash: keep it "
        f"now. Its scopes are the routes it may call ({', '.join(SCOPES)}); by default, all of them.",
    )
    add_tenant_argument(create)
    create.add_argument("--name", default="", help="a label for people, e.g. production (default: none)")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=SCOPES,
        metavar="SCOPE",
        help=f"a scope the key has; repeat for several ({', '.join(SCOPES)}; default: all)",
    )
    create.set_defaults(handler=create_key)

    listing = add_parser(commands, "list", "list a tenant's keys (never the keys themselves)")
    add_tenant_argument(listing)
    listing.add_argument("--prefix", help="only the key with this prefix (ptl_..., the start of the key)")
    listing.set_defaults(handler=list_keys)

    revoke = add_parser(
        commands,
        "revoke",
        "revoke a key",
        "Revoke an API key. API Gateway may still accept it for up to its authorizer cache TTL (60 s).",
    )
    add_tenant_argument(revoke)
    revoke.add_argument("key_id", help="the key's id (key list)")
    revoke.set_defaults(handler=revoke_key)


def _row(key: dict[str, Any]) -> dict[str, Any]:
    return {**key, "scopes": ",".join(key.get("scopes") or ())}


def create_key(args: argparse.Namespace, context: Context) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.scopes:
        body["scopes"] = list(dict.fromkeys(args.scopes))
    minted = context.client.post(f"{tenant_path(args.tenant)}/keys", body)
    if context.output.as_json:
        context.output.json(minted)
    else:
        context.output.record(_row(minted), ("key_id", "api_key", "scopes"))
    context.output.note("Store the key now: it is shown once and kept only as a hash.")
    return 0


def list_keys(args: argparse.Namespace, context: Context) -> int:
    answer = context.client.get(f"{tenant_path(args.tenant)}/keys", {"prefix": args.prefix})
    keys = answer["keys"]
    context.output.rows(keys if context.output.as_json else [_row(key) for key in keys], COLUMNS)
    return 0


def revoke_key(args: argparse.Namespace, context: Context) -> int:
    answer = context.client.delete(f"{tenant_path(args.tenant)}/keys/{segment(args.key_id)}")
    if context.output.as_json:
        context.output.json(answer or {"key_id": args.key_id})
    else:
        context.output.line(f"revoked {args.key_id} (API Gateway may accept it for up to its cache TTL, 60 s)")
    return 0
