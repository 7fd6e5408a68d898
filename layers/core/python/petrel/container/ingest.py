"""The ingest worker's container."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import FunctionContainer, message_store, suppression_store
from petrel.settings import IngestWorkerSettings

if TYPE_CHECKING:
    from petrel.services.ingest import IngestDeps


class IngestContainer(FunctionContainer[IngestWorkerSettings]):
    function = "ingest-worker"

    @classmethod
    def from_env(cls) -> IngestContainer:
        return cls(IngestWorkerSettings.from_env())

    @cached_property
    def ingest(self) -> IngestDeps:
        from petrel.adapters.blobs import S3BlobStore
        from petrel.container.base import inbound_store, mailbox_store
        from petrel.services.ingest import IngestDeps

        return IngestDeps(
            inbound=inbound_store(self.clients, self.settings.inbound_table, self.settings.bodies_bucket),
            messages=message_store(self.clients, self.settings.messages_table),
            suppressions=suppression_store(self.clients, self.settings.suppressions_table),
            mailboxes=mailbox_store(self.clients, self.settings.tenants_table),
            blobs=S3BlobStore(self.clients.s3(), self.settings.bodies_bucket),
            clock=self.clock,
            retention_days=self.settings.inbound_retention_days,
        )
