"""Alarms that need a human, all mailed through one topic.

* each job queue's dead-letter queue (send and ingest), and Scheduler's: anything there is mail that
  was not sent, or incoming mail that was not ingested;
* the age of the oldest message of each job queue: a deferred or scheduled message waits in
  EventBridge Scheduler, not in the queue, so age in the queue means the workers are not keeping up;
* the send worker's `Errors` (an invocation that failed as a whole) and `Throttles`, and the ingest
  worker's `Errors`;
* Scheduler failing to put a message into its own dead-letter queue: that message is lost;
* the sweeper repairing any message (its way forward had been lost: a crash, a lost job or
  schedule), and the sweeper's own `Errors`;
* the poller failing to read any mailbox (its EMF metric: login refused, server down, TLS error; the
  mailbox's health record says which and when), and the poller's own `Errors`;
* the domain checker failing to look up any domain's records (its EMF metric: the resolvers did not
  answer, so drift goes unseen), failing to re-check a domain at all (an unexpected error the run
  survived), and the domain checker's own `Errors`.

Every alarm treats missing data as not breaching (an idle queue or function publishes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import removal_policy
from infra.constructs.functions import (
    DOMAIN_CHECKER,
    IMAP_POLLER,
    INGEST_WORKER,
    SEND_WORKER,
    SWEEPER,
    FunctionDefinition,
)
from infra.constructs.queues import PetrelQueues
from infra.constructs.schedules import PetrelSchedules
from petrel import resources
from petrel.entrypoints.domain_checker import DOMAIN_CHECK_ERRORS_METRIC

PERIOD = Duration.minutes(5)


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: `name` becomes `<prefix>-<name>` and, unless `id` is given, its construct id
    (PascalCase). A deployed alarm keeps its construct id: a new logical id with the same alarm
    name would make CloudFormation delete the alarm it has just replaced."""

    name: str
    description: str
    metric: cloudwatch.IMetric
    threshold: float
    comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    id: str | None = None

    @property
    def construct_id(self) -> str:
        return self.id or _pascal(self.name)


def _petrel_metric(name: str, function: FunctionDefinition) -> cloudwatch.Metric:
    """The sum per PERIOD of one of Petrel's own metrics (EMF, petrel.observability) as `function`
    emits it: its namespace, dimensioned by the function's service name."""
    return cloudwatch.Metric(
        namespace=resources.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": function.service_name},
        period=PERIOD,
        statistic="Sum",
    )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def _not_empty(name: str) -> str:
    return f"{name}-not-empty"


@dataclass(frozen=True)
class AlarmedFunctions:
    """The functions whose own metrics are watched."""

    send_worker: lambda_.IFunction
    sweeper: lambda_.IFunction
    poller: lambda_.IFunction
    ingest_worker: lambda_.IFunction
    domain_checker: lambda_.IFunction


class PetrelAlarms(Construct):
    """An encrypted, TLS-only SNS topic mailed to `alarm_email`, and the alarms of `alarm_specs`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        queues: PetrelQueues,
        schedules: PetrelSchedules,
        functions: AlarmedFunctions,
    ) -> None:
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

        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for spec in alarm_specs(config, queues, schedules, functions):
            alarm = cloudwatch.Alarm(
                self,
                spec.construct_id,
                alarm_name=config.physical_name(spec.name),
                alarm_description=spec.description,
                metric=spec.metric,
                threshold=spec.threshold,
                evaluation_periods=1,
                comparison_operator=spec.comparison,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(notify)
            self.alarms[spec.name] = alarm


def alarm_specs(
    config: EnvironmentConfig,
    queues: PetrelQueues,
    schedules: PetrelSchedules,
    functions: AlarmedFunctions,
) -> list[AlarmSpec]:
    at_least_one = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
    send_worker, sweeper = functions.send_worker, functions.sweeper
    specs: list[AlarmSpec] = []
    for queue in resources.QUEUES:
        dlq = resources.dlq_name(queue)
        specs.append(
            AlarmSpec(
                name=_not_empty(dlq),
                id=_pascal(dlq),  # as first deployed
                description=(
                    f"Jobs of {config.physical_name(queue.name)} failed {config.dlq_max_receive_count} "
                    f"times and wait in its dead-letter queue ({_what_waits(queue)})."
                ),
                metric=queues.dead_letter_queue(queue).metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                threshold=1,
                comparison=at_least_one,
            )
        )
    specs.append(
        AlarmSpec(
            name=_not_empty(schedules.spec.dlq),
            description=(
                f"EventBridge Scheduler could not put a deferred or scheduled message on its send queue; "
                f"the message waits in {config.physical_name(schedules.spec.dlq)}."
            ),
            metric=schedules.dlq.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
            threshold=1,
            comparison=at_least_one,
        )
    )
    specs.append(
        AlarmSpec(
            name=f"{schedules.spec.group}-dead-letter-failed",
            description=(
                f"EventBridge Scheduler could put neither on the send queue nor into "
                f"{config.physical_name(schedules.spec.dlq)}: a deferred or scheduled message is lost."
            ),
            metric=schedules.group.metric_failed_to_be_sent_to_dlq(period=PERIOD, statistic="Sum"),
            threshold=0,
        )
    )
    for queue in resources.QUEUES:
        specs.append(
            AlarmSpec(
                name=f"{queue.name}-oldest-message",
                description=(
                    f"A message has waited in {config.physical_name(queue.name)} for more than "
                    f"{config.oldest_message_alarm_seconds} s: {_who_lags(queue)}."
                ),
                metric=queues.queue(queue).metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum"),
                threshold=config.oldest_message_alarm_seconds,
            )
        )
    worker = config.physical_name(SEND_WORKER.slug)
    specs.append(
        AlarmSpec(
            name=f"{SEND_WORKER.slug}-errors",
            description=f"Invocations of {worker} failed as a whole (the batch goes back to its queue).",
            metric=send_worker.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
        )
    )
    specs.append(
        AlarmSpec(
            name=f"{SEND_WORKER.slug}-throttles",
            description=f"Invocations of {worker} were throttled (account or reserved concurrency).",
            metric=send_worker.metric_throttles(period=PERIOD, statistic="Sum"),
            threshold=0,
        )
    )
    specs.append(
        AlarmSpec(
            name=f"{SEND_WORKER.slug}-servers-paused",
            description=(
                f"{worker} paused a tenant's SMTP server: its bounce rate passed its threshold, or its "
                "connections kept failing. Its pool's other servers take its traffic; it resumes after its "
                "probation or with `petrel server resume` (the server's events say why)."
            ),
            metric=_petrel_metric(resources.SERVERS_PAUSED_METRIC, SEND_WORKER),
            threshold=0,
        )
    )
    specs.append(
        AlarmSpec(
            name=f"{SWEEPER.slug}-repaired",
            description=(
                f"{config.physical_name(SWEEPER.slug)} put messages back on their queue whose way forward "
                "had been lost (a crash between storing and enqueuing, a lost job or schedule, a worker "
                "that died): they will be sent, but find out why (its log counts them by status)."
            ),
            metric=_petrel_metric(resources.SWEEP_REPAIRED_METRIC, SWEEPER),
            threshold=0,
        )
    )
    specs.append(
        AlarmSpec(
            name=f"{SWEEPER.slug}-errors",
            description=(
                f"Invocations of {config.physical_name(SWEEPER.slug)} failed: messages whose way forward "
                "was lost are not being repaired."
            ),
            metric=sweeper.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
        )
    )
    specs.extend(_ingest_specs(config, functions))
    specs.extend(_domain_specs(config, functions))
    return specs


def _ingest_specs(config: EnvironmentConfig, functions: AlarmedFunctions) -> list[AlarmSpec]:
    poller, ingest_worker = config.physical_name(IMAP_POLLER.slug), config.physical_name(INGEST_WORKER.slug)
    return [
        AlarmSpec(
            name=f"{IMAP_POLLER.slug}-mailbox-errors",
            description=(
                f"{poller} could not read a mailbox (login refused, server unreachable, TLS or IMAP "
                "error): its mail is not being ingested. The mailbox's health record (`petrel mailbox list "
                "<tenant>`) and the poller's log say which and why."
            ),
            metric=_petrel_metric(resources.POLL_ERRORS_METRIC, IMAP_POLLER),
            threshold=0,
        ),
        AlarmSpec(
            name=f"{IMAP_POLLER.slug}-errors",
            description=f"Invocations of {poller} failed as a whole: no mailbox is being read.",
            metric=functions.poller.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
        ),
        AlarmSpec(
            name=f"{INGEST_WORKER.slug}-errors",
            description=f"Invocations of {ingest_worker} failed as a whole (the batch goes back to its queue).",
            metric=functions.ingest_worker.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
        ),
    ]


def _domain_specs(config: EnvironmentConfig, functions: AlarmedFunctions) -> list[AlarmSpec]:
    checker = config.physical_name(DOMAIN_CHECKER.slug)
    return [
        AlarmSpec(
            name=f"{DOMAIN_CHECKER.slug}-dns-errors",
            description=(
                f"{checker} could not look up a sending domain's records (the resolvers timed out or "
                "failed): drift of that domain goes unseen until they answer. A tenant's wrong or "
                "missing record is not this alarm: it is a domain.dns_error event of the domain."
            ),
            metric=_petrel_metric(resources.DOMAIN_DNS_ERRORS_METRIC, DOMAIN_CHECKER),
            threshold=0,
        ),
        AlarmSpec(
            name=f"{DOMAIN_CHECKER.slug}-check-errors",
            description=(
                f"{checker} could not re-check a sending domain (an unexpected error; the run went on with "
                "the others): that domain's drift goes unseen. Its log names the domain and the error."
            ),
            metric=_petrel_metric(DOMAIN_CHECK_ERRORS_METRIC, DOMAIN_CHECKER),
            threshold=0,
        ),
        AlarmSpec(
            name=f"{DOMAIN_CHECKER.slug}-errors",
            description=f"Invocations of {checker} failed as a whole: no domain's records are being re-checked.",
            metric=functions.domain_checker.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=0,
        ),
    ]


def _what_waits(queue: resources.QueueSpec) -> str:
    if queue == resources.INGEST:
        return "incoming mail that was not ingested; its raw message is in the bodies bucket until it expires"
    return "mail that was not sent"


def _who_lags(queue: resources.QueueSpec) -> str:
    if queue == resources.INGEST:
        return "the ingest workers are not keeping up"
    return (
        "the send workers are not keeping up (deferred and scheduled messages wait in EventBridge "
        "Scheduler, not in the queue)"
    )
