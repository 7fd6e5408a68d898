"""The job queues, one per `petrel.resources.QUEUES` entry (the send queues and the ingest queue), each
with its own dead-letter queue. A queue's visibility timeout is `visibility_factor` times the timeout of
the function that consumes it (infra.config: the send worker's or the ingest worker's)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import removal_policy
from petrel import resources


class PetrelQueues(Construct):
    """Standard queues with SQS-managed encryption and TLS-only access policies."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for spec in resources.QUEUES:
            construct_name = "".join(part.capitalize() for part in spec.name.split("-"))
            dlq = sqs.Queue(
                self,
                f"{construct_name}Dlq",
                queue_name=config.physical_name(resources.dlq_name(spec)),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=Duration.days(spec.dlq_retention_days),
                removal_policy=removal_policy(config),
            )
            queue = sqs.Queue(
                self,
                f"{construct_name}Queue",
                queue_name=config.physical_name(spec.name),
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                visibility_timeout=Duration.seconds(config.queue_visibility_seconds(spec)),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=config.dlq_max_receive_count),
                removal_policy=removal_policy(config),
            )
            self.queues[spec.name] = queue
            self.dead_letter_queues[spec.name] = dlq

    def queue(self, spec: resources.QueueSpec) -> sqs.Queue:
        return self.queues[spec.name]

    def dead_letter_queue(self, spec: resources.QueueSpec) -> sqs.Queue:
        return self.dead_letter_queues[spec.name]

    def grant_send(self, grantee: iam.IGrantable, spec: resources.QueueSpec) -> None:
        """`sqs:SendMessage` (which also covers SendMessageBatch) on one queue, nothing more."""
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["sqs:SendMessage"], resource_arns=[self.queue(spec).queue_arn]
        )
