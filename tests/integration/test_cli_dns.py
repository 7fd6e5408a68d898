"""`petrel --env local dns publish|show` against the real DNS server (Knot): what it publishes is what
verification (petrel.services.domains on dnspython, asking that server) finds.

Invariants: after `dns publish D` every record of D verifies; with `--without dkim` the DKIM record is
reported missing and D may not send; `dns show` answers what a DKIM reader sees (the strings joined).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cli.command import Context
from cli.main import parser, run
from cli.output import Output
from cli.target import LOCAL, Target
from local.knot import KnotServer
from petrel.adapters.dns import DnsPythonResolver
from petrel.container.admin import AdminSettings
from petrel.models.api import CreateDomainRequest
from petrel.models.records import DomainStatus, SendingDomain
from petrel.services import domains, tenants
from petrel.services.tenants import AdminDeps
from tests.fakes import FakeWorld
from tests.support_dns import unique_zone

pytestmark = pytest.mark.integration

PREFIX = "petrel-test/tenants/"


def _deps(world: FakeWorld, dns_server: KnotServer) -> domains.DomainDeps:
    return domains.DomainDeps(
        tenants=world.tenants,
        secrets=world.secrets,
        resolver=DnsPythonResolver([(dns_server.host, dns_server.port)], timeout=2.0),
        clock=world.clock,
        secrets_prefix=PREFIX,
    )


def _domain(world: FakeWorld, dns_server: KnotServer, name: str, **request: Any) -> SendingDomain:
    admin = AdminDeps(tenants=world.tenants, secrets=world.secrets, clock=world.clock, secrets_prefix=PREFIX)
    tenant = tenants.create_tenant(admin, "Acme")
    fields = {"domain": name, "spf": ["ip4:127.0.0.1"], "mx": ["mx.relay.test"]} | request
    return domains.create_domain(_deps(world, dns_server), tenant, CreateDomainRequest.model_validate(fields))


def _cli(world: FakeWorld, dns_server: KnotServer, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(list(argv))
    target = Target(LOCAL, AdminSettings.for_prefix("petrel-test"), {"dns": dns_server.info()})
    services = SimpleNamespace(admin=SimpleNamespace(tenants=world.tenants))
    context = Context(
        LOCAL,
        Path("."),
        Output(as_json=bool(getattr(args, "json", False)), out=out, err=err),
        target=target,
        services=services,  # type: ignore[arg-type]
    )
    return run(args, context), out.getvalue(), err.getvalue()


def test_publish_makes_a_new_domain_verify(dns_server: KnotServer) -> None:
    world = FakeWorld()
    name = unique_zone("acme")
    created = _domain(world, dns_server, name, return_path_domain=f"bounces.{name}", ed25519=True)
    assert domains.verify_domain(_deps(world, dns_server), created).status is not DomainStatus.VERIFIED

    status, out, err = _cli(world, dns_server, "dns", "publish", name)
    assert status == 0, err
    assert f"bounces.{name}" in out and "dkim" in out

    verified = domains.verify_domain(_deps(world, dns_server), world.tenants.find_domain(name))  # type: ignore[arg-type]
    assert verified.status is DomainStatus.VERIFIED
    assert {r.purpose: r.status for r in verified.records if r.required} == {
        "spf": "verified",
        "dkim": "verified",
        "return_path_spf": "verified",
    }
    assert all(r.status in ("verified", "warning") for r in verified.records)
    assert set(dns_server.zones) >= {name, f"bounces.{name}"}


def test_publish_without_dkim_leaves_it_missing_and_the_domain_unsendable(dns_server: KnotServer) -> None:
    world = FakeWorld()
    name = unique_zone("nodkim")
    _domain(world, dns_server, name)

    status, out, err = _cli(world, dns_server, "dns", "publish", name, "--without", "dkim", "--json")
    assert status == 0, err
    assert [s["purpose"] for s in json.loads(out)["skipped"]] == ["dkim"]

    checked = domains.verify_domain(_deps(world, dns_server), world.tenants.find_domain(name))  # type: ignore[arg-type]
    assert not checked.sendable
    assert [(r.purpose, r.status) for r in checked.records if r.status != "verified" and r.required] == [
        ("dkim", "missing")
    ]


def test_show_prints_a_dkim_record_as_one_string(dns_server: KnotServer) -> None:
    world = FakeWorld()
    name = unique_zone("show")
    created = _domain(world, dns_server, name)
    assert _cli(world, dns_server, "dns", "publish", name)[0] == 0
    dkim = next(r for r in created.records if r.purpose == "dkim")

    status, out, _ = _cli(world, dns_server, "dns", "show", dkim.name, "--json")
    assert status == 0
    [row] = json.loads(out)
    assert row["value"] == dkim.value and len(dkim.value) > 255

    status, _, err = _cli(world, dns_server, "dns", "show", f"nothing.{name}")
    assert status == 1 and "no TXT record" in err


def test_publish_to_a_stopped_server_is_one_line(tmp_path: Path) -> None:
    world = FakeWorld()
    server = KnotServer(tmp_path / "knot")
    server.start()
    name = unique_zone("gone")
    _domain(world, server, name)
    info = server.info()
    server.stop()

    out, err = io.StringIO(), io.StringIO()
    args = parser().parse_args(["dns", "publish", name])
    target = Target(LOCAL, AdminSettings.for_prefix("petrel-test"), {"dns": info})
    services = SimpleNamespace(admin=SimpleNamespace(tenants=world.tenants))
    context = Context(LOCAL, Path("."), Output(out=out, err=err), target=target, services=services)  # type: ignore[arg-type]
    assert run(args, context) == 2
    assert err.getvalue().startswith("petrel: the local DNS server:") and err.getvalue().count("\n") == 1
