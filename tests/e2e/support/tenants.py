"""Tenants of a test's own, so faults never touch the demo tenant; mailbox users on the stand-in;
unique addresses and large bodies.

A test's tenant sends from a subdomain of the demo's domain (its own: a domain belongs to one tenant,
unverified) and has a return-path domain of its own that no poller
reads: its delivery reports land in a mailbox nobody ingests, so they neither show up in the demo
tenant's inbound mail nor move its messages past `relayed`. Recipients are on the stand-in's recipient
domain: the demo tenant's own domain is one it receives mail for, and mail to it never reaches SMTP."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Any

from local.mailu import MailuStandIn
from local.platform import LocalPlatform
from local.seed import seed_tenant
from petrel.services import tenants as admin
from tests.e2e.support.api import Api
from tests.e2e.support.tracking import wait_until


@dataclass
class TestTenant:
    """A tenant sending from the stand-in's domain through one SMTP server, with an API key."""

    __test__ = False  # not a test class, whatever its name

    platform: LocalPlatform
    tenant_id: str
    server_id: str
    api: Api
    from_address: str

    def replace_server(self, **server: Any) -> None:
        """Register a new server (the stand-in's relay account, `server` overriding) and then remove the
        old one. Petrel has no admin function that updates a server (e.g. its CA bundle): re-register it."""
        deps = admin_deps(self.platform)
        settings = self.platform.relay_account.server_settings(**server)
        new = admin.add_smtp_server(deps, self.tenant_id, **settings)
        admin.remove_smtp_server(deps, self.tenant_id, self.server_id)
        self.server_id = new.server_id


def admin_deps(platform: LocalPlatform) -> admin.AdminDeps:
    """The running platform's tenant administration (what `petrel --env local` uses)."""
    assert platform.admin is not None, "the platform is not running"
    return platform.admin.admin


# Test tenants' return-path domain: the stand-in delivers their reports to bounces@ there, unread.
TEST_RETURN_PATH_DOMAIN = "returns.test"


def _unread_bounce_mailbox(platform: LocalPlatform) -> str:
    """The stand-in user that takes test tenants' delivery reports (made once per platform)."""
    address = f"bounces@{TEST_RETURN_PATH_DOMAIN}"
    if address not in platform.mailu.users:
        platform.mailu.add_user(address, secrets.token_urlsafe(12))
    return TEST_RETURN_PATH_DOMAIN


def make_tenant(platform: LocalPlatform, name: str, **server: Any) -> TestTenant:
    """A tenant sending from the stand-in's domain through one server: the stand-in's relay account,
    with any `add_smtp_server` setting overridden by `server` (a fault proxy's port, another CA). Its
    delivery reports go to a return-path domain no poller reads (the module docstring)."""
    # A domain belongs to one tenant: each test tenant sends from a subdomain of its own, unverified
    # (these tests are not about DNS; the demo tenant's domain is the verified one).
    domain = f"{secrets.token_hex(4)}.{platform.config.domain}"
    seeded = seed_tenant(
        admin_deps(platform),
        name,
        domain=domain,
        relay=platform.relay_account,
        key_name=f"{name} e2e",
        return_path_domain=_unread_bounce_mailbox(platform),
        allow_unverified_domains=True,
        **server,
    )
    return TestTenant(
        platform=platform,
        tenant_id=seeded.tenant_id,
        server_id=seeded.server_id,
        api=Api(platform.info["api_url"], seeded.api_key),
        from_address=seeded.address("faults"),
    )


def unique_addresses(platform: LocalPlatform, stem: str, count: int) -> list[str]:
    """Fresh outside recipients, on the stand-in's recipient domain (relayed, not delivered locally)."""
    tag = secrets.token_hex(3)
    return [f"{stem}-{tag}-{i}@{platform.config.recipient_domain}" for i in range(count)]


def big_text(kib: int) -> str:
    """About `kib` KiB of plain ASCII lines (each line distinct, so nothing compresses it away)."""
    line = "{:06d} The quick brown fox jumps over the lazy dog; petrels fly low over the waves.\n"
    out: list[str] = []
    size = 0
    while size < kib * 1024:
        out.append(line.format(len(out)))
        size += len(out[-1])
    return "".join(out)


class Mailboxes:
    """Real mailbox users on the stand-in; copies of each Message-ID per mailbox, read over IMAPS."""

    def __init__(self, mailu: MailuStandIn, addresses: Iterable[str]) -> None:
        self.mailu = mailu
        self.passwords = {a: secrets.token_urlsafe(12) for a in addresses}
        mailu.add_users(self.passwords)  # one reload, one wait

    def copies(self, address: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for raw in self.mailu.fetch_all(address, self.passwords[address]):
            found[str(message_from_bytes(raw, policy=policy.default)["Message-ID"])] += 1
        return found

    def _in_postfix_queue(self) -> bool:
        wanted = set(self.passwords)
        for entry in self.mailu.mailq():
            if any(r.get("address", "").lower() in wanted for r in entry.get("recipients", [])):
                return True
        return False

    def settle(self, expected: dict[str, set[str]], timeout: float = 20.0) -> dict[str, Counter[str]]:
        """Wait until each address holds each of its expected Message-IDs at least once and Postfix has
        nothing left queued for these mailboxes; then the copies per address and Message-ID."""

        def arrived() -> dict[str, Counter[str]] | None:
            counts = {a: self.copies(a) for a in self.passwords}
            if all(counts[a][m] >= 1 for a, ids in expected.items() for m in ids) and not self._in_postfix_queue():
                return counts
            return None

        wait_until(arrived, timeout, "the relayed messages in their mailboxes", interval=0.3)
        return {a: self.copies(a) for a in self.passwords}  # once more, after the queue was seen empty
