"""The inbound API over the in-memory fakes: `POST /v1/inbound/raw`, `GET /v1/inbound`,
`GET /v1/inbound/{id}`, and each recipient's `return_path` on `GET /v1/emails/{id}`.

Invariants held here:
- a 202 from the push means the raw bytes are in the bucket at `inbound_raw_key` (byte for byte) AND
  one ingest job names them; any other answer queued nothing the worker could not find;
- the push's id depends only on the tenant, the Message-ID and the bytes: a retry after any failure
  (of the bucket or the queue, however many times) gives the same id and the same object;
- a tenant reads only its own incoming mail; a listing hides content and links, the single GET has both;
- the envelope sender shown on an email is the one fixed at submission, and the one the worker relays with.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest

from petrel import resources
from petrel.mail.raw import raw_message_id
from petrel.models.api import MAX_REQUEST_BYTES
from petrel.models.inbound import (
    InboundAttachment,
    InboundContent,
    InboundKind,
    InboundRecord,
    InboundReport,
    Related,
    inbound_id,
    raw_digest,
)
from petrel.models.jobs import SendJob
from petrel.models.records import MessageStatus
from petrel.ports import MessageKey
from petrel.services.deliver import deliver_message
from tests.fakes import FakeWorld, Seeded
from tests.fakes.infra import FakeBlobStore
from tests.unit.api_fakes import Api, event

RAW = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: jane@example.com\r\n"
    b"Subject: Re: Hi \xe9t\xe9\r\n"  # not UTF-8: the bytes must survive as they are
    b"Message-ID: <reply-1@example.org>\r\n"
    b"\r\n"
    b"Thanks!\r\n"
)


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed(return_path="bounce.example.com")


@pytest.fixture
def api(world: FakeWorld) -> Api:
    return Api(world)


def _push(
    api: Api,
    seeded: Seeded,
    raw: bytes = RAW,
    *,
    content_type: str | None = "message/rfc822",
    headers: dict[str, str] | None = None,
    scopes: str = "inbound",
) -> dict[str, Any]:
    """A push as API Gateway hands it over: the body base64-encoded (binary media type */*)."""
    request = event("POST", "/v1/inbound/raw", tenant_id=seeded.tenant.tenant_id, headers=headers, scopes=scopes)
    request["headers"] = {k: v for k, v in request["headers"].items() if k != "Content-Type"}
    if content_type is not None:
        request["headers"]["Content-Type"] = content_type
    request["body"] = base64.b64encode(raw).decode("ascii")
    request["isBase64Encoded"] = True
    return api(request)


def _get(api: Api, tenant_id: str, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    return api(event("GET", path, tenant_id=tenant_id, query=query))


def _json(result: dict[str, Any], status: int) -> Any:
    assert result["statusCode"] == status, result
    return json.loads(result["body"])


def _problem(result: dict[str, Any], status: int) -> dict[str, Any]:
    assert result["statusCode"] == status, result
    assert result["headers"]["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(result["body"])
    assert body["status"] == status
    return body


def _nothing_pushed(world: FakeWorld) -> None:
    assert world.ingest_queue.jobs == []
    assert not [key for key in world.blobs.blobs if key.startswith(resources.INBOUND_PREFIX)]


# ---------------------------------------------------------------------------------------------- push


def test_push_stores_the_raw_bytes_and_queues_one_job(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    accepted = _json(_push(api, seeded), 202)

    expected = inbound_id(tenant, "<reply-1@example.org>", RAW)
    assert accepted == {"id": expected}
    key = resources.inbound_raw_key(tenant, expected)
    assert world.blobs.blobs[key] == RAW and world.blobs.content_types[key] == "message/rfc822"
    [job] = world.ingest_queue.jobs
    assert (job.tenant_id, job.inbound_id, job.raw_key, job.source) == (tenant, expected, key, "push")
    assert job.received_at == world.clock.now() and job.mailbox_id is None and job.uid is None


def test_the_same_raw_twice_is_the_same_id_and_the_same_object(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    first = _json(_push(api, seeded), 202)
    world.clock.advance(300)
    second = _json(_push(api, seeded), 202)

    assert first == second
    assert [k for k in world.blobs.blobs if k.startswith(resources.INBOUND_PREFIX)] == [
        resources.inbound_raw_key(seeded.tenant.tenant_id, first["id"])
    ]
    assert {job.inbound_id for job in world.ingest_queue.jobs} == {first["id"]}  # the worker stores it once
    other = _json(_push(api, seeded, RAW.replace(b"Thanks!", b"Thanks again!")), 202)
    assert other["id"] != first["id"]  # same Message-ID, other bytes: another message


def test_an_idempotency_key_replays_the_first_answer_without_a_second_job(
    world: FakeWorld, api: Api, seeded: Seeded
) -> None:
    key = {"Idempotency-Key": "push-1"}
    first = _push(api, seeded, headers=key)
    again = _push(api, seeded, headers=key)

    assert first["statusCode"] == again["statusCode"] == 202 and first["body"] == again["body"]
    assert again["headers"]["Idempotent-Replayed"] == "true"
    assert len(world.ingest_queue.jobs) == 1
    other = _push(api, seeded, RAW + b"P.S.\r\n", headers=key)
    assert _problem(other, 409)["type"] == "urn:petrel:problem:idempotency-key-reused"


def test_a_message_without_message_id_is_keyed_by_its_bytes(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    raw = b"From: a@example.org\r\nSubject: no id\r\n\r\nbody\r\n"
    accepted = _json(_push(api, seeded, raw), 202)
    assert raw_message_id(raw) is None
    assert accepted["id"] == inbound_id(seeded.tenant.tenant_id, None, raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: x\r\nMessage-ID:\r\n <folded@example.org>\r\n\r\nbody", "<folded@example.org>"),
        (b"Message-Id: <first@x> <second@x>\r\n\r\n", "<first@x>"),
        (b"Message-ID: no brackets\r\n\r\n", None),
        (b"Subject: none\r\n\r\nMessage-ID: <in-the-body@x>\r\n", None),
        (b"Message-ID: <\xff\xfe@x>\r\n\r\n", "<\ufffd\ufffd@x>"),
    ],
)
def test_the_message_id_an_inbound_id_is_made_of(raw: bytes, expected: str | None) -> None:
    assert raw_message_id(raw) == expected
    inbound_id("tn_a", raw_message_id(raw), raw)  # whatever the bytes, the id can be made


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None, "message/rfc822x"])
def test_a_body_not_sent_as_message_rfc822_is_a_415(
    world: FakeWorld, api: Api, seeded: Seeded, content_type: str | None
) -> None:
    body = _problem(_push(api, seeded, content_type=content_type), 415)
    assert body["type"] == "urn:petrel:problem:unsupported-media-type" and "message/rfc822" in body["detail"]
    _nothing_pushed(world)


def test_message_rfc822_with_parameters_is_taken(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    _json(_push(api, seeded, content_type="Message/RFC822; charset=utf-8"), 202)
    assert len(world.ingest_queue.jobs) == 1


@pytest.mark.parametrize(
    "raw", [b"", b"hello, this is not an email\r\n", b"\r\n\r\nonly a body", b"\x00\x01\x02\xff binary"]
)
def test_a_body_that_is_no_message_is_a_422(world: FakeWorld, api: Api, seeded: Seeded, raw: bytes) -> None:
    body = _problem(_push(api, seeded, raw), 422)
    assert body["type"] == "urn:petrel:problem:invalid-request"
    assert body["errors"] and body["errors"][0]["pointer"] == ""
    _nothing_pushed(world)


def test_a_body_over_the_front_doors_limit_is_a_413(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    raw = RAW + b"x" * (MAX_REQUEST_BYTES - len(RAW) + 1)
    body = _problem(_push(api, seeded, raw), 413)
    assert body["type"] == "urn:petrel:problem:request-too-large"
    assert "/v1/inbound/raw" in body["detail"] and "attachment" not in body["detail"]
    _nothing_pushed(world)
    at_limit = RAW + b"x" * (MAX_REQUEST_BYTES - len(RAW))
    _json(_push(api, seeded, at_limit), 202)


def test_the_push_needs_the_inbound_scope(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    body = _problem(_push(api, seeded, scopes="send read"), 403)
    assert body["detail"] == "this API key does not have the 'inbound' scope"
    _nothing_pushed(world)


def test_a_push_for_a_tenant_that_is_gone_is_a_404(world: FakeWorld, api: Api) -> None:
    request = event("POST", "/v1/inbound/raw", RAW.decode("latin-1"), tenant_id="tn_gone")
    request["headers"]["Content-Type"] = "message/rfc822"
    _problem(api(request), 404)
    _nothing_pushed(world)


class FlakyBlobStore(FakeBlobStore):
    """A bucket that refuses the next `failures` puts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("S3 is unreachable")
        super().put(key, data, content_type)


def test_a_bucket_failing_twice_queues_nothing_and_the_retry_gives_the_same_id(
    world: FakeWorld, seeded: Seeded
) -> None:
    world.blobs = FlakyBlobStore(failures=2)
    api = Api(world)

    for _ in range(2):
        _problem(_push(api, seeded), 500)
        _nothing_pushed(world)
    accepted = _json(_push(api, seeded), 202)

    key = resources.inbound_raw_key(seeded.tenant.tenant_id, accepted["id"])
    assert world.blobs.blobs == {key: RAW}
    assert [job.raw_key for job in world.ingest_queue.jobs] == [key]


def test_a_queue_failing_twice_leaves_only_the_same_object_and_the_retry_queues_once(
    world: FakeWorld, api: Api, seeded: Seeded
) -> None:
    world.ingest_queue.fail = True
    for _ in range(2):
        _problem(_push(api, seeded), 500)
    expected = inbound_id(seeded.tenant.tenant_id, "<reply-1@example.org>", RAW)
    key = resources.inbound_raw_key(seeded.tenant.tenant_id, expected)
    assert world.ingest_queue.jobs == [] and world.ingest_queue.attempts == 2
    assert {k: v for k, v in world.blobs.blobs.items() if k.startswith(resources.INBOUND_PREFIX)} == {key: RAW}

    world.ingest_queue.fail = False
    assert _json(_push(api, seeded), 202) == {"id": expected}
    assert [(job.inbound_id, job.raw_key) for job in world.ingest_queue.jobs] == [(expected, key)]
    assert world.blobs.blobs[key] == RAW


# ---------------------------------------------------------------------------------------------- read


def _record(
    tenant_id: str,
    number: int,
    world: FakeWorld,
    *,
    kind: InboundKind = InboundKind.MESSAGE,
    related: Related | None = None,
    attachments: tuple[InboundAttachment, ...] = (),
    content: InboundContent | None = None,
    report: InboundReport | None = None,
) -> InboundRecord:
    raw = f"Message-ID: <m{number}@example.org>\r\n\r\nbody {number}\r\n".encode()
    found = inbound_id(tenant_id, f"<m{number}@example.org>", raw)
    record = InboundRecord(
        tenant_id=tenant_id,
        inbound_id=found,
        kind=kind,
        received_at=world.clock.now() + timedelta(seconds=number),
        source="imap",
        mailbox="bounces@bounce.example.com",
        from_=f"sender{number}@example.org",
        to=("bounces@bounce.example.com",),
        subject=f"message {number}",
        message_id=f"<m{number}@example.org>",
        raw_key=resources.inbound_raw_key(tenant_id, found),
        size=len(raw),
        digest=raw_digest(raw),
        report=report,
        related=related,
        attachments=attachments,
    )
    world.inbound.create_inbound(record, content or InboundContent(text=f"body {number}"), expires_at=0)
    return record


EMAIL_A = "em_01JD8X3Q4W5E6R7T8Y9V0W1X2P"
EMAIL_B = "em_01JD8X3Q4W5E6R7T8Y9V0W1X2Z"


def test_list_filters_by_kind_and_email_and_pages_newest_first(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    about_a = Related(email_id=EMAIL_A, message_id="msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q")
    about_b = Related(email_id=EMAIL_B, message_id="msg_01JD8X3Q4W5E6R7T8Y9U0I1O2R")
    made = [
        _record(tenant, 1, world, kind=InboundKind.DELIVERY_REPORT, related=about_a),
        _record(tenant, 2, world, kind=InboundKind.REPLY, related=about_a),
        _record(tenant, 3, world, kind=InboundKind.DELIVERY_REPORT, related=about_b),
        _record(tenant, 4, world),
        _record("tn_other", 5, world, kind=InboundKind.DELIVERY_REPORT, related=about_a),
    ]
    ids = [r.inbound_id for r in made]

    everything = _json(_get(api, tenant, "/v1/inbound"), 200)
    assert [item["id"] for item in everything["data"]] == [ids[3], ids[2], ids[1], ids[0]]
    assert everything["next_cursor"] is None
    reports = _json(_get(api, tenant, "/v1/inbound", {"kind": "delivery_report"}), 200)
    assert [item["id"] for item in reports["data"]] == [ids[2], ids[0]]
    about = _json(_get(api, tenant, "/v1/inbound", {"email_id": EMAIL_A}), 200)
    assert [item["id"] for item in about["data"]] == [ids[1], ids[0]]
    both = _json(_get(api, tenant, "/v1/inbound", {"email_id": EMAIL_A, "kind": "reply"}), 200)
    assert [item["id"] for item in both["data"]] == [ids[1]]

    seen: list[str] = []
    query = {"limit": "1"}
    while True:
        page = _json(_get(api, tenant, "/v1/inbound", query), 200)
        assert len(page["data"]) == 1
        seen += [item["id"] for item in page["data"]]
        if page["next_cursor"] is None:
            break
        query = {"limit": "1", "cursor": page["next_cursor"]}
    assert seen == [ids[3], ids[2], ids[1], ids[0]]


def test_a_listing_shows_no_content_and_no_links(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    attachment = InboundAttachment(id="att_1", filename="a.pdf", content_type="application/pdf", size=3, key="k/att_1")
    _record(tenant, 1, world, attachments=(attachment,))

    [item] = _json(_get(api, tenant, "/v1/inbound"), 200)["data"]
    assert not {"text", "html", "reply_text"} & set(item)
    assert item["attachments"] == [
        {"id": "att_1", "filename": "a.pdf", "content_type": "application/pdf", "size": 3, "url": None}
    ]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"kind": "bounce"}, "kind"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"email_id": "msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q"}, "email_id"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_422s_naming_the_parameter(
    api: Api, seeded: Seeded, query: dict[str, str], parameter: str
) -> None:
    body = _problem(_get(api, seeded.tenant.tenant_id, "/v1/inbound", query), 422)
    assert [e.get("parameter") for e in body["errors"]] == [parameter]


def test_a_cursor_of_another_listing_is_refused(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    for number in range(3):
        _record(tenant, number, world, kind=InboundKind.REPLY)
    cursor = _json(_get(api, tenant, "/v1/inbound", {"limit": "1"}), 200)["next_cursor"]
    body = _problem(_get(api, tenant, "/v1/inbound", {"limit": "1", "cursor": cursor, "kind": "message"}), 422)
    assert body["errors"][0]["parameter"] == "cursor"


SHOWN = {
    "id",
    "kind",
    "received_at",
    "source",
    "mailbox",
    "from",
    "to",
    "subject",
    "message_id",
    "in_reply_to",
    "size",
    "text",
    "html",
    "reply_text",
    "attachments",
    "report",
    "related",
    "parse_error",
}


def test_get_shows_content_report_related_and_presigned_links(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    key = resources.inbound_attachment_key(tenant, "in_x", "att_1")
    world.blobs.put(key, b"%PDF-1.7", "application/pdf")
    attachment = InboundAttachment(id="att_1", filename="scan.pdf", content_type="application/pdf", size=8, key=key)
    report = InboundReport(
        action="failed",
        status="5.1.1",
        diagnostic_code="smtp; 550 5.1.1 no such user",
        remote_mta="dns; mx.example.org",
        final_recipient="bob@example.org",
        original_envelope_id="msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q",
        original_message_id=f"<{EMAIL_A.lower()}@example.com>",
    )
    related = Related(email_id=EMAIL_A, message_id="msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q")
    content = InboundContent(text="it failed", html="<p>it failed</p>", reply_text=None)
    record = _record(
        tenant,
        1,
        world,
        kind=InboundKind.DELIVERY_REPORT,
        attachments=(attachment,),
        report=report,
        related=related,
        content=content,
    )

    shown = _json(_get(api, tenant, f"/v1/inbound/{record.inbound_id}"), 200)

    assert set(shown) == SHOWN
    assert shown["id"] == record.inbound_id and shown["kind"] == "delivery_report"
    assert (shown["text"], shown["html"]) == ("it failed", "<p>it failed</p>")
    assert shown["report"] == report.model_dump()
    assert shown["related"] == {"email_id": EMAIL_A, "message_id": "msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q"}
    assert shown["from"] == "sender1@example.org" and shown["to"] == ["bounces@bounce.example.com"]
    assert shown["parse_error"] is None
    [link] = shown["attachments"]
    assert {k: v for k, v in link.items() if k != "url"} == {
        "id": "att_1",
        "filename": "scan.pdf",
        "content_type": "application/pdf",
        "size": 8,
    }
    assert link["url"] == world.blobs.presign_get(key, expires_in=900, filename="scan.pdf")
    assert world.blobs.download(link["url"]) == b"%PDF-1.7"


def test_a_reply_shows_its_own_text_and_a_parse_error_is_shown(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    content = InboundContent(text="Yes.\n\n> Will you come?", reply_text="Yes.")
    record = _record(tenant, 1, world, kind=InboundKind.REPLY, content=content)
    broken = _record(tenant, 2, world)
    world.inbound.records[(tenant, broken.inbound_id)] = broken.model_copy(update={"parse_error": "bad boundary"})

    reply = _json(_get(api, tenant, f"/v1/inbound/{record.inbound_id}"), 200)
    assert (reply["kind"], reply["reply_text"], reply["report"], reply["related"]) == ("reply", "Yes.", None, None)
    assert _json(_get(api, tenant, f"/v1/inbound/{broken.inbound_id}"), 200)["parse_error"] == "bad boundary"


def test_another_tenants_incoming_message_is_a_404(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    theirs = _record("tn_other", 1, world)
    body = _problem(_get(api, seeded.tenant.tenant_id, f"/v1/inbound/{theirs.inbound_id}"), 404)
    assert body["type"] == "urn:petrel:problem:not-found"
    _problem(_get(api, seeded.tenant.tenant_id, "/v1/inbound/in_nothing"), 404)
    _json(_get(api, "tn_other", f"/v1/inbound/{theirs.inbound_id}"), 200)


def test_reading_needs_the_inbound_scope(api: Api, seeded: Seeded) -> None:
    request = event("GET", "/v1/inbound", tenant_id=seeded.tenant.tenant_id, scopes="send read")
    _problem(api(request), 403)


# ----------------------------------------------------------------------------------- return path


def test_each_recipient_shows_the_return_path_it_is_relayed_with(world: FakeWorld, api: Api, seeded: Seeded) -> None:
    tenant = seeded.tenant.tenant_id
    email = {"from": "jane@example.com", "to": ["bob@example.org", "carol@example.org"], "subject": "Hi", "text": "x"}
    sent = _json(api(event("POST", "/v1/emails", email, tenant_id=tenant)), 202)

    view = _json(_get(api, tenant, f"/v1/emails/{sent['id']}"), 200)
    shown = {r["id"]: r["return_path"] for r in view["recipients"]}
    assert shown == {r["id"]: f"bounces+{r['id']}@bounce.example.com" for r in sent["recipients"]}
    assert view["message_id_header"].startswith("<em_")
    message = _json(_get(api, tenant, f"/v1/messages/{sent['recipients'][0]['id']}"), 200)
    assert message["return_path"] == shown[message["id"]]

    # The domain's return path changes after submission: the stored one is still the one relayed with.
    world.tenants.put_domain(seeded.domain.model_copy(update={"return_path_domain": "elsewhere.example.com"}))
    first = sent["recipients"][0]["id"]
    deliver_message(world.deliver_deps(), SendJob(tenant_id=tenant, email_id=sent["id"], message_id=first))
    [call] = world.relay.calls
    assert call.envelope.sender == shown[first]
    key = world.messages.find_message_key(tenant, first)
    assert key is not None and isinstance(key, MessageKey)
    stored = world.messages.get_message(key)
    assert stored is not None and stored.return_path == shown[first] and stored.status == MessageStatus.RELAYED
