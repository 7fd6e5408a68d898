"""The ingest side (DESIGN.md section 1): the IMAP poller on an EventBridge rule, and the ingest worker on
the ingest queue.

* The poller runs every `poll_interval_minutes`. One run reads every mailbox (in threads), so by
  default only one runs at a time (reserved concurrency 1, `poller_one_at_a_time`); a run that
  cannot start, or fails, is not retried: the next one, a rule interval later, reads from the saved
  cursors (its event is dropped after a minute, the shortest age Lambda's asynchronous queue allows,
  so throttled runs do not pile up behind a long one).
* The ingest worker consumes the ingest queue in batches with partial failures
  (`ReportBatchItemFailures`), sized and capped per environment; the queue (infra/constructs/queues.py)
  keeps a job hidden for six times the worker's timeout, then `dlq_max_receive_count` receives send it
  to the dead-letter queue, whose depth raises an alarm.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from infra.constructs.functions import IMAP_POLLER, INGEST_WORKER, FunctionDependencies, PetrelFunction
from petrel import resources

# How long a run's event may wait (EventBridge's delivery, then Lambda's asynchronous queue) before it
# is dropped: a missed run is made up by the next one.
POLL_EVENT_AGE = Duration.minutes(1)


class MailboxPoller(Construct):
    """The poller function and the rule that runs it."""

    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.poller = PetrelFunction(self, "Poller", definition=IMAP_POLLER, deps=deps)
        function = self.poller.function
        function.configure_async_invoke(max_event_age=POLL_EVENT_AGE, retry_attempts=0)
        self.rule = events.Rule(
            self,
            "Schedule",
            rule_name=config.physical_name(IMAP_POLLER.slug),
            description="Runs the IMAP poller: reads every tenant's mailboxes and queues new mail for ingest",
            schedule=events.Schedule.rate(Duration.minutes(config.poll_interval_minutes)),
            targets=[targets.LambdaFunction(function, retry_attempts=0, max_event_age=POLL_EVENT_AGE)],
        )


class IngestWorker(Construct):
    """The ingest worker and its event source on the ingest queue."""

    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.worker = PetrelFunction(self, "Worker", definition=INGEST_WORKER, deps=deps)
        window = config.max_batching_window_seconds
        self.worker.function.add_event_source(
            event_sources.SqsEventSource(
                deps.queues.queue(resources.INGEST),
                batch_size=config.ingest_batch_size,
                max_batching_window=Duration.seconds(window) if window else None,
                max_concurrency=config.ingest_max_concurrency,
                report_batch_item_failures=True,
            )
        )
