"""Sending domains: creation with DKIM keys, the records to publish, verification, rotation, drift.

Invariants:
- A domain belongs to one tenant (TenantStore.create_domain claims it in the same write).
- A Petrel-signed domain has, at every moment, exactly one active RSA key whose private key is in
  Secrets Manager: secrets are written before the record that names them, a `next` key becomes active
  only once its DNS record is verified (and the old one retired in the same write), and a retired
  key's secret is deleted only after its 7 days, before the record drops it.
- Private keys never leave Secrets Manager: the record keeps only the public half.
- A lookup that got no answer leaves its record `pending` and never moves the domain's status.

- Every change to a stored domain is made on the revision it read, or not at all
  (TenantStore.update_domain): a verify, a rotation, a drift re-check and a delete that overlap
  never undo each other. The loser re-reads and re-applies its change (at most MAX_TRIES times,
  then 409); a rotation whose key another rotation beat, or that finds the domain gone, deletes
  the secret it made (a retry after a conflict reuses it).
- An update (return path, SPF, MX, receives, DMARC rua) recomputes the records: one whose name, type
  and value did not change keeps its last result; when a required one is new or changed, the domain
  is `pending` (mail stops) until a verification finds it (a verified one gets a `domain.dns_error`).
- A domain stored before DKIM keys and records existed (no keys, no records, no claim) is made
  whole by its first verification: keys, records and its claim, as a create would, then verified.

Crash safety: `create_domain` writes the secrets first, then the record; a create that dies between
them leaves an unreferenced secret, which a retried create with the same selector adopts (a
generated selector differs each time: that secret stays orphaned, unused; so it is for a rotation
and a first verification of an old domain). Secrets are written create-only (SecretStore.create_secret),
never replaced: a record's public key is always its secret's. A create finding a live secret at its
name adopts it (`_created_key`); a selector whose secret was deleted less than 7 days ago (its recovery
window) is refused with a 409 naming it when asked for, skipped when generated. A secret is deleted on
a failure only when the record certainly does not name it (a refused write), never on an error whose
outcome is unknown.
`delete_domain` deletes the secrets first, then the record: a retry finishes it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets as random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from petrel.errors import Conflict, InvalidRequest, NotFound
from petrel.mail import dnsauth
from petrel.mail.addresses import AddressError, normalize_domain
from petrel.models.api import CreateDomainRequest, DnsRecordView, DomainEventView, DomainView, UpdateDomainRequest
from petrel.models.records import (
    DkimAlgorithm,
    DkimSigner,
    DnsRecordCheck,
    DomainEvent,
    DomainKey,
    DomainStatus,
    SendingDomain,
    Tenant,
)
from petrel.ports import AlreadyExists, DnsLookupError, RecordNotFound, WriteConflict

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from petrel.observability import Telemetry
    from petrel.ports import Clock, DnsResolver, MailboxStore, SecretStore, TenantStore

RSA_BITS = 2048
RETIRED_KEEP = timedelta(days=7)  # a retired key stays published this long: mail signed with it lands
MAX_EVENTS = 20
MAX_TRIES = 5  # writes of one change refused for a newer revision before the caller gets a 409
_SELECTOR_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def generated_selector(now: datetime) -> str:
    """`ptl` + yyyymm + 4 random characters: one DNS label, and a new one for every key."""
    return f"ptl{now:%Y%m}" + "".join(random.choice(_SELECTOR_ALPHABET) for _ in range(4))


@dataclass(frozen=True)
class DomainDeps:
    tenants: TenantStore
    secrets: SecretStore
    resolver: DnsResolver | None  # None: no lookups here (bootstrapping creates; the API verifies)
    clock: Clock
    secrets_prefix: str  # `<prefix>/tenants/`: a key is at `<secrets_prefix><tenant>/dkim/<domain>/<selector>`
    mailboxes: MailboxStore | None = None  # for `receives`' default (None: the tenant receives nowhere)
    log: Logger | None = None
    new_selector: Callable[[datetime], str] = field(default=generated_selector)


class DomainPorts(Protocol):
    """What DomainDeps is built from: the API's ports (petrel.api.deps.ApiPorts), the admin API's
    container and the domain checker's."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def secrets(self) -> SecretStore: ...
    @property
    def resolver(self) -> DnsResolver: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def secrets_prefix(self) -> str: ...
    @property
    def mailboxes(self) -> MailboxStore: ...
    @property
    def telemetry(self) -> Telemetry: ...


def domain_deps(ports: DomainPorts) -> DomainDeps:
    """The one wiring of the domains service, wherever it runs."""
    return DomainDeps(
        tenants=ports.tenants,
        secrets=ports.secrets,
        resolver=ports.resolver,
        clock=ports.clock,
        secrets_prefix=ports.secrets_prefix,
        mailboxes=ports.mailboxes,
        log=ports.telemetry.logger,
    )


def secret_name(deps: DomainDeps, tenant_id: str, domain: str, selector: str) -> str:
    return f"{deps.secrets_prefix}{tenant_id}/dkim/{domain}/{selector}"


# -- creation --------------------------------------------------------------------------------------


def _invalid(pointer: str, detail: str) -> InvalidRequest:
    return InvalidRequest(detail, errors=[{"pointer": pointer, "detail": detail}])


def _domain_name(value: str, pointer: str) -> str:
    try:
        return dnsauth.check_hostname(normalize_domain(value))
    except (AddressError, dnsauth.RecordError) as exc:
        raise _invalid(pointer, f"{value!r} is not a domain name") from exc


def _host_mechanism(host: str) -> str:
    """The SPF mechanism that authorizes one SMTP server: `a:<host>`, or `ip4:`/`ip6:` for an address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"a:{dnsauth.check_hostname(host)}"
    return f"ip{address.version}:{address}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _server_hosts(deps: DomainDeps, tenant_id: str) -> list[str]:
    hosts = [s.host.lower().rstrip(".") for s in deps.tenants.list_servers(tenant_id) if s.enabled]
    return list(dict.fromkeys(hosts))


def _spf(deps: DomainDeps, tenant_id: str, given: list[str] | None) -> tuple[str, ...]:
    if given:
        try:
            return tuple(dict.fromkeys(dnsauth.check_spf_mechanism(m) for m in given))
        except dnsauth.RecordError as exc:
            raise _invalid("/spf", str(exc)) from exc
    try:
        mechanisms = tuple(dict.fromkeys(_host_mechanism(h) for h in _server_hosts(deps, tenant_id)))
    except dnsauth.RecordError as exc:
        raise _invalid("/spf", f"an SMTP server's host is not a name SPF can authorize: {exc}") from exc
    if not mechanisms:
        raise _invalid("/spf", "the tenant has no SMTP server to authorize: give `spf` mechanisms, or add a server")
    return mechanisms


def _mx(deps: DomainDeps, tenant_id: str, given: list[str] | None) -> tuple[str, ...]:
    if given is not None:
        try:
            return tuple(dict.fromkeys(dnsauth.check_hostname(h) for h in given))
        except dnsauth.RecordError as exc:
            raise _invalid("/mx", str(exc)) from exc
    return tuple(h for h in _server_hosts(deps, tenant_id) if not _is_address(h))


def _receives(deps: DomainDeps, tenant_id: str, name: str, given: bool | None) -> bool:
    if given is not None:
        return given
    if deps.mailboxes is None:
        return False
    return any(m.enabled and m.domain == name for m in deps.mailboxes.list_mailboxes(tenant_id))


def _private_pem(algorithm: DkimAlgorithm) -> str:
    # cryptography loads here, not at import: the API's other routes do not pay for it at cold start
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    key = rsa.generate_private_key(65537, RSA_BITS) if algorithm == "rsa" else ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _key_of(deps: DomainDeps, selector: str, *, algorithm: DkimAlgorithm, name: str, pem: str, state: str) -> DomainKey:
    """The record's half of a key pair: its public half, computed from the private one in secret `name`
    (so a record's public key is always that of the secret it names)."""
    from petrel.mail.dkim import DkimKey

    return DomainKey.model_validate(
        {
            "selector": selector,
            "algorithm": algorithm,
            "secret_name": name,
            "public_key": dnsauth.tags(DkimKey.load(pem).public_record())["p"],
            "state": state,
            "created_at": deps.clock.now(),
        }
    )


def _new_key(
    deps: DomainDeps, tenant_id: str, domain: str, selector: str, *, algorithm: DkimAlgorithm, state: str
) -> DomainKey:
    """A new key pair: the private half stored in Secrets Manager first, create-only (AlreadyExists when
    the name is taken, by a live secret or by one deleted less than 7 days ago: never replaced, so no
    record can end up naming a secret whose private half another request wrote), the public half returned."""
    pem = _private_pem(algorithm)
    name = secret_name(deps, tenant_id, domain, selector)
    deps.secrets.create_secret(name, pem)
    return _key_of(deps, selector, algorithm=algorithm, name=name, pem=pem, state=state)


def _selector_used(selector: str) -> Conflict:
    return Conflict(f"selector {selector} was used for this domain in the last 7 days; choose another or omit it")


def _created_key(
    deps: DomainDeps, tenant_id: str, domain: str, selector: str, *, algorithm: DkimAlgorithm
) -> DomainKey:
    """A create's key under the selector it was given. A live secret already at that name is adopted,
    not replaced: the name is this tenant's, domain's and selector's, and the domain had no record when
    _refuse_taken looked, so the secret is the key of an earlier create that died before its record (its
    orphan) or of a concurrent create (whose record, if it wins, names the same secret and public half).
    Either way the record pairs the secret with its own public half. A name held by a deleted secret
    (a deleted domain's key, in its 7-day recovery window), or by a key of the other algorithm: 409."""
    from petrel.mail.dkim import DkimError, DkimKey

    try:
        return _new_key(deps, tenant_id, domain, selector, algorithm=algorithm, state="active")
    except AlreadyExists:
        pass
    name = secret_name(deps, tenant_id, domain, selector)
    try:
        pem = deps.secrets.get_secret(name)
        loaded = DkimKey.load(pem)
    except (RecordNotFound, DkimError) as exc:  # deleted (or not a key): the name is not usable for 7 days
        raise _selector_used(selector) from exc
    if not loaded.algorithm.startswith(algorithm):
        raise _selector_used(selector)
    return _key_of(deps, selector, algorithm=algorithm, name=name, pem=pem, state="active")


def _fresh_key(deps: DomainDeps, tenant_id: str, domain: str, taken: set[str], *, state: str) -> DomainKey:
    """An RSA key under a generated selector (a rotation's, an old domain's first). A selector the
    domain has, or whose secret name is taken (a deleted key's, or another request's), gives way to
    another generated one: no secret is ever shared or replaced."""
    selector = deps.new_selector(deps.clock.now())
    for _ in range(MAX_TRIES):
        if selector not in taken:
            with contextlib.suppress(AlreadyExists):
                return _new_key(deps, tenant_id, domain, selector, algorithm="rsa", state=state)
        selector = generated_selector(deps.clock.now())
    raise Conflict(f"no free DKIM selector for the domain {domain} after {MAX_TRIES} tries: try again")


def _selector(deps: DomainDeps, request: CreateDomainRequest, signer: DkimSigner) -> str:
    if request.selector is not None:
        try:
            return dnsauth.check_selector(request.selector)
        except dnsauth.RecordError as exc:
            raise _invalid("/selector", str(exc)) from exc
    if signer is DkimSigner.MAILU:
        raise _invalid("/selector", "a MailU-signed domain needs the selector MailU signs with")
    return deps.new_selector(deps.clock.now())


def _refuse_taken(deps: DomainDeps, tenant_id: str, name: str) -> None:
    if deps.tenants.get_domain(tenant_id, name) is not None:
        raise Conflict(f"this tenant has the domain {name} already")
    if deps.tenants.find_domain(name) is not None:
        raise Conflict(f"the domain {name} belongs to another tenant")


def create_domain(deps: DomainDeps, tenant: Tenant, request: CreateDomainRequest) -> SendingDomain:
    """A new sending domain with its keys (private halves in Secrets Manager) and the records to publish."""
    tenant_id = tenant.tenant_id
    name = _domain_name(request.domain, "/domain")
    bounce = _domain_name(request.return_path_domain, "/return_path_domain") if request.return_path_domain else name
    signer = DkimSigner(request.signer)
    selector = _selector(deps, request, signer)
    spf, mx = _spf(deps, tenant_id, request.spf), _mx(deps, tenant_id, request.mx)
    receives = _receives(deps, tenant_id, name, request.receives)
    _refuse_taken(deps, tenant_id, name)
    now = deps.clock.now()
    if signer is DkimSigner.PETREL:
        keys = [_created_key(deps, tenant_id, name, selector, algorithm="rsa")]
        if request.ed25519:
            keys.append(_created_key(deps, tenant_id, name, f"{selector}e", algorithm="ed25519"))
    else:
        keys = [DomainKey(selector=selector, algorithm="ed25519" if request.ed25519 else "rsa", created_at=now)]
    domain = SendingDomain(
        tenant_id=tenant_id,
        domain=name,
        return_path_domain=bounce,
        created_at=now,
        signer=signer,
        keys=tuple(keys),
        spf=spf,
        mx=mx,
        receives=receives,
        dmarc_rua=request.dmarc_rua or f"mailto:dmarc@{name}",
    )
    domain = domain.model_copy(update={"records": dnsauth.expected_records(domain)})
    try:
        deps.tenants.create_domain(domain)
    except AlreadyExists as exc:  # a concurrent create won: its keys are the domain's; ours go
        for key in keys:
            if key.secret_name and key.secret_name != _existing_secret(deps, tenant_id, name, key.selector):
                with contextlib.suppress(RecordNotFound):
                    deps.secrets.delete_secret(key.secret_name)
        raise Conflict(f"the domain {name} has been added already") from exc
    _log(deps, "domain created", domain)
    return domain


def _existing_secret(deps: DomainDeps, tenant_id: str, name: str, selector: str) -> str | None:
    """The secret of the winner's key with this selector (the same name: it must stay)."""
    existing = deps.tenants.get_domain(tenant_id, name)
    if existing is None:
        return None
    return next((k.secret_name for k in existing.keys if k.selector == selector), None)


# -- reading and deleting ----------------------------------------------------------------------------


def get_domain(deps: DomainDeps, tenant_id: str, name: str) -> SendingDomain:
    """The tenant's domain; 404 for one it does not have (another tenant's included: never revealed)."""
    found = deps.tenants.get_domain(tenant_id, name.lower().rstrip("."))
    if found is None:
        raise NotFound(f"no sending domain {name}")
    return found


def list_domains(deps: DomainDeps, tenant_id: str) -> list[SendingDomain]:
    return deps.tenants.list_domains(tenant_id)


def _drop_secrets(deps: DomainDeps, keys: tuple[DomainKey, ...]) -> None:
    for key in keys:
        if key.secret_name:
            with contextlib.suppress(RecordNotFound):
                deps.secrets.delete_secret(key.secret_name)


def _drop_unless_named(deps: DomainDeps, key: DomainKey, tenant_id: str, name: str) -> None:
    """Delete a new key's secret after the write that would have named it was refused, unless the
    stored domain names a secret of that name (a key another request made with the same selector)."""
    current = deps.tenants.get_domain(tenant_id, name)
    if current is None or all(k.secret_name != key.secret_name for k in current.keys):
        _drop_secrets(deps, (key,))


def delete_domain(deps: DomainDeps, tenant_id: str, name: str) -> None:
    """Its DKIM secrets first, then the record and its claim (a retry after a crash finishes), on the
    revision whose secrets went: a key a rotation added meanwhile is found on the re-read and goes too."""
    domain = get_domain(deps, tenant_id, name)
    for _ in range(MAX_TRIES):
        _drop_secrets(deps, domain.keys)
        try:
            deps.tenants.delete_domain(tenant_id, domain.domain, expected_revision=domain.revision)
        except WriteConflict:
            domain = _reread(deps, domain)
            continue
        except RecordNotFound as exc:
            raise NotFound(f"no sending domain {name}") from exc
        _log(deps, "domain deleted", domain)
        return
    raise _kept_changing(domain)


# -- writing on the revision read -------------------------------------------------------------------


def _reread(deps: DomainDeps, domain: SendingDomain) -> SendingDomain:
    found = deps.tenants.get_domain(domain.tenant_id, domain.domain)
    if found is None:
        raise NotFound(f"no sending domain {domain.domain}")
    return found


def _kept_changing(domain: SendingDomain) -> Conflict:
    return Conflict(f"the domain {domain.domain} changed {MAX_TRIES} times while this request ran: try again")


def _settle(
    deps: DomainDeps,
    domain: SendingDomain,
    change: Callable[[SendingDomain], SendingDomain | None],
    *,
    claim: bool = False,
) -> tuple[SendingDomain, SendingDomain]:
    """Apply `change` to `domain` and store the result on the revision read. When someone wrote first,
    re-read and apply it again (the change must be a function of the record it is given). `change`
    answering None means there is nothing to write. Returns the revision the change was applied to
    and the one stored. NotFound when the domain is gone; a 409 after MAX_TRIES refused writes."""
    for _ in range(MAX_TRIES):
        updated = change(domain)
        if updated is None:
            return domain, domain
        stored = updated.model_copy(update={"revision": domain.revision + 1})
        try:
            deps.tenants.update_domain(stored, domain.revision, claim=claim)
        except WriteConflict:
            domain = _reread(deps, domain)
            continue
        except RecordNotFound as exc:
            raise NotFound(f"no sending domain {domain.domain}") from exc
        return domain, stored
    raise _kept_changing(domain)


# -- verification -------------------------------------------------------------------------------------


def _mx_host(record: DnsRecordCheck) -> str:
    return record.value.split()[-1].rstrip(".").lower()


def _key_for(domain: SendingDomain, selector: str | None) -> DomainKey | None:
    return next((k for k in domain.keys if k.selector == selector), None)


def check_record(deps: DomainDeps, domain: SendingDomain, record: DnsRecordCheck) -> dnsauth.Finding:
    """Look one record up; a lookup without an answer is `pending` ("lookup failed: ...")."""
    resolver = deps.resolver
    if resolver is None:
        return dnsauth.Finding("pending", detail="lookup failed: no DNS resolver is configured here")
    try:
        if record.type == "MX":
            return dnsauth.check_mx(resolver.mx(record.name), _mx_host(record))
        texts = resolver.txt(record.name)
        if record.purpose in ("spf", "return_path_spf"):
            return dnsauth.check_spf(texts, domain.spf, resolver.txt)
        if record.purpose == "dkim":
            key = _key_for(domain, record.selector)
            expected = None if domain.signer is DkimSigner.MAILU or key is None else key.public_key
            return dnsauth.check_dkim(texts, expected)
        return dnsauth.check_dmarc(texts)
    except DnsLookupError as exc:
        return dnsauth.Finding("pending", detail=f"lookup failed: {exc}")


def _identity(record: DnsRecordCheck) -> tuple[str, str, str | None, str]:
    """What makes two checks the same record across recomputations (a MailU DKIM value is learnt)."""
    return (record.purpose, record.name, record.selector, record.value if record.type == "MX" else "")


def _carried(domain: SendingDomain, previous: tuple[DnsRecordCheck, ...]) -> tuple[DnsRecordCheck, ...]:
    """The domain's expected records with each one's last result carried over."""
    last = {_identity(r): r for r in previous}
    out = []
    for expected in dnsauth.expected_records(domain):
        seen = last.get(_identity(expected))
        update = {"status": seen.status, "found": seen.found, "detail": seen.detail} if seen else {}
        out.append(expected.model_copy(update=update))
    return tuple(out)


def _learn_mailu_keys(domain: SendingDomain, checks: dict[str | None, dnsauth.Finding]) -> SendingDomain:
    """A MailU signer's key as DNS publishes it (Petrel never signs with it: it shows the record)."""
    keys = tuple(
        k.model_copy(update={"public_key": checks[k.selector].found[0]})
        if k.selector in checks and checks[k.selector].status == "verified" and checks[k.selector].found
        else k
        for k in domain.keys
    )
    return domain.model_copy(update={"keys": keys})


def _rotated(deps: DomainDeps, domain: SendingDomain, dkim: dict[str | None, dnsauth.Finding]) -> SendingDomain:
    """Promote a `next` RSA key whose record is verified (the active one retires in the same write);
    drop a key retired for longer than RETIRED_KEEP, its secret first."""
    now = deps.clock.now()
    keys = list(domain.keys)
    published = {selector for selector, finding in dkim.items() if finding.status == "verified"}
    ready = next((k for k in keys if k.state == "next" and k.algorithm == "rsa" and k.selector in published), None)
    if ready is not None and domain.signer is DkimSigner.PETREL:
        keys = [
            k.model_copy(update={"state": "retired", "retired_at": now})
            if k.state == "active" and k.algorithm == "rsa"
            else k.model_copy(update={"state": "active"})
            if k is ready
            else k
            for k in keys
        ]
    kept = []
    for key in keys:
        if key.state == "retired" and key.retired_at is not None and now - key.retired_at >= RETIRED_KEEP:
            if key.secret_name:
                with contextlib.suppress(RecordNotFound):
                    deps.secrets.delete_secret(key.secret_name)
            continue
        kept.append(key)
    return domain.model_copy(update={"keys": tuple(kept)})


def _failing(records: tuple[DnsRecordCheck, ...]) -> list[DnsRecordCheck]:
    return [r for r in records if r.required and r.status in ("missing", "wrong")]


def _status(domain: SendingDomain, records: tuple[DnsRecordCheck, ...]) -> DomainStatus:
    """Verified iff every required record is verified (or a warning). A missing or wrong one fails a
    verified domain (a pending one stays pending); a lookup without an answer changes nothing."""
    required = [r for r in records if r.required]
    if required and all(r.status in ("verified", "warning") for r in required):
        return DomainStatus.VERIFIED
    if _failing(records):
        return DomainStatus.FAILED if domain.status is DomainStatus.VERIFIED else domain.status
    return domain.status


def verify_domain(deps: DomainDeps, domain: SendingDomain) -> SendingDomain:
    """Look every record up, settle rotation, and store the domain with its new status and events, on
    the revision read (a conflict re-reads it and looks up again: the answer is as fresh as the write)."""
    return _verify(deps, domain)[1]


def _verify(deps: DomainDeps, domain: SendingDomain) -> tuple[SendingDomain, SendingDomain]:
    before, after = _settle(deps, domain, lambda current: _verified(deps, current))
    if after.status is not before.status:
        _log(deps, "domain status changed", after, before=before.status.value)
    return before, after


def _verified(deps: DomainDeps, domain: SendingDomain) -> SendingDomain:
    """The domain as its records are found now (what verify_domain stores)."""
    now = deps.clock.now()
    results = {_identity(r): check_record(deps, domain, r) for r in domain.records}
    dkim = {r.selector: results[_identity(r)] for r in domain.records if r.purpose == "dkim"}
    checked = tuple(
        r.model_copy(update={"status": f.status, "found": f.found, "detail": f.detail})
        for r, f in ((r, results[_identity(r)]) for r in domain.records)
    )
    updated = domain
    if domain.signer is DkimSigner.MAILU:
        updated = _learn_mailu_keys(updated, dkim)
    updated = _rotated(deps, updated, dkim)
    records = _carried(updated, checked)
    status = _status(domain, records)
    events = list(domain.events)
    became_verified = status is DomainStatus.VERIFIED and domain.status is not DomainStatus.VERIFIED
    if became_verified:
        events.append(DomainEvent(type="domain.verified", at=now, detail="SPF and DKIM verified"))
    elif status is DomainStatus.FAILED and domain.status is DomainStatus.VERIFIED:
        detail = "; ".join(dnsauth.unverified_text(r) for r in _failing(records))
        events.append(DomainEvent(type="domain.dns_error", at=now, detail=detail))
    updated = updated.model_copy(
        update={
            "records": records,
            "status": status,
            "checked_at": now,
            "verified_at": now
            if status is DomainStatus.VERIFIED and domain.status is not DomainStatus.VERIFIED
            else domain.verified_at,
            "events": tuple(events[-MAX_EVENTS:]),
        }
    )
    return updated


def verify(deps: DomainDeps, tenant_id: str, name: str) -> SendingDomain:
    """`POST /v1/domains/{domain}/verify`: the tenant's domain, verified now (one stored before keys
    and records existed is first made whole, so the answer lists the records to publish)."""
    domain = get_domain(deps, tenant_id, name)
    if predates_keys(domain):
        domain = _initialize(deps, domain)
    return verify_domain(deps, domain)


# -- domains stored before keys, records and claims --------------------------------------------------


def predates_keys(domain: SendingDomain) -> bool:
    """A domain stored before issue 10: no keys and no records (every domain created since has both)."""
    return not domain.keys and not domain.records


def _initialize(deps: DomainDeps, legacy: SendingDomain) -> SendingDomain:
    """Give an old domain what a create gives a new one: an RSA key (private half in Secrets Manager,
    a generated selector), SPF and MX from the tenant's servers, the records, and the claim that makes
    it this tenant's alone (409 when another tenant has it: before the key is made, and in the write).
    A concurrent first verification that initialized it first wins: our key's secret goes."""
    tenant_id, name = legacy.tenant_id, legacy.domain
    owner = deps.tenants.find_domain(name)
    if owner is not None and owner.tenant_id != tenant_id:
        raise Conflict(f"the domain {name} belongs to another tenant: remove it from this one")
    try:
        spf, mx = _spf(deps, tenant_id, None), _mx(deps, tenant_id, None)
    except InvalidRequest as exc:
        raise InvalidRequest(f"the domain {name} needs its DKIM key and records made, but: {exc.detail}") from exc
    receives = _receives(deps, tenant_id, name, None)
    key = _fresh_key(deps, tenant_id, name, set(), state="active")

    def initialized(current: SendingDomain) -> SendingDomain | None:
        if not predates_keys(current):
            return None  # another verification made it whole first: its key is the domain's
        whole = current.model_copy(
            update={
                "signer": DkimSigner.PETREL,
                "keys": (key,),
                "spf": spf,
                "mx": mx,
                "receives": receives,
                "dmarc_rua": current.dmarc_rua or f"mailto:dmarc@{name}",
            }
        )
        return whole.model_copy(update={"records": dnsauth.expected_records(whole)})

    try:
        _, stored = _settle(deps, legacy, initialized, claim=True)
    except AlreadyExists as exc:
        _drop_unless_named(deps, key, tenant_id, name)
        raise Conflict(f"the domain {name} belongs to another tenant: remove it from this one") from exc
    except (Conflict, NotFound):
        _drop_unless_named(deps, key, tenant_id, name)
        raise
    if key not in stored.keys:
        _drop_unless_named(deps, key, tenant_id, name)
    else:
        _log(deps, "domain initialized", stored, selector=key.selector)
    return stored


def _refuse_rotation(domain: SendingDomain) -> None:
    if domain.signer is not DkimSigner.PETREL:
        raise Conflict(f"the domain {domain.domain} is signed by MailU: rotate its key there")
    if predates_keys(domain):
        raise Conflict(f"the domain {domain.domain} has no DKIM key yet: verify it first")
    if any(k.state == "next" for k in domain.keys):
        raise Conflict(f"the domain {domain.domain} has a rotation in progress: publish its next key and verify")


def rotate_key(deps: DomainDeps, tenant_id: str, name: str) -> SendingDomain:
    """Add a `next` RSA key under a new selector (its record to publish, not required yet). The next
    verification that finds it published makes it the active key and retires the old one. The key is
    added to the revision read; after a conflict, to the new one (the same key: its secret is reused),
    unless a rotation started meanwhile or the domain went: then our key's secret is deleted."""
    domain = get_domain(deps, tenant_id, name)
    _refuse_rotation(domain)
    key = _fresh_key(deps, tenant_id, domain.domain, {k.selector for k in domain.keys}, state="next")

    def rotated(current: SendingDomain) -> SendingDomain:
        _refuse_rotation(current)
        if key.selector in {k.selector for k in current.keys}:
            raise Conflict(f"the domain {current.domain} has a key with the selector {key.selector}: try again")
        updated = current.model_copy(update={"keys": (*current.keys, key)})
        return updated.model_copy(update={"records": _carried(updated, current.records)})

    try:
        _, updated = _settle(deps, domain, rotated)
    except (Conflict, NotFound):  # refused or gone: the record does not name our key
        _drop_unless_named(deps, key, tenant_id, domain.domain)
        raise
    _log(deps, "domain key rotation started", updated, selector=key.selector)
    return updated


# -- updating ----------------------------------------------------------------------------------------


def _fields(deps: DomainDeps, domain: SendingDomain, request: UpdateDomainRequest) -> dict[str, object]:
    """The fields the request changes, validated as a create validates them."""
    fields: dict[str, object] = {}
    if request.return_path_domain is not None:
        fields["return_path_domain"] = _domain_name(request.return_path_domain, "/return_path_domain")
    if request.spf is not None:
        fields["spf"] = _spf(deps, domain.tenant_id, request.spf)
    if request.mx is not None:
        fields["mx"] = _mx(deps, domain.tenant_id, request.mx)
    if request.receives is not None:
        fields["receives"] = request.receives
    if request.dmarc_rua is not None:
        fields["dmarc_rua"] = request.dmarc_rua
    return fields


def _record_key(record: DnsRecordCheck) -> tuple[str, str, str, str | None, str]:
    """What must be the same for a record's last result to still hold: it is the same record, published."""
    return (record.purpose, record.type, record.name, record.selector, record.value)


def _updated(deps: DomainDeps, current: SendingDomain, fields: dict[str, object]) -> SendingDomain | None:
    """`current` with `fields` and its records recomputed (None: nothing changes). A required record
    that is new or has a new value makes the domain pending; a verified one records why it stopped."""
    changed = current.model_copy(update=fields)
    last = {_record_key(r): r for r in current.records}
    records = tuple(
        expected.model_copy(update={"status": seen.status, "found": seen.found, "detail": seen.detail})
        if (seen := last.get(_record_key(expected)))
        else expected
        for expected in dnsauth.expected_records(changed)
    )
    if changed.model_copy(update={"records": records}) == current:
        return None
    new = [r for r in records if r.required and _record_key(r) not in last]
    status, events = current.status, list(current.events)
    if new:
        status = DomainStatus.PENDING
        if current.status is DomainStatus.VERIFIED:
            detail = "the records changed: publish " + ", ".join(dnsauth.describe(r) for r in new) + ", then verify"
            events.append(DomainEvent(type="domain.dns_error", at=deps.clock.now(), detail=detail))
    return changed.model_copy(update={"records": records, "status": status, "events": tuple(events[-MAX_EVENTS:])})


def update_domain(deps: DomainDeps, tenant_id: str, name: str, request: UpdateDomainRequest) -> SendingDomain:
    """`PATCH /v1/domains/{domain}`: change the return path, SPF, MX, receiving or DMARC reports, on
    the revision read (re-applied after a conflict). Keys are untouched: that is a rotation."""
    domain = get_domain(deps, tenant_id, name)
    if predates_keys(domain):
        raise Conflict(f"the domain {domain.domain} has no DKIM key and records yet: verify it first")
    fields = _fields(deps, domain, request)
    before, after = _settle(deps, domain, lambda current: _updated(deps, current, fields))
    if after is not before:
        _log(deps, "domain updated", after, before=before.status.value, changed=sorted(fields))
    return after


# -- drift -------------------------------------------------------------------------------------------


@dataclass
class RecheckReport:
    checked: int = 0
    failed: list[str] = field(default_factory=list)  # verified -> failed: `tenant/domain`
    recovered: list[str] = field(default_factory=list)  # failed -> verified
    lookup_errors: list[str] = field(default_factory=list)  # a lookup got no answer
    errors: list[str] = field(default_factory=list)  # the re-check itself raised


def recheck_domains(deps: DomainDeps) -> RecheckReport:
    """Re-verify every verified and failed domain: one whose required record went missing or wrong
    fails (mail stops, `domain.dns_error`); one that verifies again recovers (`domain.verified`)."""
    report = RecheckReport()
    for domain in deps.tenants.list_all_domains():
        if domain.status is DomainStatus.PENDING:
            continue
        who = f"{domain.tenant_id}/{domain.domain}"
        try:
            before, after = _verify(deps, domain)  # before: the revision the check was applied to
        except NotFound:
            continue  # deleted since the listing
        except Exception:  # one domain's failure must not stop the others' checks
            if deps.log is not None:
                deps.log.exception(
                    "domain re-check failed", extra={"tenant_id": domain.tenant_id, "domain": domain.domain}
                )
            report.errors.append(who)
            continue
        report.checked += 1
        if any(r.status == "pending" for r in after.records if r.required):
            report.lookup_errors.append(who)
        if after.status is not before.status:
            (report.failed if after.status is DomainStatus.FAILED else report.recovered).append(who)
    return report


# -- the API's view -----------------------------------------------------------------------------------


def view(domain: SendingDomain, tenant: Tenant | None = None) -> DomainView:
    order: dict[str, int] = {"active": 0, "next": 1, "retired": 2}
    keys = sorted(domain.keys, key=lambda k: order[k.state])
    return DomainView.model_validate(
        {
            "domain": domain.domain,
            "status": domain.status.value,
            "signer": domain.signer.value,
            "return_path_domain": domain.return_path_domain,
            "selectors": list(dict.fromkeys(k.selector for k in keys)),
            "records": [
                DnsRecordView(
                    purpose=r.purpose,
                    type=r.type,
                    name=r.name,
                    value=r.value,
                    required=r.required,
                    status=r.status,
                    found=list(r.found),
                    detail=r.detail,
                )
                for r in domain.records
            ],
            "sending_allowed": domain.sendable or bool(tenant and tenant.allow_unverified_domains),
            "created_at": domain.created_at,
            "checked_at": domain.checked_at,
            "verified_at": domain.verified_at,
            "events": [DomainEventView(type=e.type, at=e.at, detail=e.detail) for e in domain.events],
        }
    )


def _log(deps: DomainDeps, message: str, domain: SendingDomain, **extra: object) -> None:
    if deps.log is not None:
        deps.log.info(
            message,
            extra={"tenant_id": domain.tenant_id, "domain": domain.domain, "status": domain.status.value, **extra},
        )
