"""The sweeper's handler: on an EventBridge schedule, puts back on its queue every non-final message
whose way forward was lost (petrel.services.sweep). One log line per run, with its counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from petrel import resources
from petrel.services.sweep import SweepReport, sweep

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.services.sweep import SweepDeps


class SweeperParts(Protocol):
    """What the handler takes from its container (petrel.container.sweeper.SweeperContainer, or the
    same parts on the in-memory fakes)."""

    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def sweep(self) -> SweepDeps: ...


def summary(report: SweepReport) -> dict[str, Any]:
    """The run's counts, as logged and returned."""
    return {
        "repaired": {status.value: count for status, count in sorted(report.repaired.items())},
        "examined": report.examined,
        "claim_lost": report.claim_lost,
        "requeue_failed": report.requeue_failed,
        "truncated": report.truncated,
        "backlogged": report.backlogged,
        "backlogs": report.backlogs,
    }


def create_sweeper(container: SweeperParts) -> Handler:
    """The sweeper's Lambda handler, every dependency from `container`."""
    logger = container.telemetry.logger
    metrics = container.telemetry.metrics

    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        report = sweep(container.sweep)
        metrics.add_metric(name=resources.SWEEP_REPAIRED_METRIC, unit=MetricUnit.Count, value=report.total)
        for status, count in sorted(report.repaired.items()):
            metrics.add_metric(name=f"Repaired{status.value.capitalize()}", unit=MetricUnit.Count, value=count)
        metrics.add_metric(name="RepairRequeueFailed", unit=MetricUnit.Count, value=report.requeue_failed)
        counts = summary(report)
        if report.total or report.requeue_failed:
            logger.warning("sweeper repaired messages whose way forward was lost", extra=counts)
        else:  # nothing to repair: at DEBUG, so a quiet system's log stays quiet (every 10 s locally)
            logger.debug("sweep", extra=counts)
        return counts

    return container.telemetry.handler(lambda_handler)
