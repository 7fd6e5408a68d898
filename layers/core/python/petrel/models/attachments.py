"""Attachments uploaded before the email that references them (`POST /v1/attachments`).

A request body is at most `MAX_REQUEST_BYTES`; a file larger than fits there (base64 in JSON) is
declared first, uploaded straight to S3 with a short-lived pre-signed PUT URL, then referenced from
the email as `{"attachment_id": "att_..."}`.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from petrel.models.api import DEFAULT_CONTENT_TYPE, ApiModel, check_content_type, check_filename


class CreateAttachmentRequest(ApiModel):
    """The file to be uploaded: its name and type (as the email will show them) and its exact size."""

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default=DEFAULT_CONTENT_TYPE, description="MIME type, e.g. application/pdf")
    size: int = Field(ge=1, description="The file's exact size in bytes; the upload must be exactly this long")

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        return check_filename(value)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        return check_content_type(value)


class AttachmentUpload(ApiModel):
    id: str = Field(description='Reference it from an email as `{"attachment_id": id}`')
    filename: str
    content_type: str
    size: int
    upload_url: str = Field(description="PUT the file's bytes here, before `upload_expires_at`")
    upload_method: str = Field(default="PUT")
    upload_headers: dict[str, str] = Field(
        description="Headers the upload must carry exactly (the URL's signature covers them)"
    )
    upload_expires_at: datetime = Field(description="The upload URL works until then")
    expires_at: datetime = Field(description="An email may reference the attachment until then")


class StoredAttachment(BaseModel):
    """What `POST /v1/attachments` declared, kept next to the upload (`<upload key>.json`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant_id: str
    attachment_id: str
    filename: str
    content_type: str
    size: int
    created_at: AwareDatetime
    expires_at: AwareDatetime
