"""The send worker: one function consuming every send queue through SQS event sources."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from infra.constructs.functions import SEND_WORKER, FunctionDependencies, PetrelFunction
from petrel import resources


class SendWorkers(Construct):
    """Batches with partial failures (`ReportBatchItemFailures`), sized and capped per environment."""

    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.worker = PetrelFunction(self, "SendWorker", definition=SEND_WORKER, deps=deps)
        window = config.max_batching_window_seconds
        for spec in resources.SEND_QUEUES:
            self.worker.function.add_event_source(
                event_sources.SqsEventSource(
                    deps.queues.queue(spec),
                    batch_size=config.batch_size,
                    max_batching_window=Duration.seconds(window) if window else None,
                    max_concurrency=config.max_concurrency[spec.name],
                    report_batch_item_failures=True,
                )
            )
