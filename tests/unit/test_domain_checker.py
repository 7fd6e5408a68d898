"""The domain checker's handler on the fakes: one run re-verifies, logs what changed, counts in EMF."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from aws_lambda_powertools import Logger

from local.lambda_runtime import LocalContext
from petrel import resources
from petrel.entrypoints.domain_checker import DOMAINS_FAILED_METRIC, DOMAINS_RECOVERED_METRIC, create_domain_checker
from petrel.models.api import CreateDomainRequest
from petrel.models.records import DomainStatus
from petrel.observability import Telemetry, telemetry
from petrel.services import domains
from petrel.services.domains import DomainDeps
from tests.fakes import FakeWorld, records
from tests.fakes.dns import FakeResolver


@dataclass
class Parts:
    telemetry: Telemetry
    domains: DomainDeps


def test_a_run_fails_a_domain_whose_record_went_missing_and_recovers_it(tmp_path: Path) -> None:
    world, resolver = FakeWorld(), FakeResolver()
    tenant = records.tenant()
    world.tenants.put_tenant(tenant)
    world.tenants.put_server(records.server(tenant.tenant_id, host="mail.acme.test"))
    deps = DomainDeps(
        tenants=world.tenants, secrets=world.secrets, resolver=resolver, clock=world.clock, secrets_prefix="p/"
    )
    domain = domains.create_domain(deps, tenant, CreateDomainRequest(domain="acme.test"))
    resolver.publish(domain.records)
    domains.verify_domain(deps, domain)
    stream, emf = io.StringIO(), tmp_path / "emf.jsonl"
    made = telemetry("domain-checker", metrics_file=emf)
    logger = Logger(service=f"{made.logger.service}-{uuid.uuid4().hex[:8]}", stream=stream)
    deps = replace(deps, log=logger)  # the service logs each change, as the container wires it
    handler = create_domain_checker(
        Parts(Telemetry(function="domain-checker", logger=logger, metrics=made.metrics), deps)
    )
    context = LocalContext("petrel-dev-domain-checker")

    resolver.publish_txt("acme.test")  # the SPF record is gone
    counts = handler({"source": "aws.events"}, context)

    who = f"{tenant.tenant_id}/acme.test"
    assert counts == {"checked": 1, "failed": [who], "recovered": [], "lookup_errors": [], "errors": []}
    stored = world.tenants.get_domain(tenant.tenant_id, "acme.test")
    assert stored is not None and stored.status is DomainStatus.FAILED
    resolver.publish(domain.records)
    assert handler({"source": "aws.events"}, context)["recovered"] == [who]
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    changes = [line for line in lines if line["message"] == "domain status changed"]
    assert [(c["before"], c["status"]) for c in changes] == [("verified", "failed"), ("failed", "verified")]
    assert any(line["level"] == "WARNING" and line["failed"] == [who] for line in lines)
    assert "PRIVATE" not in stream.getvalue()
    values: dict[str, list[float]] = {}
    for document in (json.loads(line) for line in emf.read_text().splitlines()):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values.setdefault(metric["Name"], []).extend(document[metric["Name"]])
    assert values[DOMAINS_FAILED_METRIC] == [1.0, 0.0] and values[DOMAINS_RECOVERED_METRIC] == [0.0, 1.0]
    assert values[resources.DOMAIN_DNS_ERRORS_METRIC] == [0.0, 0.0]
