"""BlobStore, JobQueue and SecretStore contracts."""

from __future__ import annotations

from typing import Any

import pytest
from moto import mock_aws

from petrel.adapters.queues import SqsJobQueue
from petrel.models.jobs import ReleaseJob, SendJob
from petrel.ports import RecordNotFound
from tests.integration.aws_env import clean_aws_environment
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


def test_missing_secret_raises(backend: Backend) -> None:
    with pytest.raises(RecordNotFound):
        backend.secrets.get_secret("petrel-test/tenants/tn_a/smtp/missing")
