"""Each function's environment as a pydantic settings model, validated once at cold start.

Names of the environment variables come from `petrel.resources`, so the CDK constructs that set
them and the code that reads them cannot disagree.
"""

from __future__ import annotations

import os
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from petrel import resources as r


class _Settings(BaseModel):
    """Read from the process environment by each field's alias (pydantic-settings costs ~100 ms to import)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls) -> Self:
        return cls.model_validate(dict(os.environ))


class AuthorizerSettings(_Settings):
    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)


class StoreSettings(_Settings):
    """What every function that reads or writes messages needs."""

    tenants_table: str = Field(validation_alias=r.TENANTS.env_var)
    messages_table: str = Field(validation_alias=r.MESSAGES.env_var)
    bodies_bucket: str = Field(validation_alias=r.BODIES_BUCKET_ENV)
    message_retention_days: int = Field(default=30, ge=1, validation_alias="PETREL_MESSAGE_RETENTION_DAYS")


class ApiSettings(StoreSettings):
    idempotency_table: str = Field(validation_alias=r.IDEMPOTENCY.env_var)
    send_transactional_queue_url: str = Field(validation_alias=r.SEND_TRANSACTIONAL.env_var)
    send_bulk_queue_url: str = Field(validation_alias=r.SEND_BULK.env_var)
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    inline_body_limit: int = Field(default=96 * 1024, ge=1024, validation_alias="PETREL_INLINE_BODY_LIMIT")

    def queue_urls(self) -> dict[str, str]:
        return {"transactional": self.send_transactional_queue_url, "bulk": self.send_bulk_queue_url}


class SendWorkerSettings(StoreSettings):
    secrets_prefix: str = Field(validation_alias=r.SECRETS_PREFIX_ENV)
    lease_seconds: int = Field(default=120, ge=5, validation_alias="PETREL_LEASE_SECONDS")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, validation_alias="PETREL_SMTP_TIMEOUT_SECONDS")
    config_cache_seconds: float = Field(default=60.0, ge=0, validation_alias="PETREL_CONFIG_CACHE_SECONDS")
