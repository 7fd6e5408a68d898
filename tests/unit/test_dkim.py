"""petrel.mail.dkim: byte-identical to dkimpy's own signature, verifiable, and broken by any tampering.

Invariant: for the same key, message, h= list and t=, `sign` returns exactly the bytes `dkim.sign`
returns with relaxed/relaxed, and `dkim.verify` accepts the signed message against the key's record.
dkimpy takes t= from the clock and has no parameter for it, so each comparison reads t= from dkimpy's
output and passes it to `sign`: the comparison is of the whole field, b= included, with nothing
normalised. dkimpy signs and verifies Ed25519 only with PyNaCl, which is not a dependency; the Ed25519
path is checked against the RFC 8463 Appendix A example instead (same key, message, t= and h=: the
b= value there is an independent oracle, since Ed25519 signatures are deterministic).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from petrel.mail import dkim as petrel_dkim
from petrel.mail.dkim import DkimError, DkimKey, sign

MESSAGES: dict[str, bytes] = {
    "plain": (
        b"From: Ana <ana@example.com>\r\nTo: bo@example.org\r\nSubject: Your order\r\n"
        b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nIt ships today.\r\n"
    ),
    "folded headers": (
        b"From: Ana\r\n <ana@example.com>\r\nTo: bo@example.org,\r\n\tcy@example.org\r\n"
        b"Subject: a  subject\r\n   that folds \t twice\r\n\r\nbody\r\n"
    ),
    "trailing whitespace": (
        b"From: ana@example.com  \r\nSubject:\tspaced \t \r\n\r\nline one   \r\nline \t two\t\r\n\r\n\r\n\r\n"
    ),
    "empty body": b"From: ana@example.com\r\nSubject: nothing\r\n\r\n",
    "no body at all": b"From: ana@example.com\r\nSubject: nothing",
    "body without final CRLF": b"From: ana@example.com\r\nSubject: x\r\n\r\nlast line has no end",
    "LF line ends": b"From: ana@example.com\nSubject: unix\n\nfirst\n\nsecond\n",
    "non-ASCII UTF-8 subject": (
        "From: Zoë <zoe@example.com>\r\nSubject: Bestellung übermorgen 注文\r\n\r\nGrüße\r\n".encode()
    ),
    "repeated headers": (
        b"Received: from a by b\r\nFrom: ana@example.com\r\nTo: one@example.org\r\nReferences: <a@x>\r\n"
        b"To: two@example.org\r\nReferences: <b@x>\r\nComments: not signed\r\n\r\nhello\r\n"
    ),
    "one-click unsubscribe": (
        b"From: news@example.com\r\nTo: bo@example.org\r\nSubject: news\r\n"
        b"List-Unsubscribe: <https://example.com/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"\r\n" + b"A long body line that goes on. " * 200 + b"\r\n"
    ),
}
# Names up to the length where a d=/i=/s= value still fits a folded line: dkimpy's bytes exactly.
NAMES = [("s2026", "example.com"), ("s-" + "x" * 60, "mail." + "d" * 40 + ".example.com")]


# Text made of what canonicalization acts on: spaces, tabs, line ends whole and broken, other whitespace.
_PIECES = st.sampled_from([b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"a", b"b.", b"\x0b", b"\x0c"])
CANONICALIZABLE = st.lists(_PIECES, max_size=40).map(b"".join)


@given(CANONICALIZABLE)
def test_relaxed_body_is_dkimpys_for_any_body(body: bytes) -> None:
    assert petrel_dkim.canonical_body(body) == Relaxed.canonicalize_body(body)


@given(CANONICALIZABLE)
def test_relaxed_header_value_is_dkimpys_for_any_value(value: bytes) -> None:
    [(_, expected)] = Relaxed.canonicalize_headers([(b"Subject", value)])
    assert petrel_dkim._relaxed_value(value) == expected


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def traditional_pem(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1 PEM: the form dkimpy reads."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def dns_serving(record: str) -> Callable[..., bytes]:
    """A dnsfunc for dkim.verify that serves one TXT record for any name (no network)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record.encode()

    return lookup


def dkimpy_sign(message: bytes, selector: str, domain: str, pem: bytes, names: list[str]) -> tuple[bytes, int]:
    """dkimpy's relaxed/relaxed field for the h= list, and the t= it chose."""
    field: bytes = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[name.encode() for name in names],
        signature_algorithm=b"rsa-sha256",
    )
    found = re.search(rb"[; ]t=(\d+);", field)
    assert found is not None, field
    return field, int(found.group(1))


@pytest.mark.parametrize("selector,domain", NAMES)
@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_rsa_signature_is_byte_identical_to_dkimpy_and_verifies(
    rsa_key: rsa.RSAPrivateKey, case: str, selector: str, domain: str
) -> None:
    message = MESSAGES[case]
    pem = traditional_pem(rsa_key)
    fields, _ = petrel_dkim.parse(message)
    names = petrel_dkim.signed_header_list(fields, petrel_dkim.SIGNED_HEADERS)
    expected, t = dkimpy_sign(message, selector, domain, pem, names)

    ours = sign(message, selector=selector, domain=domain, private_key=pem, timestamp=t)

    assert ours == expected
    assert ours.endswith(b"\r\n") and all(len(line) <= 78 for line in ours.split(b"\r\n"))
    assert dkim.verify(ours + message, dnsfunc=dns_serving(DkimKey.load(pem).public_record()))


@pytest.mark.parametrize(
    "selector,domain",
    [("s", "mail." + "d" * 63 + ".example.com"), ("selector-" + "x" * 70, "example.com")],
)
def test_a_name_longer_than_a_line_is_never_cut(rsa_key: rsa.RSAPrivateKey, selector: str, domain: str) -> None:
    """Here dkimpy cuts inside d=/i=/s= (a domain with a space in it, which no receiver verifies);
    Petrel keeps each name whole on a long line, and the signature verifies."""
    message = MESSAGES["plain"]
    field = sign(message, selector=selector, domain=domain, private_key=rsa_key)
    lines = field.split(b"\r\n")
    assert any(b"d=" + domain.encode() + b";" in line for line in lines)
    assert any(b"s=" + selector.encode() + b";" in line for line in lines)
    assert all(len(line) < 998 for line in lines)
    assert dkim.verify(field + message, dnsfunc=dns_serving(DkimKey.load(rsa_key).public_record()))


def test_every_key_form_gives_the_same_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    message = MESSAGES["plain"]
    pkcs8 = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forms: list[object] = [traditional_pem(rsa_key), pkcs8, pkcs8.decode(), rsa_key, DkimKey.load(rsa_key)]
    signed = {
        sign(message, selector="s", domain="example.com", private_key=form, timestamp=1_700_000_000)  # type: ignore[arg-type]
        for form in forms
    }
    assert len(signed) == 1


def test_h_lists_the_headers_that_matter_with_from_once_more_than_it_occurs(rsa_key: rsa.RSAPrivateKey) -> None:
    fields, _ = petrel_dkim.parse(MESSAGES["repeated headers"])
    names = petrel_dkim.signed_header_list(fields, petrel_dkim.SIGNED_HEADERS)
    assert names == ["from", "to", "references", "to", "references", "from"]
    twice = b"From: a@example.com\r\nFrom: b@example.com\r\nSubject: s\r\n\r\n"
    assert petrel_dkim.signed_header_list(petrel_dkim.parse(twice)[0], ["subject"]) == [
        "from",
        "from",
        "subject",
        "from",
    ]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"It ships today.", b"It ships tomorrow."), id="body changed"),
        pytest.param(lambda m: m + b"P.S. extra line\r\n", id="body appended"),
        pytest.param(lambda m: m.replace(b"Subject: Your order", b"Subject: Your 0rder"), id="subject changed"),
        pytest.param(lambda m: m.replace(b"To: bo@", b"To: eve@"), id="to changed"),
        pytest.param(lambda m: b"From: eve@evil.example\r\n" + m, id="second From added"),
        pytest.param(lambda m: m.replace(b"MIME-Version: 1.0\r\n", b""), id="signed header removed"),
    ],
)
def test_tampering_fails_verification(rsa_key: rsa.RSAPrivateKey, tamper: Callable[[bytes], bytes]) -> None:
    message = MESSAGES["plain"]
    field = sign(message, selector="s", domain="example.com", private_key=rsa_key)
    lookup = dns_serving(DkimKey.load(rsa_key).public_record())
    assert dkim.verify(field + message, dnsfunc=lookup)
    assert not dkim.verify(field + tamper(message), dnsfunc=lookup)


def test_relaxed_changes_in_transit_keep_the_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    """What relaxed canonicalization is for: refolding, WSP runs and trailing empty lines don't break it."""
    message = MESSAGES["plain"]
    field = sign(message, selector="s", domain="example.com", private_key=rsa_key)
    moved = message.replace(b"Subject: Your order", b"Subject:   Your\r\n\torder").replace(
        b"It ships today.\r\n", b"It  ships today.  \r\n\r\n\r\n"
    )
    assert dkim.verify(field + moved, dnsfunc=dns_serving(DkimKey.load(rsa_key).public_record()))


def test_default_timestamp_is_now(rsa_key: rsa.RSAPrivateKey) -> None:
    before = int(time.time())
    field = sign(MESSAGES["plain"], selector="s", domain="example.com", private_key=rsa_key)
    found = re.search(rb"t=(\d+);", field)
    assert found is not None and before <= int(found.group(1)) <= int(time.time())


# ------------------------------------------------------------------------------------------ Ed25519

RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\nTo: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\nDate: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n\r\n"
    b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n"
)
RFC8463_B = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="


def tag(field: bytes, name: bytes) -> bytes:
    """A tag's value with folding whitespace removed."""
    unfolded = re.sub(rb"\s+", b"", field.split(b":", 1)[1])
    found = re.search(rb"(?:^|;)" + name + rb"=([^;]*)", unfolded)
    assert found is not None, (name, field)
    return found.group(1)


def test_ed25519_reproduces_the_rfc8463_example() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC8463_SEED))
    field = sign(
        RFC8463_MESSAGE,
        selector="brisbane",
        domain="football.example.com",
        private_key=key,
        headers=("from", "to", "subject", "date", "message-id"),
        oversign=("from", "subject", "date"),
        timestamp=1528637909,
    )
    assert tag(field, b"a") == b"ed25519-sha256"
    assert tag(field, b"h") == b"from:to:subject:date:message-id:from:subject:date"
    assert tag(field, b"bh") == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    assert tag(field, b"b") == RFC8463_B.encode()
    assert DkimKey.load(key).public_record() == "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def test_ed25519_signature_changes_with_the_body() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC8463_SEED))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    args = {"selector": "brisbane", "domain": "football.example.com", "private_key": pem, "timestamp": 1528637909}
    original = sign(RFC8463_MESSAGE, **args)  # type: ignore[arg-type]
    changed = sign(RFC8463_MESSAGE.replace(b"Joe.", b"Eve."), **args)  # type: ignore[arg-type]
    assert tag(original, b"bh") != tag(changed, b"bh") and tag(original, b"b") != tag(changed, b"b")


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "message,kwargs,reason",
    [
        (b"To: a@example.org\r\nSubject: s\r\n\r\nx\r\n", {}, "no From"),
        (MESSAGES["plain"], {"headers": ("from", "received")}, "received"),
        (MESSAGES["plain"], {"algorithm": "ed25519-sha256"}, "ed25519-sha256 requested"),
        (MESSAGES["plain"], {"domain": "bücher.example"}, "ASCII"),
        (MESSAGES["plain"], {"identity": "a@other.example"}, "identity"),
        (b"not a header line\r\n\r\nx", {}, "not a header"),
    ],
)
def test_unsignable_input_is_refused(
    rsa_key: rsa.RSAPrivateKey, message: bytes, kwargs: dict[str, object], reason: str
) -> None:
    options: dict[str, object] = {"selector": "s", "domain": "example.com", "private_key": rsa_key} | kwargs
    with pytest.raises(DkimError, match=reason):
        sign(message, **options)  # type: ignore[arg-type]


def test_an_unusable_key_is_refused() -> None:
    with pytest.raises(DkimError, match="unreadable"):
        DkimKey.load(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
