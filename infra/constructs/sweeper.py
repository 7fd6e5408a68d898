"""The sweeper: a function on an EventBridge schedule that puts back on its queue every non-final
message whose way forward was lost (petrel.services.sweep), and an alarm whenever it repairs one.

Its role may query the messages table's due index and its tenant listing index (`by_tenant`: the
creation shards), read and update items of that table (the claim of a repair), scan the tenants table
(which tenants there are), read the send queues' depth and send to them: no delete, no other index.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.functions import SWEEPER, FunctionDependencies, PetrelFunction
from petrel import resources

QUERY_ACTIONS = ("dynamodb:Query",)
UPDATE_ACTIONS = ("dynamodb:UpdateItem",)
# The indexes project only what never changes: the sweeper reads each entry's message (its status,
# attempt and lease) with BatchGetItem, and its watermark per shard with GetItem (UpdateItem writes it).
READ_ACTIONS = ("dynamodb:BatchGetItem", "dynamodb:GetItem")
QUEUE_DEPTH_ACTIONS = ("sqs:GetQueueAttributes",)


class Sweeper(Construct):
    """The sweeper function, its rule (every `sweep_interval_minutes`) and its table grant."""

    def __init__(self, scope: Construct, construct_id: str, *, deps: FunctionDependencies) -> None:
        super().__init__(scope, construct_id)
        config = deps.config
        self.sweeper = PetrelFunction(self, "Sweeper", definition=SWEEPER, deps=deps)
        function = self.sweeper.function
        table = deps.tables.table(resources.MESSAGES)
        function.add_environment(resources.MESSAGES.env_var, table.table_name)
        # Scan only (granted by its definition's `scans`): which tenants there are.
        function.add_environment(resources.TENANTS.env_var, deps.tables.table(resources.TENANTS).table_name)
        iam.Grant.add_to_principal(
            grantee=function,
            actions=list(QUERY_ACTIONS),
            resource_arns=[
                f"{table.table_arn}/index/{index.name}" for index in (resources.DUE_INDEX, resources.BY_TENANT)
            ],
        )
        iam.Grant.add_to_principal(grantee=function, actions=list(UPDATE_ACTIONS), resource_arns=[table.table_arn])
        iam.Grant.add_to_principal(grantee=function, actions=list(READ_ACTIONS), resource_arns=[table.table_arn])
        # The send queues' depth: a backlog is not a lost job (petrel.services.sweep).
        iam.Grant.add_to_principal(
            grantee=function,
            actions=list(QUEUE_DEPTH_ACTIONS),
            resource_arns=[deps.queues.queue(spec).queue_arn for spec in resources.SEND_QUEUES],
        )
        self.rule = events.Rule(
            self,
            "Schedule",
            rule_name=config.physical_name("sweeper"),
            description="Runs the sweeper: repairs messages whose way forward was lost",
            schedule=events.Schedule.rate(Duration.minutes(config.sweep_interval_minutes)),
            # A run missed is made up by the next one: no retry, no queue of runs.
            targets=[targets.LambdaFunction(function, retry_attempts=0, max_event_age=Duration.minutes(1))],
        )
