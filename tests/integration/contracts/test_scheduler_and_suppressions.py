"""RetryScheduler and SuppressionStore contracts (the fakes and the adapters under moto)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from petrel.models.jobs import ReleaseJob, SendJob
from petrel.models.records import Suppression
from petrel.ports import AlreadyExists, InvalidCursor, RecordNotFound
from tests.fakes.clock import DEFAULT_START
from tests.integration.contracts.backends import Backend

JOB = SendJob(tenant_id="tn_a", email_id="em_1", message_id="msg_1", attempt=2, pool="bulk")
AT = DEFAULT_START + timedelta(minutes=5)


def test_a_schedule_holds_its_time_and_job(backend: Backend) -> None:
    backend.scheduler.schedule("msg_1-2", AT, JOB)

    assert backend.scheduled("msg_1-2") == (AT, JOB)


def test_a_second_create_of_the_same_name_collides_and_changes_nothing(backend: Backend) -> None:
    backend.scheduler.schedule("msg_1-2", AT, JOB)

    with pytest.raises(AlreadyExists):
        backend.scheduler.schedule("msg_1-2", AT + timedelta(hours=1), JOB.model_copy(update={"attempt": 9}))
    assert backend.scheduled("msg_1-2") == (AT, JOB)


def test_sub_second_times_round_up_never_early(backend: Backend) -> None:
    backend.scheduler.schedule("msg_1-3", AT + timedelta(milliseconds=10), JOB)

    found = backend.scheduled("msg_1-3")
    assert found is not None and AT < found[0] <= AT + timedelta(seconds=1)


def test_a_release_schedule_holds_its_release_job(backend: Backend) -> None:
    release = ReleaseJob(tenant_id="tn_a", email_id="em_1", pool="bulk")

    backend.scheduler.schedule("em_1-release", AT, release)

    assert backend.scheduled("em_1-release") == (AT, release)


def test_cancel(backend: Backend) -> None:
    backend.scheduler.schedule("msg_1-2", AT, JOB)

    backend.scheduler.cancel("msg_1-2")
    assert backend.scheduled("msg_1-2") is None
    with pytest.raises(RecordNotFound):
        backend.scheduler.cancel("msg_1-2")
    with pytest.raises(RecordNotFound):
        backend.scheduler.cancel("never-made-0")


def _suppression(email: str, tenant_id: str = "tn_a", reason: str = "hard-bounce") -> Suppression:
    return Suppression(
        tenant_id=tenant_id,
        email=email,
        reason=reason,
        detail="550 5.1.1 no such user",
        message_id="msg_1",
        created_at=DEFAULT_START,
    )


def test_suppressions_add_get_remove_case_blind(backend: Backend) -> None:
    backend.suppressions.add(_suppression("Bob@Example.org"))

    found = backend.suppressions.get("tn_a", "bob@EXAMPLE.org")
    assert found == _suppression("bob@example.org")
    assert backend.suppressions.get("tn_b", "bob@example.org") is None
    with pytest.raises(RecordNotFound):  # another tenant's list
        backend.suppressions.remove("tn_b", "bob@example.org")
    backend.suppressions.remove("tn_a", "BOB@example.org")
    assert backend.suppressions.get("tn_a", "bob@example.org") is None
    with pytest.raises(RecordNotFound):
        backend.suppressions.remove("tn_a", "bob@example.org")


def test_the_first_suppression_is_kept(backend: Backend) -> None:
    backend.suppressions.add(_suppression("bob@example.org", reason="manual"))

    with pytest.raises(AlreadyExists):
        backend.suppressions.add(_suppression("BOB@example.org"))
    found = backend.suppressions.get("tn_a", "bob@example.org")
    assert found is not None and found.reason == "manual"


def test_suppressions_list_per_tenant_in_pages(backend: Backend) -> None:
    for i in range(7):
        backend.suppressions.add(_suppression(f"user{i}@example.org"))
    backend.suppressions.add(_suppression("other@example.org", tenant_id="tn_b"))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = backend.suppressions.list("tn_a", limit=3, cursor=cursor)
        seen += [s.email for s in page.suppressions]
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor

    assert seen == [f"user{i}@example.org" for i in range(7)] and pages == 3


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWFuLWFkZHJlc3M"])  # not base64; base64 of "not-an-address"
def test_a_suppression_cursor_not_handed_out_is_refused(backend: Backend, cursor: str) -> None:
    backend.suppressions.add(_suppression("bob@example.org"))

    with pytest.raises(InvalidCursor):
        backend.suppressions.list("tn_a", limit=1, cursor=cursor)
