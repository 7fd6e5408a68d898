"""SPF, DKIM and DMARC records: what a sending domain must publish, and whether what DNS holds is right.

Pure: no sockets. The checks that follow SPF `include:`s take a `fetch` callable (a name's TXT
records); services/domains.py hands them the DnsResolver port. A fetch that raises (DnsLookupError)
is not caught here: an unknown record is the caller's to report as pending, never as wrong.

The values are the ones the tenant copies into their zone, exactly:
- SPF TXT at the domain (and at the return-path domain when it differs): `v=spf1 <mechanisms> ~all`;
- DKIM TXT at `<selector>._domainkey.<domain>`: `v=DKIM1; k=rsa; p=<base64>` (k=ed25519, RFC 8463);
- DMARC TXT at `_dmarc.<domain>`: `v=DMARC1; p=quarantine; rua=<rua>; adkim=r; aspf=r`;
- MX at the return-path domain (VERP bounces come back there), and at the domain when it receives.
Required before mail may go out: both SPF records and each active DKIM key's record.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from petrel.models.records import CheckStatus, DkimSigner, DnsRecordCheck, SendingDomain

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: more DNS-querying terms than this is a permerror
MAX_INCLUDE_DEPTH = 10  # how deep includes are followed (a loop ends here as well)
MX_PREFERENCE = 10
DMARC_POLICY = "quarantine"
# SPF terms that cost a DNS lookup (RFC 7208 4.6.4); `include` and `redirect` are followed as well.
_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NAME_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")  # any DNS name (`_spf.provider.test`)
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

Fetch = Callable[[str], list[str]]


class RecordError(ValueError):
    """A value given for a record (a domain, an SPF mechanism, a selector) that cannot be published."""


@dataclass(frozen=True)
class Finding:
    """What a lookup found for one expected record."""

    status: CheckStatus
    found: tuple[str, ...] = ()
    detail: str | None = None


# -- names and values -----------------------------------------------------------------------------


def check_hostname(name: str, *, underscores: bool = False) -> str:
    """`name` lower-cased without a trailing dot, if it is a DNS host name of two labels or more
    (`underscores`: any DNS name, as an SPF include's target may be)."""
    host = name.strip().lower().rstrip(".")
    labels = host.split(".")
    pattern = _NAME_LABEL if underscores else _LABEL
    if len(host) > 253 or len(labels) < 2 or not all(pattern.match(label) for label in labels):
        raise RecordError(f"{name!r} is not a domain name")
    if labels[-1].isdigit():
        raise RecordError(f"{name!r} is not a domain name")
    return host


def check_selector(selector: str) -> str:
    """A DKIM selector: one DNS label (lower case)."""
    value = selector.strip().lower()
    if not _SELECTOR.match(value):
        raise RecordError(f"{selector!r} is not a DKIM selector (one DNS label: letters, digits, hyphens)")
    return value


def check_spf_mechanism(mechanism: str) -> str:
    """One mechanism a tenant may ask for: `include:<domain>`, `a`, `a:<host>`, `mx`, `mx:<host>`,
    `ip4:<address or network>`, `ip6:<address or network>` (normalized; anything else is refused)."""
    term = mechanism.strip()
    name, _, arg = term.partition(":")
    name = name.lower()
    if name in ("a", "mx") and not arg:
        return name
    if name in ("include", "a", "mx") and arg:
        return f"{name}:{check_hostname(arg, underscores=name == 'include')}"
    if name in ("ip4", "ip6") and arg:
        try:
            network = ipaddress.ip_network(arg, strict=False)
        except ValueError as exc:
            raise RecordError(f"{mechanism!r}: {arg!r} is not an IP address or network") from exc
        if network.version != (4 if name == "ip4" else 6):
            raise RecordError(f"{mechanism!r}: not an IPv{name[-1]} address")
        single = network.num_addresses == 1 and "/" not in arg
        return f"{name}:{network.network_address if single else network}"
    raise RecordError(f"{mechanism!r} is not an SPF mechanism Petrel publishes (include:, a, a:, mx, ip4:, ip6:)")


def spf_value(mechanisms: Iterable[str]) -> str:
    return " ".join(["v=spf1", *mechanisms, "~all"])


def dmarc_value(rua: str) -> str:
    return f"v=DMARC1; p={DMARC_POLICY}; rua={rua}; adkim=r; aspf=r"


def dkim_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dkim_value(algorithm: str, public_key: str) -> str:
    return f"v=DKIM1; k={algorithm}; p={public_key}"


def mx_value(host: str) -> str:
    return f"{MX_PREFERENCE} {host}."


def expected_records(domain: SendingDomain) -> tuple[DnsRecordCheck, ...]:
    """Every record the domain needs, each `pending` (services/domains.py carries the last check's
    result over). Retired DKIM keys stay listed, not required, until they are dropped."""
    name, bounce = domain.domain, domain.return_path_domain
    records = [DnsRecordCheck(purpose="spf", type="TXT", name=name, value=spf_value(domain.spf), required=True)]
    for key in domain.keys:
        if domain.signer is DkimSigner.MAILU and not key.public_key:
            value = dkim_value(key.algorithm, "<the public key your MailU shows for this selector>")
        else:
            value = dkim_value(key.algorithm, key.public_key)
        records.append(
            DnsRecordCheck(
                purpose="dkim",
                type="TXT",
                name=dkim_name(key.selector, name),
                value=value,
                selector=key.selector,
                required=key.state == "active",
            )
        )
    if domain.dmarc_rua:
        records.append(
            DnsRecordCheck(purpose="dmarc", type="TXT", name=f"_dmarc.{name}", value=dmarc_value(domain.dmarc_rua))
        )
    records += [DnsRecordCheck(purpose="return_path_mx", type="MX", name=bounce, value=mx_value(h)) for h in domain.mx]
    if bounce != name:
        records.append(
            DnsRecordCheck(
                purpose="return_path_spf", type="TXT", name=bounce, value=spf_value(domain.spf), required=True
            )
        )
        if domain.receives:
            records += [DnsRecordCheck(purpose="mx", type="MX", name=name, value=mx_value(h)) for h in domain.mx]
    return tuple(records)


def describe(record: DnsRecordCheck) -> str:
    """How a problem detail names a record: `the SPF record (TXT acme.test)`."""
    what = {
        "spf": "SPF",
        "return_path_spf": "return-path SPF",
        "dkim": "DKIM",
        "dmarc": "DMARC",
        "return_path_mx": "return-path MX",
        "mx": "MX",
    }[record.purpose]
    return f"the {what} record ({record.type} {record.name})"


def unverified_text(record: DnsRecordCheck) -> str:
    """`the SPF record (TXT acme.test) is missing`: a required record as a refusal names it."""
    state = {"missing": "missing", "wrong": "wrong", "pending": "not verified yet"}.get(record.status, record.status)
    text = f"{describe(record)} is {state}"
    return f"{text} ({record.detail})" if record.detail and record.status == "wrong" else text


# -- tag lists (DKIM, DMARC) ---------------------------------------------------------------------------


def tags(value: str) -> dict[str, str]:
    """A tag=value list (RFC 6376 3.2): names lower-cased, values with folding whitespace removed for
    `p` (a DKIM key may be split into several strings with spaces between)."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        name, eq, tag_value = part.partition("=")
        if not eq:
            continue
        key = name.strip().lower()
        out[key] = re.sub(r"\s+", "", tag_value) if key == "p" else tag_value.strip()
    return out


def dkim_public_key(value: str) -> str | None:
    """The `p=` of a DKIM key record, or None when `value` is not one (or is a revoked key: `p=`)."""
    found = tags(value)
    if found.get("v", "DKIM1") != "DKIM1" or not found.get("p"):
        return None
    try:
        base64.b64decode(found["p"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return found["p"]


# -- checks --------------------------------------------------------------------------------------------


def check_dkim(texts: list[str], public_key: str | None) -> Finding:
    """The DKIM record at a selector: `public_key` None accepts any valid key (a MailU signer's)."""
    keys = [k for k in (dkim_public_key(t) for t in texts) if k]
    if not texts:
        return Finding("missing", detail="no TXT record at this name")
    if public_key is None:
        if keys:
            return Finding("verified", found=(keys[0],))
        return Finding("wrong", found=tuple(texts), detail="no valid DKIM key record (v=DKIM1; k=...; p=...)")
    if public_key in keys:
        return Finding("verified")
    return Finding("wrong", found=tuple(texts), detail="the DKIM record holds another key than this selector's")


def check_dmarc(texts: list[str]) -> Finding:
    records = [t for t in texts if t.strip().upper().startswith("V=DMARC1")]
    if not records:
        return Finding("missing", detail="no DMARC record at this name")
    if len(records) > 1:
        return Finding("wrong", found=tuple(records), detail="more than one DMARC record: receivers apply neither")
    policy = tags(records[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Finding("wrong", found=tuple(records), detail="the DMARC record has no valid policy (p=)")
    if policy == "none":
        return Finding(
            "warning",
            found=tuple(records),
            detail="p=none only monitors: receivers still deliver mail that fails DMARC (use quarantine or reject)",
        )
    return Finding("verified")


def check_mx(found: list[tuple[int, str]], host: str) -> Finding:
    if not found:
        return Finding("missing", detail="no MX record at this name")
    if any(h == host for _, h in found):
        return Finding("verified")
    return Finding("wrong", found=tuple(f"{p} {h}." for p, h in found), detail=f"no MX record names {host}")


def is_spf(text: str) -> bool:
    lowered = text.strip().lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def spf_terms(text: str) -> list[str]:
    return text.split()[1:]


def _mechanism(term: str) -> tuple[str, str, str]:
    """(qualifier, name, argument) of a term; a modifier has name `redirect`, `exp`, ... and `=`."""
    qualifier = term[0] if term[:1] in "+-~?" else ""
    rest = term[len(qualifier) :]
    if "=" in rest and ":" not in rest.split("=", 1)[0]:
        name, _, arg = rest.partition("=")
        return qualifier, name.lower(), arg
    name, _, arg = rest.partition(":")
    return qualifier, name.lower(), arg


def _normal(term: str) -> str | None:
    """A mechanism without its `+` qualifier, normalized like check_spf_mechanism (None: not one)."""
    qualifier, name, _ = _mechanism(term)
    if qualifier not in ("", "+"):
        return None
    try:
        return check_spf_mechanism(term.lstrip("+"))
    except RecordError:
        return name if name in ("a", "mx") else None


def count_spf_lookups(text: str, fetch: Fetch, depth: int = 0) -> int:
    """The DNS-querying terms of an SPF record, counted through its includes and redirect (RFC 7208
    4.6.4). An include whose record cannot be found counts as itself."""
    count = 0
    for term in spf_terms(text):
        _, name, arg = _mechanism(term)
        if name not in _LOOKUP_TERMS:
            continue
        count += 1
        if name in ("include", "redirect") and arg and depth < MAX_INCLUDE_DEPTH:
            target = next((t for t in fetch(arg.lower().rstrip(".")) if is_spf(t)), None)
            if target is not None:
                count += count_spf_lookups(target, fetch, depth + 1)
        if count > SPF_LOOKUP_LIMIT:
            return count
    return count


def _authorized(text: str, fetch: Fetch, depth: int = 0) -> set[str]:
    """The mechanisms a record passes mail for, directly or through its includes and redirect."""
    found: set[str] = set()
    for term in spf_terms(text):
        _, name, arg = _mechanism(term)
        normal = _normal(term)
        if normal is not None:
            found.add(normal)
        if name in ("include", "redirect") and arg and depth < MAX_INCLUDE_DEPTH:
            target = next((t for t in fetch(arg.lower().rstrip(".")) if is_spf(t)), None)
            if target is not None:
                found |= _authorized(target, fetch, depth + 1)
    return found


def _passes_all(text: str) -> bool:
    return any(_mechanism(term)[1] == "all" and _mechanism(term)[0] in ("", "+") for term in spf_terms(text))


def check_spf(texts: list[str], mechanisms: tuple[str, ...], fetch: Fetch) -> Finding:
    """The SPF record at a name: it must authorize each of `mechanisms` (directly or through an
    include), must not pass everyone (`+all`), should be the only one and stay within ten lookups."""
    records = [t for t in texts if is_spf(t)]
    if not records:
        return Finding("missing", detail="no SPF record (v=spf1 ...) at this name")
    if len(records) > 1:
        return Finding(
            "warning",
            found=tuple(records),
            detail="more than one SPF record at this name: receivers treat it as permerror; merge them into one",
        )
    record = records[0]
    if _passes_all(record):
        return Finding("wrong", found=(record,), detail="+all authorizes every server on the internet")
    authorized = _authorized(record, fetch)
    absent = [m for m in mechanisms if m not in authorized]
    if absent:
        return Finding("wrong", found=(record,), detail=f"the SPF record does not authorize {', '.join(absent)}")
    lookups = count_spf_lookups(record, fetch)
    if lookups > SPF_LOOKUP_LIMIT:
        return Finding(
            "warning",
            found=(record,),
            detail=f"the SPF record needs more than {SPF_LOOKUP_LIMIT} DNS lookups ({lookups} counted): "
            "receivers treat it as permerror",
        )
    return Finding("verified")
