"""In-memory InboundStore and IngestQueue with the real adapters' rules: a create is all or nothing
and refuses an id that exists; listings are newest first with cursors only their own listing takes."""

from __future__ import annotations

import json
from collections.abc import Callable

from petrel import resources
from petrel.models.inbound import InboundContent, InboundKind, InboundRecord, IngestJob
from petrel.ports import AlreadyExists, InboundPage, RecordNotFound
from tests.fakes.cursors import decode_cursor, encode_cursor


def _received_key(record: InboundRecord) -> str:
    return resources.received_key(record.received_at, record.inbound_id)


def _listing(tenant_id: str, kind: InboundKind | None, email_id: str | None) -> str:
    """The identity of one listing: a cursor is taken only by the listing that handed it out."""
    return json.dumps([tenant_id, kind.value if kind else None, email_id])


class FakeInboundStore:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], InboundRecord] = {}
        self.contents: dict[tuple[str, str], InboundContent] = {}
        self.expires_at: dict[tuple[str, str], int] = {}

    def create_inbound(self, record: InboundRecord, content: InboundContent, *, expires_at: int) -> None:
        key = (record.tenant_id, record.inbound_id)
        if key in self.records:
            raise AlreadyExists(f"incoming message {record.inbound_id} exists")
        self.records[key] = record
        self.contents[key] = content
        self.expires_at[key] = expires_at

    def get_inbound(self, tenant_id: str, inbound_id: str) -> InboundRecord | None:
        return self.records.get((tenant_id, inbound_id))

    def get_content(self, tenant_id: str, inbound_id: str) -> InboundContent | None:
        return self.contents.get((tenant_id, inbound_id))

    def set_outcome(self, tenant_id: str, inbound_id: str, outcome: str) -> None:
        record = self.records.get((tenant_id, inbound_id))
        if record is None:
            raise RecordNotFound(f"no incoming message {inbound_id}")
        self.records[(tenant_id, inbound_id)] = record.model_copy(update={"outcome": outcome})

    def list_inbound(
        self,
        tenant_id: str,
        *,
        kind: InboundKind | None,
        email_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> InboundPage:
        listing = _listing(tenant_id, kind, email_id)
        candidates = sorted(
            (
                r
                for (t, _), r in self.records.items()
                if t == tenant_id
                and kind in (None, r.kind)
                and (email_id is None or (r.related is not None and r.related.email_id == email_id))
            ),
            key=_received_key,
            reverse=True,
        )
        if cursor:
            after = decode_cursor(cursor, listing)
            candidates = [r for r in candidates if _received_key(r) < after]
        page = candidates[:limit]
        more = len(candidates) > limit
        return InboundPage(records=page, cursor=encode_cursor(listing, _received_key(page[-1])) if more else None)


class IngestQueueDown(RuntimeError):
    pass


class FakeIngestQueue:
    """Jobs land in `jobs`. `fail = True` refuses every send, `fail_when(job)` some, like SQS down."""

    def __init__(self) -> None:
        self.jobs: list[IngestJob] = []
        self.fail = False
        self.fail_when: Callable[[IngestJob], bool] = lambda job: False
        self.attempts = 0  # sends tried, refused ones included

    def send_ingest(self, job: IngestJob) -> None:
        self.attempts += 1
        if self.fail or self.fail_when(job):
            raise IngestQueueDown(f"ingest queue refused {job.inbound_id}")
        self.jobs.append(job)

    def drain(self) -> list[IngestJob]:
        """The jobs waiting on the queue, taken off it."""
        jobs, self.jobs = self.jobs, []
        return jobs
