"""The IMAP poller's handler: on an EventBridge schedule, reads every enabled mailbox's new messages
and queues them for ingest (petrel.services.poll).

One log line per mailbox (tenant, mailbox, folders, fetched, queued, error) and EMF metrics per run:
`MessagesPolled` (queued for ingest) and `resources.POLL_ERRORS_METRIC` (mailboxes whose poll failed;
an alarm fires on any). No batch starts within `invocation_margin_seconds` of the invocation's end, and
the IMAP connections are cut halfway through that margin, so the run always ends on its own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from petrel import resources
from petrel.services.poll import MailboxReport, PollReport, poll_all

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.services.poll import PollDeps
    from petrel.settings import PollerSettings

MESSAGES_POLLED_METRIC = "MessagesPolled"
# Without a Lambda context (a direct call), a run gets this long.
DEFAULT_RUN_SECONDS = 60.0


class PollerParts(Protocol):
    """What the handler takes from its container (petrel.container.poller.PollerContainer, or the same
    parts on the in-memory fakes)."""

    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def settings(self) -> PollerSettings: ...
    @property
    def poll(self) -> PollDeps: ...


def mailbox_line(report: MailboxReport) -> dict[str, Any]:
    """One mailbox's outcome, as logged (never a password: errors are scrubbed by the service)."""
    return {
        "tenant_id": report.tenant_id,
        "mailbox_id": report.mailbox_id,
        "folders": [
            {
                "folder": f.folder,
                "fetched": f.fetched,
                "queued": f.queued,
                "last_uid": f.last_uid,
                "uidvalidity_reset": f.reset,
                "conflict": f.conflict,
                **({"error": f.error} if f.error else {}),
            }
            for f in report.folders
        ],
        "fetched": report.fetched,
        "queued": report.queued,
        "truncated": report.truncated,
        "error": report.error,
    }


def summary(report: PollReport) -> dict[str, Any]:
    """The run's counts, as returned."""
    return {
        "mailboxes": len(report.mailboxes),
        "disabled": report.disabled,
        "not_started": report.not_started,
        "fetched": report.fetched,
        "queued": report.queued,
        "failed": report.failed,
    }


def create_poller(container: PollerParts) -> Handler:
    """The poller's Lambda handler, every dependency from `container`."""
    logger = container.telemetry.logger
    metrics = container.telemetry.metrics
    margin = container.settings.invocation_margin_seconds

    def lambda_handler(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else DEFAULT_RUN_SECONDS
        end = time.monotonic() + remaining
        report = poll_all(container.poll, deadline=end - margin, cutoff=end - margin / 2)
        for mailbox in report.mailboxes:
            if not mailbox.started:
                continue
            line = mailbox_line(mailbox)
            with container.telemetry.record(tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id):
                if mailbox.exception is not None:
                    logger.error("mailbox poll crashed", extra=line, exc_info=mailbox.exception)
                elif mailbox.error is not None:
                    logger.warning("mailbox poll failed", extra=line)
                else:
                    logger.info("mailbox polled", extra=line)
        counts = summary(report)
        if report.not_started:
            logger.warning("the run's time ended before every mailbox was polled", extra=counts)
        metrics.add_metric(name=MESSAGES_POLLED_METRIC, unit=MetricUnit.Count, value=report.queued)
        metrics.add_metric(name=resources.POLL_ERRORS_METRIC, unit=MetricUnit.Count, value=report.failed)
        return counts

    return container.telemetry.handler(lambda_handler)
