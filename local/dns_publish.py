"""A sending domain's DNS records (what `POST /v1/domains` answers, `SendingDomain.records`) written into
the local DNS server, as a tenant would publish them at its DNS host: used by `make run` for the demo
domain and by `petrel --env local dns publish <domain>`.

Records that share a name and a type are one RRset (two MX hosts of the return-path domain); each RRset
replaces what the zone had there, so publishing twice is the same as once. The zones added are the
domain's and its return-path domain's, nothing else.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from petrel.models.records import DnsRecordCheck, SendingDomain

PURPOSES = ("spf", "dkim", "dmarc", "return_path_mx", "return_path_spf", "mx")


class ZonePublisher(Protocol):
    """What publishing needs of a DNS server (local.knot.KnotClient, or a test's fake)."""

    def add_zone(self, name: str) -> bool: ...

    def publish_all(self, records: Sequence[tuple[str, str, Sequence[str]]]) -> None: ...


@dataclass(frozen=True)
class PublishedRRset:
    """One RRset written: its owner name, type, values and the purposes of the records it carries."""

    name: str
    type: str
    values: tuple[str, ...]
    purposes: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    """A record left out, and why (`--without`, or a MailU key whose public half Petrel does not know)."""

    record: DnsRecordCheck
    reason: str


@dataclass(frozen=True)
class PublishPlan:
    zones: tuple[str, ...]
    rrsets: tuple[PublishedRRset, ...]
    skipped: tuple[Skipped, ...]


def _unknown_mailu_key(domain: SendingDomain, record: DnsRecordCheck) -> bool:
    """A MailU-signed domain's DKIM record before its public key is known holds a placeholder, not a key."""
    from petrel.models.records import DkimSigner

    if record.purpose != "dkim" or domain.signer is not DkimSigner.MAILU:
        return False
    key = next((k for k in domain.keys if k.selector == record.selector), None)
    return key is None or not key.public_key


def plan(domain: SendingDomain, without: Collection[str] = ()) -> PublishPlan:
    """The zones to add and the RRsets to write for `domain`, leaving out the purposes in `without`."""
    unknown = sorted(set(without) - set(PURPOSES))
    if unknown:
        raise ValueError(f"unknown record purpose {', '.join(unknown)} (one of {', '.join(PURPOSES)})")
    grouped: dict[tuple[str, str], list[DnsRecordCheck]] = {}
    skipped: list[Skipped] = []
    for record in domain.records:
        if record.purpose in without:
            skipped.append(Skipped(record, f"--without {record.purpose}"))
        elif _unknown_mailu_key(domain, record):
            skipped.append(Skipped(record, "MailU signs: publish the key MailU shows for this selector"))
        else:
            grouped.setdefault((record.name.lower().rstrip("."), record.type), []).append(record)
    rrsets = tuple(
        PublishedRRset(
            name=name,
            type=rtype,
            values=tuple(dict.fromkeys(r.value for r in records)),
            purposes=tuple(dict.fromkeys(r.purpose for r in records)),
        )
        for (name, rtype), records in grouped.items()
    )
    zones = tuple(dict.fromkeys(z.lower().rstrip(".") for z in (domain.domain, domain.return_path_domain)))
    return PublishPlan(zones=zones, rrsets=rrsets, skipped=tuple(skipped))


def publish_domain(server: ZonePublisher, domain: SendingDomain, without: Collection[str] = ()) -> PublishPlan:
    """Add the domain's zones to `server` and write its records there; what was written (and left out)."""
    planned = plan(domain, without)
    for zone in planned.zones:
        server.add_zone(zone)
    if planned.rrsets:
        server.publish_all([(rrset.name, rrset.type, list(rrset.values)) for rrset in planned.rrsets])
    return planned
