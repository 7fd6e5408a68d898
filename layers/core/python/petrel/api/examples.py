"""Examples for the OpenAPI document: literal JSON, as a client sends and receives it.

They are written out by hand (not built from the models) so that tests/unit/test_openapi.py can hold
each one to the model its operation names: an example that drifts from its schema fails there.
"""

from __future__ import annotations

from typing import Any

EMAIL_ID = "em_01JD8X3Q4W5E6R7T8Y9U0I1O2P"
MESSAGE_ID = "msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q"
SERVER_ID = "srv_01JD8X0000000000000000000A"
ATTACHMENT_ID = "att_01JD8X3Q4W5E6R7T8Y9U0I1O2R"
CREATED = "2026-11-30T09:15:00Z"
RELAYED = "2026-11-30T09:15:02Z"

SEND_EMAIL: dict[str, Any] = {
    "from": "Acme <billing@acme.example>",
    "to": ["Bob <bob@example.org>"],
    "subject": "Your invoice 42",
    "text": "Hello Bob, your invoice is attached.",
    "html": "<p>Hello Bob, your invoice is attached.</p>",
    "tags": {"invoice": "42"},
}
SEND_EMAIL_LATER: dict[str, Any] = {
    "from": "billing@acme.example",
    "to": "bob@example.org",
    "cc": ["carol@example.org"],
    "subject": "Reminder",
    "text": "Your invoice 42 is due tomorrow.",
    "pool": "bulk",
    "send_at": "2026-12-01T08:00:00+01:00",
}
SEND_EMAIL_UPLOADED: dict[str, Any] = {
    "from": "billing@acme.example",
    "to": "bob@example.org",
    "subject": "Scan",
    "text": "Attached.",
    "attachments": [{"attachment_id": ATTACHMENT_ID}],
}
SENT: dict[str, Any] = {
    "id": EMAIL_ID,
    "recipients": [{"id": MESSAGE_ID, "email": "bob@example.org", "status": "queued"}],
}
BATCH: dict[str, Any] = {"emails": [SEND_EMAIL, {**SEND_EMAIL, "to": "not an address"}]}
BATCH_SENT: dict[str, Any] = {
    "results": [
        {"index": 0, "status": 202, "email": SENT, "error": None},
        {
            "index": 1,
            "status": 422,
            "email": None,
            "error": {
                "type": "urn:petrel:problem:invalid-request",
                "title": "The request is not valid",
                "status": 422,
                "detail": "the email at index 1 is not valid: /to/0: not an email address",
                "errors": [{"pointer": "/emails/1/to/0", "detail": "not an email address"}],
            },
        },
    ]
}
ATTACHMENT: dict[str, Any] = {"filename": "scan.pdf", "content_type": "application/pdf", "size": 7340032}
ATTACHMENT_UPLOAD: dict[str, Any] = {
    "id": ATTACHMENT_ID,
    "filename": "scan.pdf",
    "content_type": "application/pdf",
    "size": 7340032,
    "upload_url": "https://petrel-bodies.s3.amazonaws.com/attachments/tn_1/att_01JD8X3Q4W5E6R7T8Y9U0I1O2R?X-Amz-Signature=...",
    "upload_method": "PUT",
    "upload_headers": {"Content-Type": "application/pdf", "Content-Length": "7340032"},
    "upload_expires_at": "2026-11-30T09:30:00Z",
    "expires_at": "2026-12-01T09:15:00Z",
}
_REPLY: dict[str, Any] = {"code": 250, "enhanced": "2.0.0", "text": "Ok: queued as 4XYZ", "stage": "data"}
MESSAGE: dict[str, Any] = {
    "id": MESSAGE_ID,
    "email_id": EMAIL_ID,
    "email": "bob@example.org",
    "kind": "to",
    "status": "relayed",
    "attempts": 1,
    "bounce_class": None,
    "failure_reason": None,
    "last_reply": _REPLY,
    "next_attempt_at": None,
    "attempt_log": [
        {
            "number": 1,
            "started_at": "2026-11-30T09:15:01Z",
            "finished_at": RELAYED,
            "server_id": SERVER_ID,
            "outcome": "relayed",
            "reply": _REPLY,
        }
    ],
    "updated_at": RELAYED,
}
EMAIL: dict[str, Any] = {
    "id": EMAIL_ID,
    "from": "Acme <billing@acme.example>",
    "subject": "Your invoice 42",
    "message_id_header": f"<{EMAIL_ID}@acme.example>",
    "pool": "transactional",
    "tags": {"invoice": "42"},
    "size": 1834,
    "created_at": CREATED,
    "recipients": [MESSAGE],
    "events": [
        {"type": "email.queued", "at": CREATED, "message_id": MESSAGE_ID, "recipient": "bob@example.org"},
        {
            "type": "email.sent",
            "at": RELAYED,
            "message_id": MESSAGE_ID,
            "recipient": "bob@example.org",
            "reply": _REPLY,
        },
    ],
}
MESSAGES: dict[str, Any] = {
    "data": [
        {
            "id": MESSAGE_ID,
            "email_id": EMAIL_ID,
            "email": "bob@example.org",
            "status": "relayed",
            "created_at": CREATED,
            "updated_at": RELAYED,
        }
    ],
    "next_cursor": "eyJwayI6InRuXzEj...",
}
CANCELLED: dict[str, Any] = {
    "id": EMAIL_ID,
    "cancelled": [{"id": MESSAGE_ID, "email": "bob@example.org", "status": "cancelled"}],
    "not_cancelled": [
        {"id": "msg_01JD8X3Q4W5E6R7T8Y9U0I1O2S", "email": "carol@example.org", "status": "relayed"},
    ],
}
SUPPRESS: dict[str, Any] = {"email": "bob@example.org", "reason": "manual", "note": "asked us to stop"}
SUPPRESSION: dict[str, Any] = {
    "email": "bob@example.org",
    "reason": "manual",
    "detail": "asked us to stop",
    "message_id": None,
    "created_at": CREATED,
}
SUPPRESSIONS: dict[str, Any] = {"data": [SUPPRESSION], "next_cursor": None}

# One problem per status, as the API answers them (RFC 9457, `type` urn:petrel:problem:<slug>).
PROBLEMS: dict[int, dict[str, Any]] = {
    400: {
        "type": "urn:petrel:problem:malformed-body",
        "title": "The request body is not valid JSON",
        "status": 400,
        "detail": "the body is not valid JSON: Expecting value",
        "instance": "/v1/emails",
    },
    401: {
        "type": "urn:petrel:problem:unauthorized",
        "title": "Missing or invalid API key",
        "status": 401,
        "detail": "send a valid API key as `Authorization: Bearer <key>`",
    },
    403: {
        "type": "urn:petrel:problem:forbidden",
        "title": "The API key lacks the scope this route needs",
        "status": 403,
        "detail": "this API key does not have the 'emails:send' scope",
        "instance": "/v1/emails",
    },
    404: {
        "type": "urn:petrel:problem:not-found",
        "title": "Not found",
        "status": 404,
        "detail": f"no email '{EMAIL_ID}'",
        "instance": f"/v1/emails/{EMAIL_ID}",
    },
    409: {
        "type": "urn:petrel:problem:idempotency-key-reused",
        "title": "The Idempotency-Key was used with a different request",
        "status": 409,
        "detail": "this Idempotency-Key was already used with a different request",
        "instance": "/v1/emails",
    },
    413: {
        "type": "urn:petrel:problem:request-too-large",
        "title": "The request body is larger than the API takes",
        "status": 413,
        "detail": "the body is 5242880 bytes; the API takes at most 4194304: upload large files first "
        "(POST /v1/attachments) and reference them by attachment_id",
        "instance": "/v1/emails",
    },
    422: {
        "type": "urn:petrel:problem:invalid-request",
        "title": "The request is not valid",
        "status": 422,
        "detail": "the request body is not valid: /to/0: not an email address",
        "instance": "/v1/emails",
        "errors": [{"pointer": "/to/0", "detail": "not an email address"}],
    },
    500: {
        "type": "urn:petrel:problem:internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "an internal error occurred (request 7f1c0a52-1a4e-4a0e-9d1b-3f0e6c1d2b9a)",
        "instance": "/v1/emails",
    },
}
