"""Sweeper: on an EventBridge schedule, puts back on its queue every non-final message whose way
forward was lost (petrel.services.sweep)."""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from petrel import container, resources
from petrel.observability import logger, metrics
from petrel.services.sweep import sweep


@metrics().log_metrics
@logger().inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = sweep(container.sweeper().sweep)
    metrics().add_metric(name=resources.SWEEP_REPAIRED_METRIC, unit=MetricUnit.Count, value=report.total)
    for status, count in sorted(report.repaired.items()):
        metrics().add_metric(name=f"Repaired{status.value.capitalize()}", unit=MetricUnit.Count, value=count)
    metrics().add_metric(name="RepairRequeueFailed", unit=MetricUnit.Count, value=report.requeue_failed)
    summary = {
        "repaired": {status.value: count for status, count in sorted(report.repaired.items())},
        "examined": report.examined,
        "claim_lost": report.claim_lost,
        "requeue_failed": report.requeue_failed,
        "truncated": report.truncated,
        "backlogged": report.backlogged,
        "backlogs": report.backlogs,
    }
    if report.total or report.requeue_failed:
        logger().warning("sweeper repaired messages whose way forward was lost", extra=summary)
    else:
        logger().info("sweep", extra=summary)
    return summary
