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
INBOUND_ID = "in_01JD8XK2M3N4P5Q6R7S8T9V0W1"
RECEIVED = "2026-11-30T09:16:40Z"
# A delivery report as Postfix writes one to the VERP return path (RFC 3464), shortened.
RAW_REPORT = (
    "From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\r\n"
    "To: bounces+msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q@bounce.acme.example\r\n"
    "Subject: Undelivered Mail Returned to Sender\r\n"
    "Message-ID: <20261130091640.4F2A1@mx.acme.example>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "I'm sorry to have to inform you that your message could not be delivered.\r\n"
    "--b1\r\n"
    "Content-Type: message/delivery-status\r\n"
    "\r\n"
    "Reporting-MTA: dns; mx.acme.example\r\n"
    "Original-Envelope-Id: msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q\r\n"
    "\r\n"
    "Final-Recipient: rfc822; bob@example.org\r\n"
    "Action: failed\r\n"
    "Status: 5.1.1\r\n"
    "Remote-MTA: dns; mx.example.org\r\n"
    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected\r\n"
    "--b1--\r\n"
)
INBOUND_ACCEPTED: dict[str, Any] = {"id": INBOUND_ID}
_INBOUND_SUMMARY: dict[str, Any] = {
    "id": INBOUND_ID,
    "kind": "delivery_report",
    "received_at": RECEIVED,
    "source": "imap",
    "mailbox": "bounces@bounce.acme.example",
    "from": "MAILER-DAEMON@mx.acme.example",
    "to": ["bounces+msg_01JD8X3Q4W5E6R7T8Y9U0I1O2Q@bounce.acme.example"],
    "subject": "Undelivered Mail Returned to Sender",
    "message_id": "<20261130091640.4F2A1@mx.acme.example>",
    "in_reply_to": None,
    "size": 2841,
    "attachments": [{"id": "att_1", "filename": "details.txt", "content_type": "text/plain", "size": 312, "url": None}],
    "report": {
        "action": "failed",
        "status": "5.1.1",
        "diagnostic_code": "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected",
        "remote_mta": "dns; mx.example.org",
        "final_recipient": "bob@example.org",
        "original_envelope_id": MESSAGE_ID,
        "original_message_id": f"<{EMAIL_ID.lower()}@acme.example>",
    },
    "related": {"email_id": EMAIL_ID, "message_id": MESSAGE_ID},
    "parse_error": None,
}
INBOUND_LIST: dict[str, Any] = {"data": [_INBOUND_SUMMARY], "next_cursor": None}
INBOUND: dict[str, Any] = {
    **_INBOUND_SUMMARY,
    "attachments": [
        {
            **_INBOUND_SUMMARY["attachments"][0],
            "url": f"https://petrel-bodies.s3.amazonaws.com/inbound/tn_1/{INBOUND_ID}/att_1?X-Amz-Expires=900",
        }
    ],
    "text": "I'm sorry to have to inform you that your message could not be delivered.",
    "html": None,
    "reply_text": None,
}

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
        "detail": "this API key does not have the 'send' scope",
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
    429: {
        "type": "urn:petrel:problem:quota-exceeded",
        "title": "The tenant's sending quota is used up for now",
        "status": 429,
        "detail": "this tenant's daily_quota of 10000 recipients is used up; retry in 5400 s",
        "instance": "/v1/emails",
        "retry_after": 5400,
        "quota": "daily_quota",
        "limit": 10000,
    },
    415: {
        "type": "urn:petrel:problem:unsupported-media-type",
        "title": "Unsupported media type",
        "status": 415,
        "detail": "send the body as message/rfc822, not application/json",
        "instance": "/v1/inbound/raw",
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


# -- sending domains
CREATE_DOMAIN: dict[str, Any] = {"domain": "acme.example", "return_path_domain": "bounces.acme.example"}
UPDATE_DOMAIN: dict[str, Any] = {"return_path_domain": "bounces.acme.example", "spf": ["include:mailu.example"]}
_DKIM_P = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAs1v...IDAQAB"
DOMAIN: dict[str, Any] = {
    "domain": "acme.example",
    "status": "pending",
    "signer": "petrel",
    "return_path_domain": "bounces.acme.example",
    "selectors": ["ptl202611k3v9"],
    "records": [
        {
            "purpose": "spf",
            "type": "TXT",
            "name": "acme.example",
            "value": "v=spf1 a:mail.acme.example ~all",
            "required": True,
            "status": "verified",
            "found": [],
            "detail": None,
        },
        {
            "purpose": "dkim",
            "type": "TXT",
            "name": "ptl202611k3v9._domainkey.acme.example",
            "value": f"v=DKIM1; k=rsa; p={_DKIM_P}",
            "required": True,
            "status": "missing",
            "found": [],
            "detail": "no TXT record at this name",
        },
        {
            "purpose": "dmarc",
            "type": "TXT",
            "name": "_dmarc.acme.example",
            "value": "v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.example; adkim=r; aspf=r",
            "required": False,
            "status": "warning",
            "found": ["v=DMARC1; p=none"],
            "detail": "p=none only monitors: receivers still deliver mail that fails DMARC (use quarantine or reject)",
        },
        {
            "purpose": "return_path_mx",
            "type": "MX",
            "name": "bounces.acme.example",
            "value": "10 mail.acme.example.",
            "required": False,
            "status": "verified",
            "found": [],
            "detail": None,
        },
        {
            "purpose": "return_path_spf",
            "type": "TXT",
            "name": "bounces.acme.example",
            "value": "v=spf1 a:mail.acme.example ~all",
            "required": True,
            "status": "verified",
            "found": [],
            "detail": None,
        },
    ],
    "sending_allowed": False,
    "created_at": CREATED,
    "checked_at": RELAYED,
    "verified_at": None,
    "events": [],
}
DOMAINS: dict[str, Any] = {"data": [DOMAIN]}
