"""`petrel migrate listing`: the data step of a release that changes how stored items are keyed
(petrel.resources says when a release needs it). Works on the environment's tables directly, as `dlq`
does on its queues."""

from __future__ import annotations

import argparse

from cli.command import Context, Groups, add_groups, add_parser


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "migrate", "data migrations between releases"), "migrate commands")
    listing = add_parser(
        commands,
        "listing",
        "give messages stored before by_tenant_v3 their listing keys",
        "Scan the messages table for message items stored before the listing index by_tenant_v3 (they "
        "carry created_key but no listed_tenant) and give each its listing keys, so GET /v1/emails and the "
        "sweeper's creation shards find them. Run once after deploying the release that declares "
        "by_tenant_v3, before the one that drops by_tenant_v2. Each write is conditional: safe to run "
        "again, or while mail flows; a second run lists 0.",
    )
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    listing.set_defaults(handler=backfill_listing)


def backfill_listing(args: argparse.Namespace, context: Context) -> int:
    listed = context.services.backfill_listing()
    if context.output.as_json:
        context.output.json({"listed": listed})
    else:
        context.output.line(f"listed {listed} message(s)")
    return 0
