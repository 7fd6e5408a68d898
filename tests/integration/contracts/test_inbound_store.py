"""InboundStore contract: one all-or-nothing create per incoming message (refused, with nothing
changed, when its id exists), content of any size read back whole, and listings newest first by
tenant, kind, email or both, paged with cursors no other listing takes."""

from __future__ import annotations

import random
import string
from datetime import timedelta

import pytest

from petrel import resources
from petrel.models.inbound import (
    InboundAttachment,
    InboundContent,
    InboundKind,
    InboundRecord,
    InboundReport,
    Related,
    inbound_id,
)
from petrel.ports import AlreadyExists, InvalidCursor, RecordNotFound
from tests.fakes.clock import DEFAULT_START
from tests.integration.contracts.backends import Backend

EXPIRES = int(DEFAULT_START.timestamp()) + 30 * 86400


def _record(
    n: int,
    *,
    tenant_id: str = "tn_a",
    kind: InboundKind = InboundKind.MESSAGE,
    email_id: str | None = None,
    **fields: object,
) -> InboundRecord:
    raw = f"Message-ID: <{n}@example.org>\r\n\r\nbody {n}\r\n".encode()
    record_id = inbound_id(tenant_id, f"<{n}@example.org>", raw)
    values: dict[str, object] = {
        "tenant_id": tenant_id,
        "inbound_id": record_id,
        "kind": kind,
        "received_at": DEFAULT_START + timedelta(minutes=n),
        "source": "imap",
        "mailbox_id": "mb_1",
        "mailbox": "bounces@example.com",
        "from": f"sender{n}@example.org",
        "to": ("bounces@example.com",),
        "subject": f"message {n}",
        "message_id": f"<{n}@example.org>",
        "raw_key": resources.inbound_raw_key(tenant_id, record_id),
        "size": len(raw),
        "digest": "0" * 64,
    }
    if email_id is not None:
        values["related"] = Related(email_id=email_id, message_id=f"msg_{email_id}")
    values.update(fields)
    return InboundRecord.model_validate(values)


def _content(text: str = "hello", **fields: object) -> InboundContent:
    values: dict[str, object] = {
        "headers": (("From", "sender@example.org"), ("Subject", "hi")),
        "text": text,
        "html": f"<p>{text}</p>",
    }
    values.update(fields)
    return InboundContent.model_validate(values)


def test_create_and_read_back(backend: Backend) -> None:
    record = _record(
        1,
        kind=InboundKind.DELIVERY_REPORT,
        email_id="em_1",
        in_reply_to="<orig@example.com>",
        report=InboundReport(
            action="failed",
            status="5.1.1",
            diagnostic_code="smtp; 550 5.1.1 no such user",
            remote_mta="dns; mx.example.org",
            final_recipient="rfc822; gone@example.org",
            original_envelope_id="msg_em_1",
            original_message_id="<orig@example.com>",
        ),
        reports=2,
        attachments=(
            InboundAttachment(
                id="att_1",
                filename="résumé.pdf",
                content_type="application/pdf",
                size=1234,
                disposition="attachment",
                key=resources.inbound_attachment_key("tn_a", "in_x", "att_1"),
            ),
        ),
        parse_error="broken boundary",
    )
    content = _content("Ünïcode text ✓", reply_text="thanks", headers=(("X-Dup", "1"), ("X-Dup", "2")))
    backend.inbound.create_inbound(record, content, expires_at=EXPIRES)

    assert backend.inbound.get_inbound("tn_a", record.inbound_id) == record
    assert backend.inbound.get_content("tn_a", record.inbound_id) == content


def test_missing_and_other_tenants_records_are_none(backend: Backend) -> None:
    record = _record(1)
    backend.inbound.create_inbound(record, _content(), expires_at=EXPIRES)

    assert backend.inbound.get_inbound("tn_b", record.inbound_id) is None
    assert backend.inbound.get_content("tn_b", record.inbound_id) is None
    assert backend.inbound.get_inbound("tn_a", "in_missing") is None
    assert backend.inbound.get_content("tn_a", "in_missing") is None
    assert backend.inbound.list_inbound("tn_b", kind=None, email_id=None, limit=10, cursor=None).records == []


def test_creating_the_same_message_twice_changes_nothing(backend: Backend) -> None:
    record = _record(1)
    content = _content("first")
    backend.inbound.create_inbound(record, content, expires_at=EXPIRES)

    again = record.model_copy(update={"kind": InboundKind.REPLY, "outcome": "event"})
    with pytest.raises(AlreadyExists):
        backend.inbound.create_inbound(again, _content("second"), expires_at=EXPIRES)

    assert backend.inbound.get_inbound("tn_a", record.inbound_id) == record
    assert backend.inbound.get_content("tn_a", record.inbound_id) == content
    listed = backend.inbound.list_inbound("tn_a", kind=None, email_id=None, limit=10, cursor=None)
    assert listed.records == [record]
    assert (
        backend.inbound.list_inbound("tn_a", kind=InboundKind.REPLY, email_id=None, limit=10, cursor=None).records == []
    )


def _noise(size: int, seed: int) -> str:
    """Text that does not compress (a base64-like blob pasted into a body)."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("All work and no play. " * 40_000, id="900KB-compressible"),
        pytest.param(_noise(600_000, 1), id="600KB-incompressible"),
    ],
)
def test_content_larger_than_an_item_is_kept_whole(backend: Backend, text: str) -> None:
    """DynamoDB refuses items over 400 KB: the store must still keep (and give back) every byte."""
    record = _record(1)
    content = _content(text, headers=tuple((f"X-H{i}", "v" * 500) for i in range(500)))
    backend.inbound.create_inbound(record, content, expires_at=EXPIRES)

    assert backend.inbound.get_content("tn_a", record.inbound_id) == content
    assert backend.inbound.get_inbound("tn_a", record.inbound_id) == record


def test_a_large_content_created_twice_keeps_the_first(backend: Backend) -> None:
    record = _record(1)
    first = _content(_noise(500_000, 2))
    backend.inbound.create_inbound(record, first, expires_at=EXPIRES)

    with pytest.raises(AlreadyExists):
        backend.inbound.create_inbound(record, _content(_noise(500_000, 3)), expires_at=EXPIRES)

    assert backend.inbound.get_content("tn_a", record.inbound_id) == first


def test_set_outcome(backend: Backend) -> None:
    record = _record(1, kind=InboundKind.DELIVERY_REPORT, email_id="em_1")
    content = _content()
    backend.inbound.create_inbound(record, content, expires_at=EXPIRES)

    backend.inbound.set_outcome("tn_a", record.inbound_id, "bounced")
    backend.inbound.set_outcome("tn_a", record.inbound_id, "bounced")  # a redelivered job: same result

    assert backend.inbound.get_inbound("tn_a", record.inbound_id) == record.model_copy(update={"outcome": "bounced"})
    assert backend.inbound.get_content("tn_a", record.inbound_id) == content
    listed = backend.inbound.list_inbound("tn_a", kind=None, email_id="em_1", limit=5, cursor=None).records
    assert [r.outcome for r in listed] == ["bounced"]
    with pytest.raises(RecordNotFound):
        backend.inbound.set_outcome("tn_a", "in_missing", "event")
    with pytest.raises(RecordNotFound):
        backend.inbound.set_outcome("tn_b", record.inbound_id, "event")
    assert backend.inbound.get_inbound("tn_b", record.inbound_id) is None


# Twelve records a minute apart: kinds and related emails mixed, plus another tenant's.
_KINDS = [
    InboundKind.DELIVERY_REPORT,
    InboundKind.REPLY,
    InboundKind.MESSAGE,
    InboundKind.DELIVERY_REPORT,
    InboundKind.AUTO_REPLY,
    InboundKind.COMPLAINT,
    InboundKind.DELIVERY_REPORT,
    InboundKind.MESSAGE,
    InboundKind.REPLY,
    InboundKind.DELIVERY_REPORT,
    InboundKind.DELIVERY_REPORT,
    InboundKind.MESSAGE,
]
_EMAILS = ["em_1", "em_1", None, "em_2", "em_1", "em_2", "em_1", None, "em_2", "em_1", "em_2", None]


def _stored_listing(backend: Backend) -> list[InboundRecord]:
    made = [_record(n, kind=kind, email_id=email) for n, (kind, email) in enumerate(zip(_KINDS, _EMAILS, strict=True))]
    for record in random.Random(5).sample(made, len(made)):
        backend.inbound.create_inbound(record, _content(), expires_at=EXPIRES)
    for n in range(3):
        other = _record(100 + n, tenant_id="tn_b", kind=InboundKind.DELIVERY_REPORT, email_id="em_1")
        backend.inbound.create_inbound(other, _content(), expires_at=EXPIRES)
    return sorted(made, key=lambda r: r.received_at, reverse=True)


def _all_pages(
    backend: Backend, *, kind: InboundKind | None, email_id: str | None, limit: int
) -> tuple[list[InboundRecord], list[int]]:
    found: list[InboundRecord] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = backend.inbound.list_inbound("tn_a", kind=kind, email_id=email_id, limit=limit, cursor=cursor)
        found += page.records
        sizes.append(len(page.records))
        if page.cursor is None:
            return found, sizes
        cursor = page.cursor


@pytest.mark.parametrize(
    ("kind", "email_id"),
    [
        (None, None),
        (InboundKind.DELIVERY_REPORT, None),
        (InboundKind.MESSAGE, None),
        (None, "em_1"),
        (None, "em_2"),
        (InboundKind.DELIVERY_REPORT, "em_1"),
        (InboundKind.REPLY, "em_2"),
        (InboundKind.COMPLAINT, "em_1"),
        (None, "em_missing"),
    ],
)
@pytest.mark.parametrize("limit", [1, 2, 50])
def test_listings_are_newest_first_and_page_through_everything(
    backend: Backend, kind: InboundKind | None, email_id: str | None, limit: int
) -> None:
    newest_first = _stored_listing(backend)
    expected = [
        r
        for r in newest_first
        if kind in (None, r.kind) and (email_id is None or (r.related is not None and r.related.email_id == email_id))
    ]

    found, sizes = _all_pages(backend, kind=kind, email_id=email_id, limit=limit)

    assert found == expected
    # Every page but the last is full, and the last is not empty unless the listing is: a cursor is
    # handed out only when there is more to read (a filtered listing included).
    assert all(size == limit for size in sizes[:-1])
    assert sizes[-1] == (len(expected) - 1) % limit + 1 if expected else sizes == [0]


def test_a_cursor_of_another_listing_is_refused(backend: Backend) -> None:
    _stored_listing(backend)

    def first_cursor(tenant_id: str, kind: InboundKind | None, email_id: str | None) -> str:
        cursor = backend.inbound.list_inbound(tenant_id, kind=kind, email_id=email_id, limit=1, cursor=None).cursor
        assert cursor is not None
        return cursor

    listings: list[tuple[str, InboundKind | None, str | None]] = [
        ("tn_a", None, None),
        ("tn_a", InboundKind.DELIVERY_REPORT, None),
        ("tn_a", InboundKind.MESSAGE, None),
        ("tn_a", None, "em_1"),
        ("tn_a", InboundKind.DELIVERY_REPORT, "em_1"),
        ("tn_a", None, "em_2"),
        ("tn_b", None, None),
    ]
    cursors = {listing: first_cursor(*listing) for listing in listings}
    for listing, cursor in cursors.items():
        tenant_id, kind, email_id = listing
        assert backend.inbound.list_inbound(tenant_id, kind=kind, email_id=email_id, limit=1, cursor=cursor).records
        for other in listings:
            if other == listing or other[0] != "tn_a":
                continue
            with pytest.raises(InvalidCursor):
                backend.inbound.list_inbound("tn_a", kind=other[1], email_id=other[2], limit=1, cursor=cursor)


@pytest.mark.parametrize("cursor", ["not a cursor!", "e30", "W10", "eyJsaXN0aW5nIjoxfQ"])
def test_a_garbled_cursor_is_refused(backend: Backend, cursor: str) -> None:
    _stored_listing(backend)
    with pytest.raises(InvalidCursor):
        backend.inbound.list_inbound("tn_a", kind=None, email_id=None, limit=2, cursor=cursor)
