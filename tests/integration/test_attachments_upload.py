"""Attachments uploaded first, against moto's S3 server over real HTTP: the pre-signed URL the adapter
makes takes a plain HTTP PUT (as from a tenant's client), and submission reads the upload back."""

from __future__ import annotations

import contextlib
import email
import os
import socket
import urllib.request
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from petrel.adapters.blobs import S3BlobStore
from petrel.errors import InvalidRequest
from petrel.models.api import SendEmailRequest
from petrel.models.attachments import AttachmentUpload, CreateAttachmentRequest
from petrel.models.records import Tenant
from petrel.ports import EmailKey
from petrel.services.attachments import AttachmentDeps, create_attachment
from petrel.services.submit import submit_email
from tests.fakes import FakeWorld, Seeded
from tests.integration.aws_env import REGION, clean_aws_environment

pytestmark = pytest.mark.integration

BUCKET = "petrel-test-bodies"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def blobs(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3BlobStore:
    clean_aws_environment(monkeypatch)
    client = boto3.session.Session(
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    ).client("s3", endpoint_url=s3_endpoint, config=Config(signature_version="s3v4"))
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    return S3BlobStore(client, BUCKET)


@pytest.fixture
def world(blobs: S3BlobStore) -> FakeWorld:
    world = FakeWorld()
    world.blobs = blobs  # type: ignore[assignment]  # the real adapter, on moto's server
    return world


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def _declare(world: FakeWorld, tenant: Tenant, size: int) -> AttachmentUpload:
    request = CreateAttachmentRequest(filename="scan.pdf", content_type="application/pdf", size=size)
    return create_attachment(AttachmentDeps(blobs=world.blobs, clock=world.clock), tenant, request)


def _put(upload: AttachmentUpload, data: bytes) -> int:
    """A plain HTTP PUT, with only the headers the API told the client to send."""
    request = urllib.request.Request(upload.upload_url, data=data, method="PUT", headers=upload.upload_headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        status: int = response.status
        return status


def _email(*attachments: dict[str, Any]) -> SendEmailRequest:
    return SendEmailRequest.model_validate(
        {
            "from": "jane@example.com",
            "to": "bob@example.org",
            "subject": "Scan",
            "text": "Attached.",
            "attachments": list(attachments),
        }
    )


def test_the_upload_url_takes_a_real_http_put(world: FakeWorld, seeded: Seeded, s3_endpoint: str) -> None:
    upload = _declare(world, seeded.tenant, 5)

    assert upload.upload_url.startswith(f"{s3_endpoint}/{BUCKET}/attachments/{seeded.tenant.tenant_id}/{upload.id}?")
    assert "X-Amz-Signature=" in upload.upload_url and "content-length%3Bcontent-type" in upload.upload_url
    assert _put(upload, b"hello") == 200
    assert world.blobs.get(f"attachments/{seeded.tenant.tenant_id}/{upload.id}") == b"hello"


def test_an_email_with_an_uploaded_attachment_of_several_megabytes(world: FakeWorld, seeded: Seeded) -> None:
    data = os.urandom(7 * 1024 * 1024)  # larger than any request body the API takes
    upload = _declare(world, seeded.tenant, len(data))
    _put(upload, data)

    response = submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": upload.id}))

    record = world.messages.emails[EmailKey(seeded.tenant.tenant_id, response.id)]
    assert record.body_key == f"bodies/{seeded.tenant.tenant_id}/{response.id}.eml"
    message = email.message_from_bytes(world.blobs.get(record.body_key), policy=policy.default)
    assert isinstance(message, EmailMessage)
    [part] = list(message.iter_attachments())
    assert (part.get_filename(), part.get_content_type(), part.get_content()) == ("scan.pdf", "application/pdf", data)


def test_an_upload_of_another_length_is_refused_at_submission(world: FakeWorld, seeded: Seeded) -> None:
    """moto does not check signatures (S3 itself would refuse this PUT): submission checks the length."""
    upload = _declare(world, seeded.tenant, 100)
    _put(upload, b"x" * 150)

    with pytest.raises(InvalidRequest, match=f"attachment {upload.id} \\(scan.pdf\\) is 150 bytes, but 100"):
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": upload.id}))
    assert world.messages.emails == {}


def test_a_missing_upload_is_refused_at_submission(world: FakeWorld, seeded: Seeded) -> None:
    upload = _declare(world, seeded.tenant, 100)

    with pytest.raises(InvalidRequest, match="was not uploaded") as caught:
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": upload.id}))
    assert caught.value.extra["errors"][0]["pointer"] == "/attachments/0/attachment_id"


def test_another_tenants_upload_is_not_found(world: FakeWorld, seeded: Seeded) -> None:
    other = world.seed(domain="other.example")
    theirs = _declare(world, other.tenant, 5)
    _put(theirs, b"hello")

    with pytest.raises(InvalidRequest, match=f"no attachment {theirs.id}"):
        submit_email(world.submit_deps(), seeded.tenant, _email({"attachment_id": theirs.id}))
