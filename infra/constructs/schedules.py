"""EventBridge Scheduler for deferred and scheduled messages (`petrel.resources.SCHEDULES`).

The stack makes the parts that live as long as the environment; the code creates the schedules
themselves at run time (`scheduler.create_schedule`): one-time `at(...)`, flexible window off,
`ActionAfterCompletion=DELETE`, target = the message's send queue, `RoleArn` = `role`,
`DeadLetterConfig` = `dlq`. So this construct provides:

* the schedule group `<prefix>-schedules`;
* `dlq` (`<prefix>-schedules-dlq`): where Scheduler puts what it could not deliver to a send queue;
* `role`: assumed by Scheduler for this account's schedule group only (`aws:SourceAccount` and
  `aws:SourceArn`, against the confused deputy), may send to every send queue and to `dlq`;
* what a function needs to manage schedules: `environment()` and `grant_manage()`.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import acknowledge, removal_policy
from infra.constructs.queues import PetrelQueues
from petrel import resources

SCHEDULER_SERVICE = "scheduler.amazonaws.com"
# What a function may do with the schedules of the group: create (deferral, send_at), read
# (a name collision: is it ours already?) and delete (cancel). Nothing on other groups.
MANAGE_ACTIONS: tuple[str, ...] = ("scheduler:CreateSchedule", "scheduler:DeleteSchedule", "scheduler:GetSchedule")


class PetrelSchedules(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        queues: PetrelQueues,
        spec: resources.ScheduleSpec = resources.SCHEDULES,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        self.queues = queues
        self.group_name = config.physical_name(spec.group)
        self.group = scheduler.ScheduleGroup(
            self, "Group", schedule_group_name=self.group_name, removal_policy=removal_policy(config)
        )

        self.dlq = sqs.Queue(
            self,
            "Dlq",
            queue_name=config.physical_name(spec.dlq),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(spec.dlq_retention_days),
            removal_policy=removal_policy(config),
        )
        acknowledge(
            self.dlq,
            "AwsSolutions-SQS3",
            "This queue is itself a dead-letter queue: EventBridge Scheduler's, set as DeadLetterConfig "
            "on each schedule the code creates at run time (so no redrive policy points at it here). A "
            "dead-letter queue of a dead-letter queue would add nothing; its depth raises an alarm.",
        )

        stack = Stack.of(self)
        # The send queues use SQS-managed encryption, so Scheduler needs no KMS permission. Only
        # Scheduler running a schedule of this group (of this account) may assume the role.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                SCHEDULER_SERVICE,
                conditions={
                    "StringEquals": {
                        "aws:SourceAccount": stack.account,
                        "aws:SourceArn": self.group.schedule_group_arn,
                    }
                },
            ),
            description=f"Assumed by EventBridge Scheduler to run the schedules of {self.group_name}",
        )
        for queue in resources.SEND_QUEUES:
            queues.grant_send(self.role, queue)
        iam.Grant.add_to_principal(grantee=self.role, actions=["sqs:SendMessage"], resource_arns=[self.dlq.queue_arn])

        self.schedules_arn = stack.format_arn(
            service="scheduler",
            resource="schedule",
            resource_name=f"{self.group_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

    def environment(self) -> dict[str, str]:
        """The group, the role and dead-letter queue to give each schedule, and the ARN of every send
        queue (the schedules' targets)."""
        environment = {
            self.spec.group_env_var: self.group.schedule_group_name,
            self.spec.role_env_var: self.role.role_arn,
            self.spec.dlq_arn_env_var: self.dlq.queue_arn,
        }
        for queue in resources.SEND_QUEUES:
            if queue.arn_env_var is None:
                raise ValueError(f"send queue {queue.name} needs an arn_env_var: schedules target it by ARN")
            environment[queue.arn_env_var] = self.queues.queue(queue).queue_arn
        return environment

    def grant_manage(self, role: iam.Role) -> None:
        """Create, read and delete the schedules of this group (and no other), and pass `self.role`
        to Scheduler (and to no other service)."""
        role.add_to_policy(iam.PolicyStatement(actions=list(MANAGE_ACTIONS), resources=[self.schedules_arn]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": SCHEDULER_SERVICE}},
            )
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:"
            f"schedule/{self.group_name}/*]",
            "Schedules are created at run time, one per message and attempt (`<message-id>-<attempt>`), "
            "so their names are not known at deploy time; the grant stops at this environment's schedule "
            "group and at CreateSchedule, GetSchedule and DeleteSchedule.",
        )
