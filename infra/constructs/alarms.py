"""Alarms that need a human: anything in a dead-letter queue is mail that was not sent."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import removal_policy
from infra.constructs.queues import PetrelQueues
from petrel import resources


class PetrelAlarms(Construct):
    """An encrypted, TLS-only SNS topic mailed to `alarm_email`, and one alarm per dead-letter queue."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, queues: PetrelQueues) -> None:
        super().__init__(scope, construct_id)
        # CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key, hence a key
        # of our own that CloudWatch may use.
        key = kms.Key(
            self,
            "TopicKey",
            description=f"Encrypts the {config.name_prefix} alarm topic",
            enable_key_rotation=True,
            pending_window=Duration.days(7),
            removal_policy=removal_policy(config),
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=config.physical_name("alarms"),
            display_name=f"{config.name_prefix} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        notify = actions.SnsAction(self.topic)

        for spec in resources.SEND_QUEUES:
            dlq = queues.dead_letter_queue(spec)
            alarm = cloudwatch.Alarm(
                self,
                "".join(part.capitalize() for part in resources.dlq_name(spec).split("-")),
                alarm_name=config.physical_name(f"{resources.dlq_name(spec)}-not-empty"),
                alarm_description=(
                    f"Messages of {config.physical_name(spec.name)} failed {config.dlq_max_receive_count} "
                    "times and wait in its dead-letter queue."
                ),
                metric=dlq.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(notify)
