"""The bodies of send queue messages: a SendJob (one recipient's message), or a ReleaseJob (an
email whose `send_at` has come, put on the queue by its one schedule)."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

from petrel.models.records import Pool


class SendJob(BaseModel):
    """Deliver one recipient's message. Carries ids only: the store holds the truth.

    `attempt` is the attempt this job follows (0: the first send, or the release of a scheduled
    message); a job whose attempt is already done does nothing. `pool` names the send queue, so a
    job found in a dead-letter queue can be put back where it belongs.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    tenant_id: str
    email_id: str
    message_id: str
    attempt: int = Field(default=0, ge=0)
    pool: Pool = "transactional"
    # The recipient's domain, so the worker can shape traffic per destination provider before it leases
    # the message (petrel.services.dispatch); jobs queued before it was added carry none.
    domain: str | None = None


def recipient_domain(address: str) -> str:
    """The domain of a recipient's address, lower-cased (a SendJob's `domain`)."""
    return address.rpartition("@")[2].lower()


class ReleaseJob(BaseModel):
    """Release a scheduled email: a SendJob (attempt 0) for each of its messages still `scheduled`.

    The target of the email's one `send_at` schedule. Firing twice, or late, is harmless: a message
    already released is leased once only (the lease rules), one cancelled or sent is no longer
    `scheduled`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    kind: Literal["release"] = "release"
    tenant_id: str
    email_id: str
    pool: Pool = "transactional"


Job = SendJob | ReleaseJob


def job_kind(body: Any) -> str:
    """The union's discriminator: `release` when the body says so, else `send`.

    A SendJob carries no `kind` (the bodies already on queues, in schedules and in DLQs have none), so the
    tag is computed rather than read from a required field.
    """
    kind = body.get("kind") if isinstance(body, dict) else getattr(body, "kind", None)
    return "release" if kind == "release" else "send"


# A send queue message's body: one model for the worker's SQS records (a `Json[JobBody]` field) and
# for every other reader of a job (parse_job).
JobBody = Annotated[
    Annotated[SendJob, Tag("send")] | Annotated[ReleaseJob, Tag("release")],
    Discriminator(job_kind),
]


@cache
def _job_body() -> TypeAdapter[Job]:
    """Built on first use: the API imports this module for SendJob alone."""
    return TypeAdapter(JobBody)


def parse_job(body: str | bytes) -> Job:
    """The job in a send queue message's body: a ReleaseJob when its `kind` says so, else a SendJob.

    Raises pydantic's ValidationError (a ValueError) when the body is neither, or not JSON at all.
    """
    return _job_body().validate_json(body)
