"""services.attachments with fakes: declare, upload through the pre-signed URL, reference from an email."""

from __future__ import annotations

import email
import os
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from petrel.errors import InvalidRequest, PayloadTooLarge, TenantSuspended
from petrel.ids import is_id
from petrel.models.api import SendEmailRequest
from petrel.models.attachments import CreateAttachmentRequest
from petrel.models.records import Tenant
from petrel.ports import EmailKey
from petrel.services.attachments import AttachmentDeps, create_attachment, encoded_size, upload_key
from petrel.services.submit import submit_email
from tests.fakes import FakeWorld, Seeded
from tests.fakes.infra import FakeBlobStore


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    world.blobs = FakeBlobStore(world.clock)
    return world.seed()


def _deps(world: FakeWorld) -> AttachmentDeps:
    return AttachmentDeps(blobs=world.blobs, clock=world.clock)


def _declare(world: FakeWorld, tenant: Tenant, size: int, name: str = "report.pdf") -> Any:
    request = CreateAttachmentRequest(filename=name, content_type="application/pdf", size=size)
    return create_attachment(_deps(world), tenant, request)


def _email(*attachments: dict[str, Any]) -> SendEmailRequest:
    return SendEmailRequest.model_validate(
        {
            "from": "jane@example.com",
            "to": "bob@example.org",
            "subject": "Report",
            "text": "Attached.",
            "attachments": list(attachments),
        }
    )


def _stored_message(world: FakeWorld, tenant_id: str, email_id: str) -> EmailMessage:
    record = world.messages.emails[EmailKey(tenant_id, email_id)]
    raw = record.body_inline if record.body_inline is not None else world.blobs.get(record.body_key or "")
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_declare_gives_a_tenant_scoped_upload_url(world: FakeWorld, seeded: Seeded) -> None:
    upload = _declare(world, seeded.tenant, 1234)

    assert is_id(upload.id, "att")
    assert upload.upload_method == "PUT" and upload.upload_headers == {"Content-Type": "application/pdf"}
    assert (upload.upload_expires_at - world.clock.now()).total_seconds() == 900
    assert (upload.expires_at - world.clock.now()).total_seconds() == 86_400
    assert upload_key(seeded.tenant.tenant_id, upload.id) == f"attachments/{seeded.tenant.tenant_id}/{upload.id}"
    assert world.blobs.size(upload_key(seeded.tenant.tenant_id, upload.id)) is None  # nothing uploaded yet


def test_a_suspended_tenant_declares_nothing(world: FakeWorld, seeded: Seeded) -> None:
    """An upload is the first step of a send: a suspended tenant gets the sends' 403 and stores nothing."""
    suspended = seeded.tenant.model_copy(
        update={"suspended_at": world.clock.now(), "suspended_reason": "unpaid invoice"}
    )

    with pytest.raises(TenantSuspended) as caught:
        _declare(world, suspended, 1234)

    assert "unpaid invoice" in caught.value.detail
    assert world.blobs.blobs == {}
    resumed = suspended.model_copy(update={"suspended_at": None, "suspended_reason": None})
    assert is_id(_declare(world, resumed, 1234).id, "att")  # resumed: the same declaration passes


def test_an_email_of_several_megabytes_through_an_uploaded_attachment(world: FakeWorld, seeded: Seeded) -> None:
    data = os.urandom(6 * 1024 * 1024)  # more than any request body may carry
    upload = _declare(world, seeded.tenant, len(data))
    world.blobs.upload(upload.upload_url, data, "application/pdf")

    response = submit_email(
        world.submit_deps(),
        seeded.tenant,
        _email({"attachment_id": upload.id}, {"filename": "a.txt", "content": "aGk="}),
    )

    record = world.messages.emails[EmailKey(seeded.tenant.tenant_id, response.id)]
    assert record.body_key is not None and record.size > len(data)  # a large body goes to the blob store
    parts = list(_stored_message(world, seeded.tenant.tenant_id, response.id).iter_attachments())
    assert [(p.get_filename(), p.get_content_type()) for p in parts] == [
        ("report.pdf", "application/pdf"),
        ("a.txt", "application/octet-stream"),
    ]
    assert parts[0].get_content() == data and parts[1].get_content() == b"hi"


def test_an_upload_of_another_size_than_declared_is_refused(world: FakeWorld, seeded: Seeded) -> None:
    upload = _declare(world, seeded.tenant, 1000)
    world.blobs.upload(upload.upload_url, b"x" * 999, "application/pdf", check_length=False)

    with pytest.raises(InvalidRequest) as caught:
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": upload.id}))

    assert caught.value.extra["errors"] == [
        {
            "pointer": "/attachments/0/attachment_id",
            "detail": f"attachment {upload.id} (report.pdf) is 999 bytes, but 1000 were declared",
        }
    ]
    assert world.messages.emails == {}


def test_a_missing_upload_is_refused_naming_it(world: FakeWorld, seeded: Seeded) -> None:
    uploaded = _declare(world, seeded.tenant, 3)
    world.blobs.upload(uploaded.upload_url, b"abc", "application/pdf")
    missing = _declare(world, seeded.tenant, 10, "missing.pdf")

    with pytest.raises(InvalidRequest) as caught:
        submit_email(
            world.submit_deps(), seeded.tenant, _email({"attachment_id": uploaded.id}, {"attachment_id": missing.id})
        )

    [error] = caught.value.extra["errors"]
    assert error["pointer"] == "/attachments/1/attachment_id"
    assert missing.id in error["detail"] and "was not uploaded" in error["detail"]
    assert world.messages.emails == {} and world.queue.sent["transactional"] == []


def test_another_tenants_attachment_is_unknown(world: FakeWorld, seeded: Seeded) -> None:
    other = world.seed(domain="other.example")
    theirs = _declare(world, other.tenant, 3)
    world.blobs.upload(theirs.upload_url, b"abc", "application/pdf")

    with pytest.raises(InvalidRequest) as caught:
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": theirs.id}))

    assert caught.value.extra["errors"][0]["detail"].startswith(f"no attachment {theirs.id}")


def test_an_expired_attachment_is_refused(world: FakeWorld, seeded: Seeded) -> None:
    upload = _declare(world, seeded.tenant, 3)
    world.blobs.upload(upload.upload_url, b"abc", "application/pdf")
    world.clock.advance(hours=24)

    with pytest.raises(InvalidRequest, match="expired"):
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": upload.id}))


def test_the_upload_url_expires(world: FakeWorld, seeded: Seeded) -> None:
    upload = _declare(world, seeded.tenant, 3)
    world.clock.advance(seconds=901)
    with pytest.raises(PermissionError):
        world.blobs.upload(upload.upload_url, b"abc", "application/pdf")


def test_a_file_too_large_for_the_tenant_is_refused_when_declared(world: FakeWorld, seeded: Seeded) -> None:
    limit = seeded.tenant.max_message_bytes
    assert limit == 25 * 1024 * 1024  # the default, as the hosted providers allow
    fits = limit * 3 // 4 - 1024 * 1024
    assert encoded_size(fits) < limit
    _declare(world, seeded.tenant, fits)
    with pytest.raises(PayloadTooLarge):
        _declare(world, seeded.tenant, limit)


def test_uploads_together_larger_than_the_tenant_allows_are_refused_before_reading(
    world: FakeWorld, seeded: Seeded
) -> None:
    small = seeded.tenant.model_copy(update={"max_message_bytes": 10_000})
    uploads = [_declare(world, small, 4000, f"{n}.pdf") for n in range(2)]
    for upload in uploads:
        world.blobs.upload(upload.upload_url, b"x" * 4000, "application/pdf")
    gets = world.blobs.gets

    with pytest.raises(PayloadTooLarge):
        submit_email(world.submit_deps(), small, _email(*({"attachment_id": u.id} for u in uploads)))
    assert world.blobs.gets == gets + 2  # the two declarations, not the files


@pytest.mark.parametrize(
    "attachment",
    [
        {"attachment_id": "att_01KF0FV2E0DVJEP50C23WH063E", "content": "aGk="},
        {"attachment_id": "att_01KF0FV2E0DVJEP50C23WH063E", "filename": "x.pdf"},
        {"attachment_id": "not-an-id"},
        {"filename": "x.pdf"},
        {"content": "aGk="},
    ],
)
def test_an_attachment_is_inline_or_uploaded(attachment: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _email(attachment)
