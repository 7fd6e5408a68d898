"""One Petrel environment: the constructs put together, and the values operators need as outputs."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.alarms import AlarmedFunctions, PetrelAlarms
from infra.constructs.api import PetrelApi
from infra.constructs.bodies_bucket import BodiesBucket
from infra.constructs.domains import DomainChecker
from infra.constructs.functions import FunctionDependencies, PetrelLayers
from infra.constructs.ingest import IngestWorker, MailboxPoller
from infra.constructs.queues import PetrelQueues
from infra.constructs.schedules import PetrelSchedules
from infra.constructs.sweeper import Sweeper
from infra.constructs.tables import PetrelTables
from infra.constructs.waf import ApiFirewall
from infra.constructs.workers import SendWorkers
from petrel import resources


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


class PetrelStack(Stack):
    """Assembles the constructs; defines no resources of its own."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.tables = PetrelTables(self, "Tables", config=config)
        self.queues = PetrelQueues(self, "Queues", config=config)
        self.bodies = BodiesBucket(self, "Bodies", config=config)
        self.schedules = PetrelSchedules(self, "Schedules", config=config, queues=self.queues)
        self.layers = PetrelLayers(self, "Layers", config=config)
        deps = FunctionDependencies(
            config=config,
            layers=self.layers,
            tables=self.tables,
            queues=self.queues,
            bodies=self.bodies,
            schedules=self.schedules,
        )
        self.api = PetrelApi(self, "Api", deps=deps)
        self.firewall = (
            ApiFirewall(self, "Firewall", config=config, stage=self.api.rest_api.deployment_stage)
            if config.waf
            else None
        )
        self.workers = SendWorkers(self, "Workers", deps=deps)
        self.sweeper = Sweeper(self, "Sweeper", deps=deps)
        self.poller = MailboxPoller(self, "Poller", deps=deps)
        self.ingest = IngestWorker(self, "Ingest", deps=deps)
        self.domain_checker = DomainChecker(self, "Domains", deps=deps)
        self.alarms = PetrelAlarms(
            self,
            "Alarms",
            config=config,
            queues=self.queues,
            schedules=self.schedules,
            functions=AlarmedFunctions(
                send_worker=self.workers.worker.function,
                sweeper=self.sweeper.sweeper.function,
                poller=self.poller.poller.function,
                ingest_worker=self.ingest.worker.function,
                domain_checker=self.domain_checker.checker.function,
            ),
        )
        self._outputs()

    def _outputs(self) -> None:
        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the API stage; routes start with v1/")
        CfnOutput(
            self,
            "AdminPolicyArn",
            value=self.api.admin_policy.managed_policy_arn,
            description="Attach to an operator's IAM user or role to call the admin API (v1/admin/, SigV4)",
        )
        for spec in resources.TABLES:
            CfnOutput(
                self,
                f"{_pascal(spec.name)}TableName",
                value=self.tables.table(spec).table_name,
                description=f"Set as {spec.env_var}",
            )
        for queue in resources.QUEUES:
            CfnOutput(
                self,
                f"{_pascal(queue.name)}QueueUrl",
                value=self.queues.queue(queue).queue_url,
                description=f"Set as {queue.env_var}",
            )
            CfnOutput(
                self,
                f"{_pascal(queue.name)}DlqUrl",
                value=self.queues.dead_letter_queue(queue).queue_url,
                description=f"Dead-letter queue of {queue.name}",
            )
        schedules = resources.SCHEDULES
        CfnOutput(
            self,
            "ScheduleGroupName",
            value=self.schedules.group.schedule_group_name,
            description=f"Set as {schedules.group_env_var}",
        )
        CfnOutput(
            self,
            "SchedulerRoleArn",
            value=self.schedules.role.role_arn,
            description=f"Set as {schedules.role_env_var}",
        )
        CfnOutput(
            self,
            "SchedulesDlqUrl",
            value=self.schedules.dlq.queue_url,
            description=f"Dead-letter queue of the schedules; its ARN is set as {schedules.dlq_arn_env_var}",
        )
        CfnOutput(
            self,
            "BodiesBucketName",
            value=self.bodies.bucket.bucket_name,
            description=f"Set as {resources.BODIES_BUCKET_ENV}",
        )
        CfnOutput(
            self,
            "SecretsPrefix",
            value=self.config.secrets_prefix,
            description=f"Set as {resources.SECRETS_PREFIX_ENV}; tenant secrets are named under it",
        )
