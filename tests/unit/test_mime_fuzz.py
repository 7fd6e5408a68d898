"""One rule for what MIME can carry: whatever SendEmailRequest accepts, build_mime builds (issue 7, defect 2).

Hypothesis draws requests whose text fields mix ordinary characters with the ones that break headers
(controls, separators, surrogates, quotes and angle brackets); a request the model refuses is fine, a
request it accepts must become RFC 5322 bytes that parse back.
"""

from __future__ import annotations

import base64
import email
from datetime import UTC, datetime
from email import policy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from petrel.models.api import SendEmailRequest
from petrel.services.submit import build_body

NASTY = "\x00\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x7f\x85\xa0\u2028\u2029\ud800\ufeff\"'<>\\,;:@()[]=?_ ñ日😀"
text = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), max_size=40)
domain = st.sampled_from(["example.com", "bücher.example", "x.example.org"])
local = st.from_regex(r"\A[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[a-z0-9]{1,5})?\Z")


@st.composite
def mailbox(draw: st.DrawFn) -> str:
    address = f"{draw(local)}@{draw(domain)}"
    name = draw(st.none() | text)
    return address if name is None else f"{name} <{address}>"


@st.composite
def attachment(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "filename": draw(text),
        "content_type": draw(st.sampled_from(["application/pdf", "text/plain", "multipart/mixed", "message/rfc822"])),
        "content": base64.b64encode(draw(st.binary(max_size=64))).decode(),
    }


@st.composite
def request_body(draw: st.DrawFn) -> dict[str, Any]:
    header_names = st.text(alphabet=st.sampled_from("Xx-AbcZ:ü "), min_size=1, max_size=12)
    return {
        "from": draw(mailbox()),
        "to": draw(st.lists(mailbox(), min_size=1, max_size=3)),
        "cc": draw(st.lists(mailbox(), max_size=2)),
        "reply_to": draw(st.lists(mailbox(), max_size=2)),
        "subject": draw(text),
        "text": draw(st.none() | text),
        "html": draw(st.none() | text),
        "headers": draw(st.dictionaries(header_names, text, max_size=4)),
        "attachments": draw(st.lists(attachment(), max_size=2)),
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_body())
def test_whatever_the_model_accepts_mime_builds(body: dict[str, Any]) -> None:
    try:
        request = SendEmailRequest.model_validate(body)
    except ValidationError:
        return
    raw = build_body(request, email_id="em_01KF0FV2E05JW2ZEWDNTNKMXKG", from_domain="example.com", now=NOW)
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] is not None and parsed["Message-ID"] is not None


NOW = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
