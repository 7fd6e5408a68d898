"""The body of a send queue message."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SendJob(BaseModel):
    """Deliver one recipient's message. Carries ids only: the store holds the truth."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1
    tenant_id: str
    email_id: str
    message_id: str
