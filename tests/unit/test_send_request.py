"""petrel.models.api.SendEmailRequest: every validation rule, with the pointer it reports."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from petrel.models.api import MAX_BATCH, MAX_RECIPIENTS, BatchSendRequest, SendEmailRequest


def _request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": "Jane <jane@example.com>", "to": ["bob@example.org"], "subject": "Hi", "text": "x"}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def _errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        SendEmailRequest.model_validate(body)
    return [("/".join(str(p) for p in e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_a_minimal_request() -> None:
    request = SendEmailRequest.model_validate(_request())
    assert request.from_ == "Jane <jane@example.com>"
    assert request.to == ["bob@example.org"]
    assert request.pool == "transactional"
    assert request.recipients() == [("bob@example.org", "to")]


def test_to_accepts_a_single_string() -> None:
    request = SendEmailRequest.model_validate(_request(to="bob@example.org", cc="Carol <carol@example.org>"))
    assert request.to == ["bob@example.org"]
    assert request.cc == ["Carol <carol@example.org>"]


def test_addresses_are_normalized() -> None:
    request = SendEmailRequest.model_validate(
        _request(**{"from": '"Jane" <jane@EXAMPLE.com>', "to": ["Bob <bob@bücher.example>"]})
    )
    assert request.from_ == "Jane <jane@example.com>"
    assert request.to == ["Bob <bob@xn--bcher-kva.example>"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from", "not-an-address"),
        ("from", "jane@localhost"),
        ("to", ["bob@example.org", "bad@@example.org"]),
        ("cc", ["nope"]),
        ("bcc", ["x@-bad.com"]),
        ("reply_to", ["<broken"]),
        ("to", ["bob@example.org\r\nBcc: eve@example.org"]),
    ],
)
def test_address_syntax(field: str, value: Any) -> None:
    [(where, message)] = _errors(_request(**{field: value}))
    # a list is checked item by item: the pointer names the bad item
    expected = field if isinstance(value, str) else f"{field}/{len(value) - 1}"
    assert where == expected
    assert message.startswith("Value error, ")


def test_at_least_one_recipient() -> None:
    [(_, message)] = _errors(_request(to=[]))
    assert "at least one recipient" in message
    SendEmailRequest.model_validate(_request(to=[], bcc=["hidden@example.org"]))  # bcc alone is enough


def test_at_most_fifty_recipients_across_to_cc_and_bcc() -> None:
    to = [f"to{i}@example.org" for i in range(20)]
    cc = [f"cc{i}@example.org" for i in range(20)]
    bcc = [f"bcc{i}@example.org" for i in range(MAX_RECIPIENTS - 40)]
    assert len(SendEmailRequest.model_validate(_request(to=to, cc=cc, bcc=bcc)).recipients()) == 50

    [(_, message)] = _errors(_request(to=to, cc=cc, bcc=[*bcc, "one-more@example.org"]))
    assert "at most 50 recipients" in message


def test_duplicates_are_collapsed_before_counting() -> None:
    to = [f"user{i}@example.org" for i in range(50)]
    request = SendEmailRequest.model_validate(
        _request(to=to, cc=["USER1@example.org", "Named <user2@EXAMPLE.org>"], bcc=to[:10])
    )
    recipients = request.recipients()
    assert len(recipients) == 50
    assert recipients[1] == ("user1@example.org", "to")  # the first kind wins
    assert all(kind == "to" for _, kind in recipients)


def test_recipients_keep_order_to_then_cc_then_bcc() -> None:
    request = SendEmailRequest.model_validate(
        _request(to=["a@x.org"], cc=["b@x.org", "a@x.org"], bcc=["c@x.org", "b@x.org"])
    )
    assert request.recipients() == [("a@x.org", "to"), ("b@x.org", "cc"), ("c@x.org", "bcc")]


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: eve@example.org", "line\nbreak", "carriage\rreturn", "nul\0"])
def test_subject_without_newlines(subject: str) -> None:
    assert [where for where, _ in _errors(_request(subject=subject))] == ["subject"]


def test_subject_required_and_bounded() -> None:
    assert "subject" in [w for w, _ in _errors(_request(subject=""))]
    assert "subject" in [w for w, _ in _errors(_request(subject="x" * 999))]
    body = _request()
    del body["subject"]
    assert "subject" in [w for w, _ in _errors(body)]


@pytest.mark.parametrize("value", ["a\r\nBcc: eve@example.org", "a\nb", "a\rb"])
def test_header_values_without_newlines(value: str) -> None:
    assert [where for where, _ in _errors(_request(headers={"X-Tag": value}))] == ["headers"]


@pytest.mark.parametrize(
    "name",
    ["Message-ID", "message-id", "MESSAGE-ID", "From", "bcc", "Bcc", "To", "Subject", "DKIM-Signature", "Return-Path"],
)
def test_reserved_headers_refused_in_any_case(name: str) -> None:
    [(where, message)] = _errors(_request(headers={name: "value"}))
    assert where == "headers" and "cannot be overridden" in message


@pytest.mark.parametrize("name", ["X Space", "X:Colon", "", "Ünicode", "x" * 77])
def test_header_names_must_be_field_names(name: str) -> None:
    assert [where for where, _ in _errors(_request(headers={name: "v"}))] == ["headers"]


def test_custom_headers_allowed() -> None:
    request = SendEmailRequest.model_validate(_request(headers={"X-Campaign": "spring", "List-Id": "<a.example.com>"}))
    assert request.headers == {"X-Campaign": "spring", "List-Id": "<a.example.com>"}


def test_header_value_length() -> None:
    assert [where for where, _ in _errors(_request(headers={"X-Long": "v" * 999}))] == ["headers"]


def test_text_or_html_required() -> None:
    [(_, message)] = _errors(_request(text=None))
    assert "text or html" in message
    assert SendEmailRequest.model_validate(_request(text=None, html="<p>x</p>")).html == "<p>x</p>"


def _attachment(**fields: Any) -> dict[str, Any]:
    attachment = {"filename": "a.pdf", "content_type": "application/pdf", "content": base64.b64encode(b"%PDF").decode()}
    attachment.update(fields)
    return attachment


def test_attachment_decodes() -> None:
    request = SendEmailRequest.model_validate(_request(attachments=[_attachment(content_type="Application/PDF")]))
    assert request.attachments[0].decoded() == b"%PDF"
    assert request.attachments[0].content_type == "application/pdf"


@pytest.mark.parametrize("content", ["not base64!", "abc", "YWJj\n?"])
def test_bad_base64_refused(content: str) -> None:
    errors = _errors(_request(attachments=[_attachment(content=content)]))
    assert errors[0][0] == "attachments/0/content" and "base64" in errors[0][1]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"filename": "../etc/passwd"}, "attachments/0/filename"),
        ({"filename": "a\r\nb.pdf"}, "attachments/0/filename"),
        ({"filename": ""}, "attachments/0/filename"),
        ({"content_type": "pdf"}, "attachments/0/content_type"),
        ({"content_type": "text/plain; charset=utf-8"}, "attachments/0/content_type"),
        ({"extra": 1}, "attachments/0/extra"),
    ],
)
def test_attachment_rules(fields: dict[str, Any], loc: str) -> None:
    assert loc in [where for where, _ in _errors(_request(attachments=[_attachment(**fields)]))]


@pytest.mark.parametrize("field", ["sender", "From", "send_at_later", "body"])
def test_unknown_fields_rejected(field: str) -> None:
    errors = _errors(_request(**{field: "x"}))
    assert (field, "Extra inputs are not permitted") in errors


def test_tags_rules() -> None:
    SendEmailRequest.model_validate(_request(tags={"campaign": "spring", "a.b:c-d_e": "1"}))
    assert [w for w, _ in _errors(_request(tags={"bad key": "x"}))] == ["tags"]
    assert [w for w, _ in _errors(_request(tags={"k": "v" * 257}))] == ["tags"]
    assert "tags" in [w for w, _ in _errors(_request(tags={f"k{i}": "v" for i in range(21)}))]


def test_pool() -> None:
    assert SendEmailRequest.model_validate(_request(pool="bulk")).pool == "bulk"
    assert [w for w, _ in _errors(_request(pool="marketing"))] == ["pool"]


def test_a_batch_leaves_each_email_to_the_route_and_documents_its_bounds() -> None:
    """The envelope is validated (no unknown fields) but its emails are kept raw: the route validates
    each alone and checks the count (tests/unit/test_api_http.py), so one bad email fails only itself."""
    raw: list[Any] = [_request(), {"to": "not an address"}]
    kept: object = BatchSendRequest.model_validate({"emails": raw}).emails
    assert kept == raw
    with pytest.raises(ValidationError):
        BatchSendRequest.model_validate({"emails": raw, "more": 1})
    emails = BatchSendRequest.model_json_schema()["properties"]["emails"]
    assert (emails["minItems"], emails["maxItems"]) == (1, MAX_BATCH)
    assert emails["items"] == {"$ref": "#/$defs/SendEmailRequest"}


# What MIME cannot carry in a header (issue 7, defect 2): C0/C1 controls (VT, FF, FS/GS/RS, NEL, DEL),
# line and paragraph separators, lone surrogates.
UNENCODABLE = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x7f", "\x01", "\ud800"]


@pytest.mark.parametrize("char", UNENCODABLE)
def test_subject_refuses_what_mime_cannot_carry(char: str) -> None:
    [(where, message)] = _errors(_request(subject=f"a{char}b"))
    assert where == "subject"
    assert "control character" in message or "unicode" in message  # pydantic refuses lone surrogates itself


@pytest.mark.parametrize("char", UNENCODABLE)
def test_header_values_refuse_what_mime_cannot_carry(char: str) -> None:
    assert [where for where, _ in _errors(_request(headers={"X-Tag": f"a{char}b"}))] == ["headers"]


@pytest.mark.parametrize("char", [*UNENCODABLE, "\t"])
@pytest.mark.parametrize("field", ["from", "to", "cc", "reply_to"])
def test_display_names_refuse_control_characters(field: str, char: str) -> None:
    value = f"Jane{char}Doe <jane@example.com>"
    wheres = [where for where, _ in _errors(_request(**{field: value if field == "from" else [value]}))]
    assert wheres == [field if field == "from" else f"{field}/0"]


@pytest.mark.parametrize("char", UNENCODABLE)
def test_filenames_refuse_what_mime_cannot_carry(char: str) -> None:
    wheres = [w for w, _ in _errors(_request(attachments=[_attachment(filename=f"a{char}.pdf")]))]
    assert wheres == ["attachments/0/filename"]


@pytest.mark.parametrize("body", ["nul\0here", "lone \ud800 surrogate"])
def test_bodies_refuse_nul_and_lone_surrogates(body: str) -> None:
    assert [w for w, _ in _errors(_request(text=body))] == ["text"]
    assert [w for w, _ in _errors(_request(html=body))] == ["html"]


def test_bodies_keep_form_feeds_and_tabs() -> None:
    assert SendEmailRequest.model_validate(_request(text="page\x0cbreak\tand tab")).text == "page\x0cbreak\tand tab"


def test_a_tab_in_a_subject_or_header_is_fine() -> None:
    request = SendEmailRequest.model_validate(_request(subject="a\tb", headers={"X-T": "a\tb"}))
    assert request.subject == "a\tb"


@pytest.mark.parametrize(
    "name",
    [
        "Resent-From",
        "resent-message-id",
        "Authentication-Results",
        "ARC-Seal",
        "arc-message-signature",
        "Received-SPF",
        "Delivered-To",
        "Disposition-Notification-To",
        "Return-Receipt-To",
        "X-Petrel-Anything",
        "Content-ID",
    ],
)
def test_more_reserved_headers(name: str) -> None:
    [(where, message)] = _errors(_request(headers={name: "value"}))
    assert where == "headers" and "cannot be overridden" in message


def test_two_headers_differing_only_in_case_are_refused() -> None:
    [(where, message)] = _errors(_request(headers={"X-Campaign": "a", "x-campaign": "b"}))
    assert where == "headers" and "same header" in message


def test_at_most_fifty_custom_headers() -> None:
    assert SendEmailRequest.model_validate(_request(headers={f"X-H{i}": "v" for i in range(50)}))
    assert [w for w, _ in _errors(_request(headers={f"X-H{i}": "v" for i in range(51)}))] == ["headers"]


def test_custom_headers_total_at_most_16_kib() -> None:
    fits = {f"X-H{i}": "v" * 900 for i in range(17)}  # 17 x 906 bytes
    assert SendEmailRequest.model_validate(_request(headers=fits))
    too_much = {f"X-H{i}": "v" * 900 for i in range(19)}
    [(where, message)] = _errors(_request(headers=too_much))
    assert where == "headers" and "16384" in message


@pytest.mark.parametrize("char", ["\x0b", "\ud800"])
def test_tag_values_are_text(char: str) -> None:
    assert [w for w, _ in _errors(_request(tags={"k": f"a{char}"}))] == ["tags"]
