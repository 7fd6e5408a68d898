"""BlobStore, JobQueue, IngestQueue and SecretStore contracts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from petrel.adapters.aws import new_client
from petrel.adapters.blobs import S3BlobStore, content_disposition
from petrel.adapters.queues import SqsIngestQueue, SqsJobQueue
from petrel.models.inbound import IngestJob
from petrel.models.jobs import ReleaseJob, SendJob
from petrel.ports import AlreadyExists, RecordNotFound
from tests.fakes.clock import DEFAULT_START
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.contracts.backends import Backend


def test_blob_round_trip(backend: Backend) -> None:
    data = bytes(range(256)) * 1000 + b"\r\n.\r\n"
    backend.blobs.put("bodies/tn_a/em_1.eml", data)
    backend.blobs.put("bodies/tn_a/em_2.eml", b"other")

    assert backend.blobs.get("bodies/tn_a/em_1.eml") == data
    assert backend.blobs.get("bodies/tn_a/em_2.eml") == b"other"


def test_blob_overwrite_and_missing(backend: Backend) -> None:
    backend.blobs.put("k", b"one")
    backend.blobs.put("k", b"two")
    assert backend.blobs.get("k") == b"two"

    with pytest.raises(RecordNotFound):
        backend.blobs.get("missing")


def test_blob_size_of_present_and_missing_objects(backend: Backend) -> None:
    backend.blobs.put("attachments/tn_a/att_1.json", b"{}", "application/json")
    assert backend.blobs.size("attachments/tn_a/att_1.json") == 2
    assert backend.blobs.size("attachments/tn_a/att_missing") is None


def test_a_presigned_put_uploads_the_object(backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = backend.blobs.presign_put(
        "attachments/tn_a/att_2", content_type="application/pdf", size=len(data), expires_in=900
    )
    assert backend.blobs.size("attachments/tn_a/att_2") is None

    backend.upload(url, data, "application/pdf")

    assert backend.blobs.size("attachments/tn_a/att_2") == len(data)
    assert backend.blobs.get("attachments/tn_a/att_2") == data


@pytest.mark.parametrize("filename", [None, "report.pdf", 'résumé "final".pdf'])
def test_a_presigned_get_downloads_the_object(backend: Backend, filename: str | None) -> None:
    """What GET /v1/inbound/{id} hands out for each attachment: a link that needs no credentials."""
    data = bytes(range(256)) * 1024 + b"\r\n"
    backend.blobs.put("inbound/tn_a/in_1/att_1", data, "application/pdf")

    url = backend.blobs.presign_get("inbound/tn_a/in_1/att_1", expires_in=300, filename=filename)

    assert backend.download(url) == data
    backend.blobs.put("inbound/tn_a/in_1/att_1", b"replaced", "application/pdf")
    assert backend.download(url) == b"replaced"  # a link to the key, not to a copy


def test_a_presigned_get_of_a_missing_object_finds_nothing(backend: Backend) -> None:
    url = backend.blobs.presign_get("inbound/tn_a/in_1/missing", expires_in=300)
    with pytest.raises((PermissionError, RecordNotFound)):
        backend.download(url)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ('a "b" \\c.txt', 'attachment; filename="a \\"b\\" \\\\c.txt"'),
        ("résumé.pdf", "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
    ],
)
def test_s3_serves_a_presigned_get_as_a_named_attachment(
    boto_session: boto3.session.Session, monkeypatch: pytest.MonkeyPatch, filename: str, disposition: str
) -> None:
    """The signed link (SigV4, as the functions' clients sign) carries the response's Content-Disposition
    and its expiry; S3 answers with that header."""
    import requests

    clean_aws_environment(monkeypatch)
    with mock_aws():
        s3 = new_client(boto_session, "s3")
        s3.create_bucket(Bucket="petrel-test-links")
        blobs = S3BlobStore(s3, "petrel-test-links")
        blobs.put("inbound/tn_a/in_1/att_1", b"%PDF-1.7", "application/pdf")

        url = blobs.presign_get("inbound/tn_a/in_1/att_1", expires_in=600, filename=filename)
        response = requests.get(url, timeout=30)

    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["response-content-disposition"] == [disposition]
    assert response.status_code == 200 and response.content == b"%PDF-1.7"
    assert response.headers["Content-Disposition"] == disposition
    assert response.headers["Content-Type"] == "application/pdf"
    assert REGION in query["X-Amz-Credential"][0]


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("", 'attachment; filename=""'),
        ("a\r\nSet-Cookie: x=1.txt", 'attachment; filename="aSet-Cookie: x=1.txt"'),
        ("日本.txt", "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
        ("tab\there", 'attachment; filename="tabhere"'),
    ],
)
def test_content_disposition_never_breaks_the_header(filename: str, disposition: str) -> None:
    """Control characters are dropped (no header injection); anything beyond ASCII goes in filename*."""
    assert content_disposition(filename) == disposition


def _ingest_job(n: int) -> IngestJob:
    return IngestJob(
        tenant_id="tn_a",
        inbound_id=f"in_{n}",
        raw_key=f"inbound/tn_a/in_{n}/raw.eml",
        received_at=DEFAULT_START + timedelta(seconds=n),
        source="imap",
        mailbox_id="mb_1",
        folder="INBOX",
        uid=100 + n,
    )


def test_ingest_jobs_arrive_on_the_ingest_queue(backend: Backend) -> None:
    jobs = [_ingest_job(n) for n in range(12)]
    pushed = IngestJob(
        tenant_id="tn_a",
        inbound_id="in_p",
        raw_key="inbound/tn_a/in_p/raw.eml",
        received_at=DEFAULT_START,
        source="push",
    )
    for job in [*jobs, pushed]:
        backend.ingest.send_ingest(job)

    arrived = backend.ingested()

    assert sorted(arrived, key=lambda j: j.inbound_id) == sorted([*jobs, pushed], key=lambda j: j.inbound_id)
    assert backend.ingested() == []
    assert backend.arrived("transactional") == [] and backend.arrived("bulk") == []  # not on a send queue


@pytest.mark.integration
def test_sqs_ingest_queue_raises_when_the_queue_refuses(
    aws_clients: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller must not move its cursor past a message it could not queue: the send raises."""
    from botocore.exceptions import ClientError

    clean_aws_environment(monkeypatch)
    with mock_aws():
        queue = SqsIngestQueue(aws_clients["sqs"], "https://sqs.us-east-1.amazonaws.com/123456789012/gone")
        with pytest.raises(ClientError):
            queue.send_ingest(_ingest_job(1))


def _jobs(n: int, email_id: str = "em_1") -> list[SendJob]:
    return [SendJob(tenant_id="tn_a", email_id=email_id, message_id=f"msg_{i}") for i in range(n)]


def test_jobs_arrive_on_their_pools_queue(backend: Backend) -> None:
    transactional = _jobs(3, "em_t")
    bulk = _jobs(12, "em_b")  # more than one SQS batch

    assert backend.queue.send_jobs("transactional", transactional) == []
    assert backend.queue.send_jobs("bulk", bulk) == []

    arrived_t = backend.arrived("transactional")
    arrived_b = backend.arrived("bulk")
    assert sorted(arrived_t, key=lambda j: j.message_id) == sorted(transactional, key=lambda j: j.message_id)
    assert sorted(arrived_b, key=lambda j: j.message_id) == sorted(bulk, key=lambda j: j.message_id)
    assert backend.arrived("transactional") == []


def test_the_backlog_counts_the_jobs_on_a_pools_queue(backend: Backend) -> None:
    """What the sweeper reads before repairing waiting messages (a backlog is not a lost job)."""
    assert backend.queue.backlog("transactional") == 0
    assert backend.queue.send_jobs("transactional", _jobs(12)) == []
    assert backend.queue.send_jobs("bulk", _jobs(2, "em_b"), delay_seconds=60) == []  # delayed jobs count

    assert backend.queue.backlog("transactional") == 12
    assert backend.queue.backlog("bulk") == 2
    backend.arrived("transactional")
    assert backend.queue.backlog("transactional") == 0


def test_a_release_job_shares_the_send_queue(backend: Backend) -> None:
    release = ReleaseJob(tenant_id="tn_a", email_id="em_r", pool="bulk")

    assert backend.queue.send_jobs("bulk", [release, *_jobs(2, "em_r")]) == []

    arrived = backend.arrived("bulk")
    assert [j for j in arrived if isinstance(j, ReleaseJob)] == [release]
    assert sorted(j.message_id for j in arrived if isinstance(j, SendJob)) == ["msg_0", "msg_1"]


@pytest.mark.integration
def test_sqs_returns_the_jobs_it_could_not_enqueue(
    aws_clients: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `submit` relies on to mark a message failed rather than leave it queued forever."""
    clean_aws_environment(monkeypatch)
    jobs = _jobs(12)
    with mock_aws():
        queue = SqsJobQueue(
            aws_clients["sqs"], {"transactional": "https://sqs.us-east-1.amazonaws.com/123456789012/gone"}
        )
        assert queue.send_jobs("transactional", jobs) == jobs


def test_no_jobs_is_nothing_sent(backend: Backend) -> None:
    assert backend.queue.send_jobs("bulk", []) == []
    assert backend.arrived("bulk") == []


def test_secret_put_get_overwrite_delete(backend: Backend) -> None:
    name = "petrel-test/tenants/tn_a/smtp/srv_1"
    backend.secrets.put_secret(name, "first")
    assert backend.secrets.get_secret(name) == "first"

    backend.secrets.put_secret(name, "second")
    assert backend.secrets.get_secret(name) == "second"

    backend.secrets.delete_secret(name)
    with pytest.raises(RecordNotFound):
        backend.secrets.get_secret(name)
    with pytest.raises(RecordNotFound):  # deleted already
        backend.secrets.delete_secret(name)
    with pytest.raises(RecordNotFound):
        backend.secrets.delete_secret("petrel-test/tenants/tn_a/smtp/never")


def test_create_secret_never_replaces_one_live_or_deleted(backend: Backend) -> None:
    """Two writers of one name: the second is refused and the first's value stays. A deleted name
    stays taken for its recovery window (Secrets Manager's 7 days), and reads as missing meanwhile."""
    name = "petrel-test/tenants/tn_a/dkim/acme.test/s1"
    backend.secrets.create_secret(name, "first")
    assert backend.secrets.get_secret(name) == "first"

    with pytest.raises(AlreadyExists):
        backend.secrets.create_secret(name, "second")
    assert backend.secrets.get_secret(name) == "first"

    backend.secrets.delete_secret(name)
    with pytest.raises(AlreadyExists):
        backend.secrets.create_secret(name, "third")
    with pytest.raises(RecordNotFound):  # refused: nothing was written, the deleted secret stays deleted
        backend.secrets.get_secret(name)
    other = "petrel-test/tenants/tn_a/dkim/acme.test/s2"
    backend.secrets.create_secret(other, "fourth")  # another name is free
    assert backend.secrets.get_secret(other) == "fourth"


def test_missing_secret_raises(backend: Backend) -> None:
    with pytest.raises(RecordNotFound):
        backend.secrets.get_secret("petrel-test/tenants/tn_a/smtp/missing")
