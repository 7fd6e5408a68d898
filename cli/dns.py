"""`petrel --env local dns publish|show`: the local stack's DNS server (Knot, started by `make run`).

`publish DOMAIN` does locally what a tenant does at its DNS host: it writes the records a sending domain
needs (the ones `POST /v1/domains` answered: SPF, DKIM, DMARC, the return path's MX and SPF, MX) into the
local zones, so that `POST /v1/domains/{domain}/verify` finds them. `show NAME` asks the local server
what it serves. Deployed environments have no such server: these commands refuse any --env but local.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli.command import Context, Groups, add_groups, add_parser
from cli.errors import CliError
from cli.target import LOCAL
from local.dns_publish import PURPOSES, PublishPlan, ZonePublisher, publish_domain

if TYPE_CHECKING:
    import dns.resolver

TYPES = ("TXT", "MX", "SOA", "NS", "A", "AAAA", "CNAME")
COLUMNS = ("name", "type", "purposes", "value")
SHOW_COLUMNS = ("name", "type", "ttl", "value")
NOT_LOCAL = "`petrel dns` works on the local stack only (--env local); publish these records at your DNS host"
NO_DNS = "local.json has no `dns` section: restart the local stack with `make run`"
# Wider values (a 2048-bit DKIM key is ~400 characters) are cut in the table; --json has them whole.
VALUE_WIDTH = 72


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(
        add_parser(
            groups,
            "dns",
            "the local stack's DNS server (publish a domain's records)",
            "The local stack's authoritative DNS server (Knot on a loopback port; local.json `dns`), where "
            "the records of sending domains are published so that verification finds them. --env local only.",
        ),
        "dns commands",
    )
    publish = add_parser(
        commands,
        "publish",
        "write a sending domain's records into the local DNS server",
        "Find the sending domain (whichever tenant has it) and write each record it needs into the local "
        "DNS server: the zones of the domain and of its return-path domain are added if missing, and each "
        "record replaces what was there. Then verify the domain (POST /v1/domains/{domain}/verify, "
        "`petrel domain verify`), or wait for the domain checker.",
    )
    publish.add_argument("domain", help="the sending domain, e.g. acme.test")
    publish.add_argument(
        "--without",
        action="append",
        choices=PURPOSES,
        default=[],
        metavar="PURPOSE",
        help=f"leave out the records of this purpose (repeatable; one of {', '.join(PURPOSES)}), "
        "e.g. to see verification report them missing",
    )
    publish.set_defaults(handler=publish_records)
    show = add_parser(
        commands,
        "show",
        "ask the local DNS server for a name's records",
        "Query the local DNS server for NAME and print each record (a TXT record's character-strings "
        "joined, as SPF and DKIM readers see them).",
    )
    show.add_argument("name", help="the name to look up, e.g. _dmarc.acme.test")
    show.add_argument("--type", default="TXT", type=str.upper, choices=TYPES, help="the record type")
    show.set_defaults(handler=show_records)
    for sub in (publish, show):
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def dns_info(context: Context) -> dict[str, Any]:
    """local.json's `dns` (the local server's address, TSIG key and control socket); refused elsewhere."""
    if context.env != LOCAL:
        raise CliError(NOT_LOCAL)
    state = context.target.state or {}
    info = state.get("dns")
    if not isinstance(info, dict) or "host" not in info or "port" not in info:
        raise CliError(NO_DNS)
    return info


def local_publisher(context: Context) -> ZonePublisher:
    """A client of the running local DNS server (knotc on its control socket, TSIG-signed updates)."""
    from local.knot import KnotClient

    return KnotClient.from_info(dns_info(context))


def publish_records(args: argparse.Namespace, context: Context, publisher: ZonePublisher | None = None) -> int:
    """`dns publish DOMAIN`: find the domain in any tenant, write its records, print what was written."""
    name = str(args.domain).strip().lower().rstrip(".")
    target = publisher or local_publisher(context)
    domain = context.admin.tenants.find_domain(name)
    if domain is None:
        raise CliError(f"no tenant has the sending domain {name} (add it: POST /v1/domains or `petrel domain add`)")
    if not domain.records:
        raise CliError(f"the domain {name} lists no DNS records (it was added before records existed: add it again)")
    try:
        planned = publish_domain(target, domain, without=args.without)
    except RuntimeError as exc:  # local.knot.KnotError: the server is gone, or refused the change
        raise CliError(f"the local DNS server: {str(exc).splitlines()[0]} (is `make run` running?)") from None
    if context.output.as_json:
        context.output.json(_as_json(domain.tenant_id, name, planned))
    else:
        context.output.rows([_row(rrset) for rrset in planned.rrsets], COLUMNS)
        context.output.note(
            f"published {len(planned.rrsets)} record set(s) for {name} (tenant {domain.tenant_id}) in zone(s) "
            f"{', '.join(planned.zones)}; verify with POST /v1/domains/{name}/verify"
        )
    for skipped in planned.skipped:
        record = skipped.record
        context.output.note(f"left out {record.purpose} ({record.type} {record.name}): {skipped.reason}")
    return 0


def _row(rrset: Any) -> dict[str, Any]:
    value = " | ".join(rrset.values)
    shown = value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 3] + "..."
    return {"name": rrset.name, "type": rrset.type, "purposes": ",".join(rrset.purposes), "value": shown}


def _as_json(tenant_id: str, name: str, planned: PublishPlan) -> dict[str, Any]:
    return {
        "domain": name,
        "tenant_id": tenant_id,
        "zones": list(planned.zones),
        "records": [
            {"name": r.name, "type": r.type, "purposes": list(r.purposes), "values": list(r.values)}
            for r in planned.rrsets
        ],
        "skipped": [
            {"purpose": s.record.purpose, "type": s.record.type, "name": s.record.name, "reason": s.reason}
            for s in planned.skipped
        ],
    }


def lookup(resolver: dns.resolver.Resolver, name: str, rtype: str) -> list[dict[str, Any]]:
    """Each record at (`name`, `rtype`) as a row; [] when the name or the type does not exist."""
    import dns.exception
    import dns.resolver
    from dns.rdtypes.ANY.TXT import TXT

    try:
        answer = resolver.resolve(name, rtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.resolver.NoNameservers as exc:
        raise CliError(f"the local DNS server does not serve {name} ({exc})") from None
    except dns.exception.Timeout:
        raise CliError("the local DNS server did not answer: is the local stack running (`make run`)?") from None
    rows: list[dict[str, Any]] = []
    assert answer.rrset is not None
    for rdata in answer.rrset:
        value = b"".join(rdata.strings).decode(errors="replace") if isinstance(rdata, TXT) else rdata.to_text()
        rows.append(
            {
                "name": answer.rrset.name.to_text(omit_final_dot=True),
                "type": rtype,
                "ttl": answer.rrset.ttl,
                "value": value,
            }
        )
    return sorted(rows, key=lambda row: str(row["value"]))


def show_records(args: argparse.Namespace, context: Context, resolver: dns.resolver.Resolver | None = None) -> int:
    """`dns show NAME [--type T]`: what the local server answers; exit 1 when it has nothing there."""
    if resolver is None:
        from local.knot import resolver_at

        info = dns_info(context)
        resolver = resolver_at(str(info["host"]), int(info["port"]))
    rows = lookup(resolver, str(args.name), str(args.type))
    if context.output.as_json:
        context.output.json(rows)
    elif rows:
        context.output.rows(rows, SHOW_COLUMNS)
    else:
        context.output.note(f"no {args.type} record at {args.name}")
    return 0 if rows else 1
