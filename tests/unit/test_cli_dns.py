"""`petrel --env local dns publish|show` without a DNS server: a fake publisher records what would be written
(tests/integration/test_cli_dns.py runs the same command against the real Knot).

Invariants: every record of the domain (as `POST /v1/domains` answered it) is written, once, in the
zones of the domain and of its return-path domain and nowhere else; records sharing a name and a type
are one RRset; `--without PURPOSE` leaves exactly that purpose out; any env but local is refused
before anything is looked up or written.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cli import dns as dns_cli
from cli.command import Context
from cli.errors import CliError
from cli.main import parser, run
from cli.output import Output
from cli.target import LOCAL, Target
from local.dns_publish import plan
from petrel.container.admin import AdminSettings
from petrel.models.api import CreateDomainRequest
from petrel.models.records import DkimSigner
from petrel.services import domains, tenants
from petrel.services.tenants import AdminDeps
from tests.fakes import FakeWorld
from tests.fakes.dns import FakeResolver

PREFIX = "petrel-test/tenants/"


@dataclass
class FakePublisher:
    """What publishing asked of the DNS server, in order."""

    zones: list[str] = field(default_factory=list)
    updates: list[list[tuple[str, str, list[str]]]] = field(default_factory=list)

    def add_zone(self, name: str) -> bool:
        self.zones.append(name)
        return True

    def publish_all(self, records: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        self.updates.append([(name, rtype, list(values)) for name, rtype, values in records])


def _create(world: FakeWorld, **request: Any) -> Any:
    admin = AdminDeps(tenants=world.tenants, secrets=world.secrets, clock=world.clock, secrets_prefix=PREFIX)
    tenant = tenants.create_tenant(admin, "Acme")
    deps = domains.DomainDeps(
        tenants=world.tenants,
        secrets=world.secrets,
        resolver=FakeResolver(),
        clock=world.clock,
        secrets_prefix=PREFIX,
    )
    fields = {"domain": "acme.test", "spf": ["ip4:192.0.2.10"], "mx": ["mx1.acme.net", "mx2.acme.net"]} | request
    return domains.create_domain(deps, tenant, CreateDomainRequest.model_validate(fields))


def _context(world: FakeWorld, env: str = LOCAL, *, as_json: bool = False) -> tuple[Context, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    services = SimpleNamespace(admin=SimpleNamespace(tenants=world.tenants))
    context = Context(env, Path("."), Output(as_json=as_json, out=out, err=err), services=services)  # type: ignore[arg-type]
    return context, out, err


def _args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["dns", *argv])


def test_publish_writes_every_record_in_the_domain_and_return_path_zones() -> None:
    world = FakeWorld()
    domain = _create(world, return_path_domain="bounces.acme.test", receives=True, ed25519=True)
    context, out, err = _context(world)
    publisher = FakePublisher()

    assert dns_cli.publish_records(_args("publish", "ACME.test."), context, publisher) == 0

    assert publisher.zones == ["acme.test", "bounces.acme.test"]
    [update] = publisher.updates  # one call: the publisher sends one update per zone
    written = {(name, rtype): sorted(values) for name, rtype, values in update}
    assert len(written) == len(update)  # no RRset twice
    expected: dict[tuple[str, str], list[str]] = {}
    for record in domain.records:
        expected.setdefault((record.name, record.type), []).append(record.value)
    assert written == {key: sorted(values) for key, values in expected.items()}
    assert written[("bounces.acme.test", "MX")] == ["10 mx1.acme.net.", "10 mx2.acme.net."]  # one RRset, two hosts
    assert {r.purpose for r in domain.records} == {"spf", "dkim", "dmarc", "return_path_mx", "return_path_spf", "mx"}
    assert "acme.test" in out.getvalue() and "NAME" in out.getvalue()
    assert "published" in err.getvalue() and "/v1/domains/acme.test/verify" in err.getvalue()


def test_without_leaves_out_exactly_those_purposes_and_says_so() -> None:
    world = FakeWorld()
    domain = _create(world)
    context, out, err = _context(world, as_json=True)
    publisher = FakePublisher()

    dns_cli.publish_records(_args("publish", "acme.test", "--without", "dmarc", "--without", "spf"), context, publisher)

    written = {(name, rtype) for name, rtype, _ in publisher.updates[0]}
    kept = {(r.name, r.type) for r in domain.records if r.purpose not in ("dmarc", "spf")}
    assert written == kept
    assert ("_dmarc.acme.test", "TXT") not in written and ("acme.test", "TXT") not in written
    document = json.loads(out.getvalue())
    assert {s["purpose"] for s in document["skipped"]} == {"dmarc", "spf"}
    assert document["zones"] == ["acme.test"] and document["tenant_id"] == domain.tenant_id
    assert all(len(r["values"][0]) > 255 for r in document["records"] if r["purposes"] == ["dkim"])  # whole keys
    assert err.getvalue().count("left out") == 2


def test_a_mailu_domain_without_a_known_key_has_its_dkim_record_left_out() -> None:
    world = FakeWorld()
    domain = _create(world, signer="mailu", selector="dkim")
    assert domain.signer is DkimSigner.MAILU
    planned = plan(domain)
    assert [s.record.purpose for s in planned.skipped] == ["dkim"]
    assert "dkim" not in {p for rrset in planned.rrsets for p in rrset.purposes}


def test_an_unknown_purpose_is_refused_by_the_parser_and_by_plan() -> None:
    with pytest.raises(SystemExit):
        _args("publish", "acme.test", "--without", "dkim2")
    world = FakeWorld()
    with pytest.raises(ValueError, match="unknown record purpose"):
        plan(_create(world), without=["dkim2"])


def test_a_domain_no_tenant_has_is_one_line_and_writes_nothing() -> None:
    world = FakeWorld()
    context, _, _ = _context(world)
    publisher = FakePublisher()
    with pytest.raises(CliError, match=r"no tenant has the sending domain nowhere\.test"):
        dns_cli.publish_records(_args("publish", "nowhere.test"), context, publisher)
    assert publisher.zones == [] and publisher.updates == []


@pytest.mark.parametrize("argv", [("publish", "acme.test"), ("show", "acme.test")])
def test_any_env_but_local_is_refused_before_anything_is_read(argv: tuple[str, ...]) -> None:
    world = FakeWorld()
    _create(world)
    context, out, err = _context(world, env="prod")
    assert run(_args(*argv), context) == 2
    assert err.getvalue().strip() == f"petrel: {dns_cli.NOT_LOCAL}"
    assert out.getvalue() == ""


@pytest.mark.parametrize("state", [{}, {"dns": {"host": "127.0.0.1"}}])
def test_without_a_dns_section_in_local_json_the_advice_is_to_restart(state: dict[str, Any]) -> None:
    target = Target(LOCAL, AdminSettings.for_prefix("petrel-local"), state)
    context = Context(LOCAL, Path("."), Output(out=io.StringIO(), err=io.StringIO()), target=target)
    with pytest.raises(CliError, match="no `dns` section"):
        dns_cli.dns_info(context)


def test_the_parser_takes_show_with_a_type() -> None:
    args = _args("show", "_dmarc.acme.test", "--type", "mx")
    assert (args.name, args.type, args.handler) == ("_dmarc.acme.test", "MX", dns_cli.show_records)
