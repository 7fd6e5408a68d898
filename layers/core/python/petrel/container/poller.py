"""The IMAP poller's container: the mailboxes (tenants table), their passwords, the bodies bucket, the
ingest queue and the IMAP reader, wired into the poll service's deps on first use."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from petrel.container.base import FunctionContainer, ingest_queue, mailbox_store, secret_store
from petrel.settings import PollerSettings

if TYPE_CHECKING:
    from petrel.services.poll import PollDeps


class PollerContainer(FunctionContainer[PollerSettings]):
    function = "imap-poller"

    @classmethod
    def from_env(cls) -> PollerContainer:
        return cls(PollerSettings.from_env())

    @cached_property
    def poll(self) -> PollDeps:
        from petrel.adapters.blobs import S3BlobStore
        from petrel.adapters.imap import ImapClientReader
        from petrel.services.poll import PollDeps

        settings = self.settings
        return PollDeps(
            mailboxes=mailbox_store(self.clients, settings.tenants_table),
            reader=ImapClientReader(timeout=settings.imap_timeout_seconds),
            secrets=secret_store(self.clients),
            blobs=S3BlobStore(self.clients.s3(), settings.bodies_bucket),
            queue=ingest_queue(self.clients, settings.ingest_queue_url),
            clock=self.clock,
            batch=settings.batch,
            concurrency=settings.concurrency,
        )
