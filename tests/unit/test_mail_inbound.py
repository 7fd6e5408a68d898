"""Reading incoming MIME (issue 9, point 3 and its malformed-MIME test): `petrel.mail.inbound`.

The invariants, checked on every result here (`assert_storable`) and on random and mutated input:
- `parse_inbound` never raises, whatever the bytes;
- every string it returns encodes as UTF-8 and holds no NUL (so the DynamoDB write cannot fail);
- the result is bounded (headers, addresses, text, parse_error), whatever the size of the input;
- a defect in the input shows in `parse_error`, and what could be read is still there.
"""

from __future__ import annotations

import base64
import email
import os
import random
import tracemalloc
from email import policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petrel.mail import inbound
from petrel.mail.inbound import ParsedInbound, parse_bytes, parse_inbound, read_inbound
from petrel.mail.reports import body_text, parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "inbound"
MALFORMED = FIXTURES / "malformed"
CRLF = b"\r\n"


def assert_storable(parsed: ParsedInbound, *, max_text: int = inbound.MAX_TEXT) -> None:
    """What must hold for any result: UTF-8 strings without NUL, every field within its limit."""
    strings: list[str] = [name for name, _ in parsed.headers] + [value for _, value in parsed.headers]
    strings += [s for s in (parsed.from_, parsed.subject, parsed.message_id, parsed.in_reply_to) if s is not None]
    strings += [*parsed.to, *parsed.references, *(s for s in (parsed.text, parsed.html, parsed.parse_error) if s)]
    for attachment in parsed.attachments:
        strings += [s for s in (attachment.filename, attachment.disposition, attachment.content_id) if s]
        strings.append(attachment.content_type)
        assert attachment.size == len(attachment.payload)
    for value in strings:
        value.encode("utf-8")  # raises on a lone surrogate
        assert "\0" not in value
    assert sum(len(n) + len(v) for n, v in parsed.headers) <= inbound.MAX_HEADERS_CHARS + inbound.MAX_HEADER_VALUE + 200
    assert all(len(v) <= inbound.MAX_HEADER_VALUE for _, v in parsed.headers)
    assert len(parsed.to) <= inbound.MAX_ADDRESSES
    assert len(parsed.references) <= inbound.MAX_REFERENCES
    assert len(parsed.attachments) <= inbound.MAX_ATTACHMENTS
    assert parsed.parse_error is None or 0 < len(parsed.parse_error) <= inbound.MAX_PARSE_ERROR
    assert len(parsed.text or "") <= max_text and len(parsed.html or "") <= max_text


def parse(raw: bytes, **kwargs: int) -> ParsedInbound:
    parsed = parse_inbound(raw, **kwargs)
    assert_storable(parsed, **kwargs)
    return parsed


def lines(*rows: str | bytes) -> bytes:
    return CRLF.join(row if isinstance(row, bytes) else row.encode() for row in rows)


# --------------------------------------------------------------------------------- well-formed mail


def test_plain_message_reads_every_field() -> None:
    raw = lines(
        "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@kunde.example.de>",
        "To: Orders <orders@shop.example.com>, second@shop.example.com",
        "Cc: =?iso-8859-1?q?Ren=E9?= <rene@shop.example.com>, orders@shop.example.com",
        "Subject: =?utf-8?b?TGllZmVydW5nIMO8YmVybW9yZ2Vu?=",
        "Message-ID: <abc-1@kunde.example.de>",
        "In-Reply-To: <em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>",
        "References: <root@shop.example.com>",
        "  <em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>",
        "Date: Mon, 30 Nov 2026 12:00:00 +0000",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Gr=FC=DFe aus K=F6ln",
    )
    parsed = parse(raw)
    assert parsed.from_ == "juergen@kunde.example.de"
    assert parsed.to == ("orders@shop.example.com", "second@shop.example.com", "rene@shop.example.com")
    assert parsed.subject == "Lieferung übermorgen"
    assert parsed.message_id == "<abc-1@kunde.example.de>"
    assert parsed.in_reply_to == "<em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>"
    assert parsed.references == ("<root@shop.example.com>", "<em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>")
    assert parsed.text == "Grüße aus Köln"
    assert parsed.html is None and parsed.attachments == ()
    assert dict(parsed.headers)["From"] == "Jürgen Müller <juergen@kunde.example.de>"
    assert dict(parsed.headers)["Cc"] == "René <rene@shop.example.com>, orders@shop.example.com"
    assert parsed.parse_error is None and parsed.truncated == ()


def test_multipart_alternative_gives_text_and_html_and_no_attachment() -> None:
    raw = lines(
        "From: ana@customer.example.org",
        'Content-Type: multipart/alternative; boundary="alt"',
        "",
        "--alt",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Thanks, see you",
        "--alt",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode("<p>Thanks, <b>see</b> you \u2013 \u2713</p>".encode()).decode(),
        "--alt--",
        "",
    )
    parsed = parse(raw)
    assert parsed.text == "Thanks, see you"
    assert parsed.html == "<p>Thanks, <b>see</b> you \u2013 \u2713</p>"
    assert parsed.attachments == ()
    assert parsed.parse_error is None


def mixed_message() -> bytes:
    pdf = b"%PDF-1.4 \x00\x01\x02 report"
    png = bytes(range(256)) * 4
    return lines(
        "From: Tom <tom@corp.example.com>",
        "To: orders@shop.example.com",
        "Subject: invoice",
        "Message-ID: <mixed-1@corp.example.com>",
        'Content-Type: multipart/mixed; boundary="mix"',
        "",
        "preamble",
        "--mix",
        'Content-Type: multipart/related; boundary="rel"',
        "",
        "--rel",
        'Content-Type: multipart/alternative; boundary="alt"',
        "",
        "--alt",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "See the attached invoice.",
        "--alt",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p>See the attached invoice.<img src="cid:logo@corp"></p>',
        "--alt--",
        "--rel",
        "Content-Type: image/png",
        "Content-ID: <logo@corp>",
        "Content-Disposition: inline",
        "Content-Transfer-Encoding: base64",
        "",
        base64.encodebytes(png).decode().replace("\n", "\r\n").rstrip(),
        "--rel--",
        "--mix",
        "Content-Type: application/pdf; name=invoice.pdf",
        "Content-Disposition: attachment; filename*=utf-8''%C3%9Cbersicht%20Q4%20%E2%82%AC.pdf",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(pdf).decode(),
        "--mix",
        "Content-Type: text/plain; charset=utf-8",
        'Content-Disposition: attachment; filename="../../etc/notes.txt"',
        "",
        "a text file, not the body",
        "--mix--",
        "",
    )


def test_multipart_mixed_keeps_attachments_with_their_metadata_and_bytes() -> None:
    parsed = parse(mixed_message())
    assert parsed.text == "See the attached invoice."
    assert parsed.html == '<p>See the attached invoice.<img src="cid:logo@corp"></p>'
    logo, pdf, notes = parsed.attachments
    assert (logo.content_type, logo.disposition, logo.content_id, logo.filename) == (
        "image/png",
        "inline",
        "logo@corp",
        None,
    )
    assert logo.payload == bytes(range(256)) * 4 and logo.size == 1024
    assert (pdf.filename, pdf.content_type, pdf.disposition) == ("Übersicht Q4 €.pdf", "application/pdf", "attachment")
    assert pdf.payload == b"%PDF-1.4 \x00\x01\x02 report"
    assert notes.filename == "notes.txt"  # the last path component only
    assert notes.payload == b"a text file, not the body"
    assert parsed.parse_error is None


def test_html_only_message_gets_its_text_from_the_html_as_the_classifier_reads_it() -> None:
    raw = (FIXTURES / "reply_french_html.eml").read_bytes()
    parsed = parse(raw)
    assert parsed.html is not None and "<" in parsed.html
    assert parsed.text == body_text(parse_message(raw))
    assert parsed.text is not None and parsed.text.startswith("Merci, c'est bien reçu.\n")
    assert "<p>" not in parsed.text and "> Votre commande est en route." in parsed.text


def test_read_inbound_on_parse_bytes_is_parse_inbound_and_parse_bytes_is_the_bytes_parser() -> None:
    for path in sorted(FIXTURES.glob("*.eml")):
        raw = path.read_bytes()
        message = parse_bytes(raw)
        assert read_inbound(message) == parse_inbound(raw), path.name
        assert message.as_bytes() == email.message_from_bytes(raw, policy=policy.default).as_bytes(), path.name


# --------------------------------------------------------------------------------------- reports


def test_delivery_report_parts_are_attachments_that_can_be_downloaded() -> None:
    parsed = parse((FIXTURES / "dsn_failed.eml").read_bytes())
    assert parsed.text is not None and parsed.text.startswith("This is the mail system at host")
    status, headers = parsed.attachments
    assert status.content_type == "message/delivery-status"
    assert b"Original-Envelope-Id: msg_01JDQ3ZK8N5V7W2X4Y6A8B0C1D\r\n" in status.payload
    assert b"\r\n\r\nFinal-Recipient: rfc822; no.such.user@customer.example.org\r\n" in status.payload
    assert b"Action: failed\r\nStatus: 5.1.1\r\n" in status.payload
    assert headers.content_type == "text/rfc822-headers"
    assert b"Message-ID: <em_01jdq3yq2r4t6v8x0z2b4d6f8h@shop.example.com>" in headers.payload
    assert parsed.parse_error is None


def test_enclosed_original_and_feedback_report_are_kept_whole() -> None:
    delivered = parse((FIXTURES / "dsn_delivered.eml").read_bytes())
    enclosed = next(a for a in delivered.attachments if a.content_type == "message/rfc822")
    original = email.message_from_bytes(enclosed.payload, policy=policy.default)
    assert original["Message-ID"] is not None and original["From"] is not None
    assert original.get_content().strip()
    complaint = parse((FIXTURES / "arf.eml").read_bytes())
    kinds = [a.content_type for a in complaint.attachments]
    assert kinds == ["message/feedback-report", "message/rfc822"]
    assert b"Feedback-Type: abuse" in complaint.attachments[0].payload


# ------------------------------------------------------------------------------------ malformed MIME


def test_boundary_never_found_keeps_the_body_as_text() -> None:
    raw = lines(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="declared"',
        "",
        "--other",
        "Content-Type: text/plain",
        "",
        "the words",
        "--other--",
    )
    parsed = parse(raw)
    assert parsed.parse_error is not None and "multipart boundary not found" in parsed.parse_error
    assert parsed.text is not None and "the words" in parsed.text


def test_missing_closing_boundary_keeps_every_part() -> None:
    raw = mixed_message().rsplit(b"--mix--", 1)[0]
    parsed = parse(raw)
    assert parsed.parse_error is not None and "closing multipart boundary missing" in parsed.parse_error
    assert parsed.text == "See the attached invoice."
    assert [a.content_type for a in parsed.attachments] == ["image/png", "application/pdf", "text/plain"]


def test_multipart_without_boundary_parameter() -> None:
    parsed = parse(lines("From: a@example.com", "Content-Type: multipart/mixed", "", "just text"))
    assert parsed.parse_error is not None and "multipart without a boundary" in parsed.parse_error
    assert parsed.text == "just text"


def test_unknown_charset_falls_back_to_utf8_with_replacement_and_says_so() -> None:
    raw = lines(
        "From: a@example.com",
        "Subject: =?x-klingon?q?Qapla=FF?=",
        "Content-Type: text/plain; charset=x-klingon",
        "",
        "caf\xc3\xa9 \xff".encode("latin-1"),
    )
    parsed = parse(raw)
    assert parsed.text == "café \ufffd"
    assert parsed.parse_error is not None
    assert "unknown charset 'x-klingon' in message; decoded as UTF-8 with replacement" in parsed.parse_error
    assert "unknown charset 'x-klingon' in Subject header" in parsed.parse_error
    assert parsed.subject is not None and parsed.subject.startswith("Qapla")


def test_bytes_invalid_in_the_declared_charset_are_replaced() -> None:
    raw = lines("From: a@example.com", "Content-Type: text/plain; charset=utf-8", "", b"na\xefve \xe9t\xe9")
    parsed = parse(raw)
    assert parsed.text == "na\ufffdve \ufffdt\ufffd"
    assert parsed.parse_error == "bytes not valid utf-8 in message; undecodable bytes replaced"


def test_charset_that_yields_lone_surrogates_or_nul_still_gives_storable_text() -> None:
    raw = lines("From: a@example.com", "Content-Type: text/plain; charset=unicode_escape", "", b"a\\ud800b\\x00c")
    parsed = parse(raw)
    assert parsed.text == "a\ufffdb\ufffdc"
    assert parsed.parse_error == "NUL characters in message"


def test_non_utf8_bytes_in_headers_and_body_survive() -> None:
    raw = lines(
        b"From: Ren\xe9 <rene@example.com>",
        b"To: orders@shop.example.com",
        b"Subject: caf\xe9 and caf\xc3\xa9",
        b"X-Raw-UTF8: \xe6\x97\xa5\xe6\x9c\xac",
        b"",
        b"8-bit body: \xc3\xbc and \xfc",
    )
    parsed = parse(raw)
    assert parsed.subject == "caf\ufffd and café"
    assert dict(parsed.headers)["X-Raw-UTF8"] == "日本"  # RFC 6532 UTF-8 is no defect
    assert parsed.from_ == "rene@example.com"
    assert parsed.text == "8-bit body: ü and \ufffd"
    assert parsed.parse_error is not None
    for expected in (
        "non-UTF-8 bytes in From header",
        "non-UTF-8 bytes in Subject header",
        "8-bit bytes in a us-ascii",
    ):
        assert expected in parsed.parse_error
    assert "X-Raw-UTF8" not in parsed.parse_error


def test_undeclared_utf8_body_is_read_without_a_defect() -> None:
    parsed = parse(lines("From: a@example.com", "", "Grüße".encode()))
    assert parsed.text == "Grüße" and parsed.parse_error is None


def test_bad_base64_is_decoded_as_far_as_it_goes_and_recorded() -> None:
    raw = lines(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        "",
        "YWJj\r\nZA=",
        "--b",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        "",
        "YW*Jj!ZGVm",
        "--b--",
    )
    parsed = parse(raw)
    assert [a.payload for a in parsed.attachments] == [b"abcd", b"abcdef"]
    assert parsed.parse_error is not None
    assert "bad base64 padding (part 1)" in parsed.parse_error
    assert "bad base64 characters (part 2)" in parsed.parse_error


def test_one_megabyte_of_headers_is_bounded_and_the_wanted_ones_are_still_read() -> None:
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"y" * 80) for i in range(11_000))
    raw = filler + lines("From: a@example.com", "To: b@example.com", "Subject: hello", "", "body")
    assert len(raw) > 1_000_000
    parsed = parse(raw)
    assert (parsed.from_, parsed.to, parsed.subject, parsed.text) == (
        "a@example.com",
        ("b@example.com",),
        "hello",
        "body",
    )
    assert len(parsed.headers) < 1000 and parsed.truncated == ("headers",)
    assert parsed.parse_error is not None and "headers over 64 KiB" in parsed.parse_error


@pytest.mark.parametrize("name", ["Subject", "To", "References", "X-Long"])
def test_one_megabyte_header_value_is_cut(name: str) -> None:
    value = b", ".join(b"<u%d@example.com>" % i for i in range(60_000))
    raw = lines(b"From: a@example.com", name.encode() + b": " + value, b"", b"body")
    parsed = parse(raw)
    assert parsed.truncated == ("headers",) and parsed.text == "body"
    assert parsed.parse_error == f"{name} header over 16000 characters; cut"
    if name == "To":
        assert len(parsed.to) == inbound.MAX_ADDRESSES and parsed.to[0] == "u0@example.com"
    if name == "References":
        assert 0 < len(parsed.references) <= inbound.MAX_REFERENCES


def test_twenty_five_megabyte_attachment_parses_in_a_few_copies_of_memory() -> None:
    payload = os.urandom(25 * 1024 * 1024)
    raw = lines(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="big"',
        "",
        "--big",
        "Content-Type: text/plain",
        "",
        "see attached",
        "--big",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename="big.bin"',
        "Content-Transfer-Encoding: base64",
        "",
        base64.encodebytes(payload).replace(b"\n", CRLF) + b"--big--",
        "",
    )
    tracemalloc.start()
    try:
        parsed = parse_inbound(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.text == "see attached" and parsed.parse_error is None
    (attachment,) = parsed.attachments
    assert attachment.payload == payload and attachment.size == len(payload) and attachment.filename == "big.bin"
    # The email package alone (message_from_bytes + get_payload(decode=True)) peaks at ~7.6x the raw size.
    assert peak < 4 * len(raw), f"peak {peak / len(raw):.1f}x the raw message"


def test_max_text_cuts_text_and_html_and_says_which() -> None:
    raw = lines(
        "From: a@example.com",
        'Content-Type: multipart/alternative; boundary="a"',
        "",
        "--a",
        "Content-Type: text/plain",
        "",
        "x" * 500,
        "--a",
        "Content-Type: text/html",
        "",
        "<p>" + "y" * 500 + "</p>",
        "--a--",
    )
    parsed = parse(raw, max_text=100)
    assert parsed.text == "x" * 100 and parsed.html == "<p>" + "y" * 97
    assert parsed.truncated == ("text", "html") and parsed.parse_error is None


def test_parts_beyond_the_attachment_limit_are_counted_not_extracted() -> None:
    parts = [lines("--b", "Content-Type: application/octet-stream", "", f"part {i}") for i in range(130)]
    raw = lines("From: a@example.com", 'Content-Type: multipart/mixed; boundary="b"', "", *parts, "--b--", "")
    parsed = parse(raw)
    assert len(parsed.attachments) == inbound.MAX_ATTACHMENTS
    assert parsed.attachments[-1].payload == b"part 99"
    assert parsed.parse_error == "30 parts over the limit of 100 attachments not extracted"


def test_nesting_deeper_than_the_parser_can_follow_still_reads_the_headers() -> None:
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(3000))
    raw = lines("From: a@example.com", "Subject: deep", nested.decode(), "x")
    parsed = parse(raw)
    assert (parsed.from_, parsed.subject) == ("a@example.com", "deep")
    assert parsed.parse_error is not None and "could not be parsed (RecursionError)" in parsed.parse_error


def test_nesting_is_followed_to_a_bounded_depth() -> None:
    depth = inbound.MAX_DEPTH + 5
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(depth))
    raw = lines(b"From: a@example.com", opening + b"Content-Type: text/plain\r\n\r\ndeep text")
    parsed = parse(raw)
    assert parsed.text is None
    assert parsed.parse_error is not None and f"parts nested deeper than {inbound.MAX_DEPTH}" in parsed.parse_error


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"Subject: no sender\r\n\r\nhi", "missing From header"),
        (b"From: nobody\r\n\r\nhi", "From header without an address"),
        (b"\x00\xff\xfe binary junk", "no header section"),
    ],
)
def test_missing_headers_and_empty_input(raw: bytes, expected: str) -> None:
    parsed = parse(raw)
    assert parsed.parse_error is not None and expected in parsed.parse_error


def test_every_truncation_of_a_multipart_message_is_read_and_its_damage_recorded() -> None:
    raw = mixed_message()
    body_start = raw.index(b"\r\n\r\n")
    for cut in range(0, len(raw), 11):
        parsed = parse(raw[:cut])
        if cut > raw.index(b"--mix\r\n") + 2:  # into the multipart body: the closing boundary is gone
            assert parsed.parse_error is not None and "boundary" in parsed.parse_error, cut
            assert parsed.from_ == "tom@corp.example.com"
        elif cut > body_start:
            assert parsed.subject == "invoice"


@pytest.mark.parametrize("path", sorted(MALFORMED.glob("*.eml")), ids=lambda p: p.name)
def test_malformed_fixtures_record_their_defect(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text().strip()
    parsed = parse(path.read_bytes())
    assert parsed.parse_error is not None and expected in parsed.parse_error


def test_fixtures_are_read_without_defects() -> None:
    for path in sorted(FIXTURES.glob("*.eml")):
        parsed = parse(path.read_bytes())
        assert parsed.parse_error is None, (path.name, parsed.parse_error)
        assert parsed.from_ is not None and parsed.text, path.name


# ------------------------------------------------------------------------------------- any input


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise_and_give_a_storable_result(raw: bytes) -> None:
    parse(raw)


SEEDS = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))] + [mixed_message()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SEEDS) - 1), st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=8)), max_size=8))
def test_mutated_mime_never_raises_and_gives_a_storable_result(seed: int, edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(SEEDS[seed])
    for position, data in edits:
        at = position % (len(raw) + 1)
        raw[at : at + len(data) // 2] = data  # replace some bytes, insert others
    parse(bytes(raw))


def test_mutations_of_every_structural_byte_never_raise() -> None:
    """Deterministic companion to the hypothesis test: each boundary, colon and newline of a seed broken."""
    rng = random.Random(9)
    raw = mixed_message()
    for index, byte in enumerate(raw):
        if byte in b':-\r\n=;"':
            replacement = bytes([rng.choice(b"\x00\xff-:\n x")])
            parse(raw[:index] + replacement + raw[index + 1 :])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF) | st.sampled_from("\t =?"), max_size=60))
def test_unstructured_headers_read_as_the_header_parser_reads_them(value: str) -> None:
    """Unstructured headers without encoded words skip the header parser: the value must not change."""
    raw = b"From: a@example.com\r\nX-Note: " + value.encode() + b"\r\nSubject: " + value.encode() + b"\r\n\r\nx"
    parsed = parse(raw)
    (note,) = (v for n, v in parsed.headers if n == "X-Note")
    for name in ("X-Note", "Subject"):
        header = policy.default.header_factory(name, value.encode().decode("ascii", "surrogateescape"))
        expected = str(header).replace("\0", "\ufffd").strip()
        assert dict(parsed.headers)[name] == expected, name
    assert note == dict(parsed.headers)["Subject"]
