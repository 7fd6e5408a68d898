"""A raw message's header block, read without parsing its body: what `POST /v1/inbound/raw` checks and
what an incoming message's id is derived from (`petrel.models.inbound.inbound_id`).

Whoever computes an inbound id from raw bytes (the push route, the poller) takes the Message-ID from
`raw_message_id`, so the same bytes pushed and polled are one record.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

_MSGID_TOKEN = re.compile(r"<[^<>\s]+>")


def header_block(raw: bytes) -> Message | None:
    """The message's header fields (the body is not parsed), or None when the bytes do not start with
    a header block at all (an empty body, plain text, a file that is not a message)."""
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    return headers if headers.keys() else None


def raw_message_id(raw: bytes) -> str | None:
    """The message's own Message-ID as `inbound_id` takes it: the first `<...>` token of the first
    Message-ID field, or None when there is none (or the header block cannot be read at all: the id is
    then made of the bytes alone). Bytes that are not UTF-8 are replaced, never an error."""
    try:
        headers = header_block(raw)
        value = headers.get("Message-ID") if headers is not None else None
    except Exception:  # a header block the email package cannot read
        return None
    if value is None:
        return None
    token = _MSGID_TOKEN.search(str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return token.group(0) if token else None
