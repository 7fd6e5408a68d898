"""What the API's routes are built on: the ports of a container, and the services' bundles made from them.

`ApiPorts` is structural: the deployed `ApiContainer` satisfies it with DynamoDB, S3, SQS and
Scheduler adapters; a test satisfies it with the in-memory fakes (tests/fakes), so every route's
success path runs without AWS and without patching anything.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from petrel.observability import Telemetry
    from petrel.ports import (
        BlobStore,
        Clock,
        DnsResolver,
        IdempotencyStore,
        InboundStore,
        IngestQueue,
        JobQueue,
        MailboxStore,
        MessageStore,
        RetryScheduler,
        SecretStore,
        SuppressionStore,
        TenantStore,
    )
    from petrel.services.attachments import AttachmentDeps
    from petrel.services.cancel import CancelDeps
    from petrel.services.domains import DomainDeps
    from petrel.services.inbound_api import InboundApiDeps
    from petrel.services.submit import SubmitDeps


class ApiPorts(Protocol):
    """The API function's ports and the settings its services need (read-only)."""

    @property
    def tenants(self) -> TenantStore: ...
    # The same store as the send routes read it: a few seconds' cache deployed (ApiSettings).
    @property
    def sender_config(self) -> TenantStore: ...
    @property
    def messages(self) -> MessageStore: ...
    @property
    def suppressions(self) -> SuppressionStore: ...
    @property
    def idempotency(self) -> IdempotencyStore: ...
    @property
    def blobs(self) -> BlobStore: ...
    @property
    def queue(self) -> JobQueue: ...
    @property
    def scheduler(self) -> RetryScheduler: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def retention_days(self) -> int: ...
    @property
    def inline_body_limit(self) -> int: ...
    # Whether each request leaves an access line on the function's log (ApiSettings.access_log).
    @property
    def access_log(self) -> bool: ...
    @property
    def inbound(self) -> InboundStore: ...
    @property
    def ingest(self) -> IngestQueue: ...
    @property
    def link_seconds(self) -> int: ...
    # sending domains: their DKIM keys (Secrets Manager), DNS lookups, the tenant's mailboxes (`receives`)
    @property
    def secrets(self) -> SecretStore: ...
    @property
    def resolver(self) -> DnsResolver: ...
    @property
    def mailboxes(self) -> MailboxStore: ...
    @property
    def secrets_prefix(self) -> str: ...


class ApiServices:
    """The services' dependency bundles, each built from the ports on first use: a route pays only for
    the adapters it touches (the OpenAPI route touches none)."""

    def __init__(self, ports: ApiPorts) -> None:
        self.ports = ports

    @cached_property
    def submit(self) -> SubmitDeps:
        from petrel.services.submit import SubmitDeps

        p = self.ports
        return SubmitDeps(
            tenants=p.sender_config,
            messages=p.messages,
            blobs=p.blobs,
            queue=p.queue,
            scheduler=p.scheduler,
            clock=p.clock,
            retention_days=p.retention_days,
            inline_body_limit=p.inline_body_limit,
            log=p.telemetry.logger,
        )

    @cached_property
    def cancel(self) -> CancelDeps:
        from petrel.services.cancel import CancelDeps

        return CancelDeps(messages=self.ports.messages, scheduler=self.ports.scheduler, clock=self.ports.clock)

    @cached_property
    def attachments(self) -> AttachmentDeps:
        from petrel.services.attachments import AttachmentDeps

        return AttachmentDeps(blobs=self.ports.blobs, clock=self.ports.clock)

    @cached_property
    def inbound(self) -> InboundApiDeps:
        from petrel.services.inbound_api import InboundApiDeps

        p = self.ports
        return InboundApiDeps(
            inbound=p.inbound, blobs=p.blobs, ingest=p.ingest, clock=p.clock, link_seconds=p.link_seconds
        )

    @cached_property
    def domains(self) -> DomainDeps:
        from petrel.services.domains import domain_deps

        return domain_deps(self.ports)
