"""The sweeper's container."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import FunctionContainer, message_store, tenant_store
from petrel.settings import SweeperSettings

if TYPE_CHECKING:
    from petrel.services.sweep import SweepDeps


class SweeperContainer(FunctionContainer[SweeperSettings]):
    function = "sweeper"

    @classmethod
    def from_env(cls) -> SweeperContainer:
        return cls(SweeperSettings.from_env())

    @cached_property
    def sweep(self) -> SweepDeps:
        from petrel import resources
        from petrel.adapters.queues import SqsJobQueue
        from petrel.services.sweep import SweepDeps

        return SweepDeps(
            messages=message_store(self.clients, self.settings.messages_table),
            queue=SqsJobQueue(self.clients.sqs(), self.settings.queue_urls()),
            clock=self.clock,
            shards=resources.due_shards(),
            tenant_ids=self.tenant_ids,
            grace_seconds=self.settings.grace_seconds,
            max_messages=self.settings.max_messages,
            backlog_limit=self.settings.backlog_limit,
        )

    def tenant_ids(self) -> list[str]:
        """Every tenant's id (a scan of the tenants table's tenant items), once per run."""
        return [t.tenant_id for t in tenant_store(self.clients, self.settings.tenants_table).list_tenants()]
