"""The body of a send queue message."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
