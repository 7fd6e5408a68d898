"""The domain checker's handler: on an EventBridge schedule, re-verifies every verified and failed
sending domain (petrel.services.domains.recheck_domains), so a domain whose DKIM or SPF record went
missing or wrong stops sending (`domain.dns_error`) before receivers start failing its mail, and one
that is right again sends again (`domain.verified`).

One log line per run with its counts (each change is logged by the service as it happens) and EMF
metrics: `resources.DOMAIN_DNS_ERRORS_METRIC` (domains whose lookups got no answer: a resolver outage,
an alarm fires on any), `DomainsFailed` (verified -> failed: a tenant's record, not Petrel's fault),
`DomainsRecovered`, and `DomainCheckErrors` (a domain whose re-check raised; the others still ran).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from petrel import resources
from petrel.services.domains import RecheckReport, recheck_domains

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.services.domains import DomainDeps

DOMAINS_FAILED_METRIC = "DomainsFailed"
DOMAINS_RECOVERED_METRIC = "DomainsRecovered"
DOMAIN_CHECK_ERRORS_METRIC = "DomainCheckErrors"


class DomainCheckerParts(Protocol):
    """What the handler takes from its container (petrel.container.domains.DomainCheckContainer, or
    the same parts on the in-memory fakes)."""

    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def domains(self) -> DomainDeps: ...


def summary(report: RecheckReport) -> dict[str, Any]:
    """The run's counts and the domains that changed, as logged and returned."""
    return {
        "checked": report.checked,
        "failed": report.failed,
        "recovered": report.recovered,
        "lookup_errors": report.lookup_errors,
        "errors": report.errors,
    }


def create_domain_checker(container: DomainCheckerParts) -> Handler:
    """The domain checker's Lambda handler, every dependency from `container`."""
    logger = container.telemetry.logger
    metrics = container.telemetry.metrics

    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        report = recheck_domains(container.domains)
        for name, value in (
            (resources.DOMAIN_DNS_ERRORS_METRIC, len(report.lookup_errors)),
            (DOMAINS_FAILED_METRIC, len(report.failed)),
            (DOMAINS_RECOVERED_METRIC, len(report.recovered)),
            (DOMAIN_CHECK_ERRORS_METRIC, len(report.errors)),
        ):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        counts = summary(report)
        if report.failed or report.lookup_errors or report.errors:
            logger.warning("domain re-check found problems", extra=counts)
        else:
            logger.info("domain re-check", extra=counts)
        return counts

    return container.telemetry.handler(lambda_handler)
