"""petrel.mail.addresses: address syntax, IDN domains, display names, header injection."""

from __future__ import annotations

import pytest

from petrel.mail.addresses import AddressError, Mailbox, normalize_domain, parse_mailbox, validate_address


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("user@example.com", "user@example.com"),
        ("first.last+tag@example.co.uk", "first.last+tag@example.co.uk"),
        ("o'brien@example.com", "o'brien@example.com"),
        ("x_y-z!#$%&*/=?^`{|}~@sub.example.com", "x_y-z!#$%&*/=?^`{|}~@sub.example.com"),
        ("User@EXAMPLE.com", "User@example.com"),  # the domain is lower-cased, the local part kept
        ("  user@example.com  ", "user@example.com"),
        ("user@example.com.", "user@example.com"),
        ("user@xn--bcher-kva.example", "user@xn--bcher-kva.example"),
    ],
)
def test_valid_addresses(raw: str, expected: str) -> None:
    assert validate_address(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plainaddress",
        "@example.com",
        "user@",
        "user@localhost",  # a single label
        "user@example",  # likewise
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@1.2.3.4",  # a numeric top-level label
        "user@[127.0.0.1]",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        '"quoted"@example.com',
        "us er@example.com",
        "jörg@example.com",  # SMTPUTF8 local parts are not supported
        "a" * 65 + "@example.com",
        "user@" + "a" * 64 + ".com",
        "user@" + ".".join(["a" * 60] * 5) + ".com",
    ],
)
def test_invalid_addresses(raw: str) -> None:
    with pytest.raises(AddressError):
        validate_address(raw)


def test_idn_domain_becomes_punycode() -> None:
    assert validate_address("jorg@bücher.example") == "jorg@xn--bcher-kva.example"
    assert normalize_domain("Bücher.Example") == "xn--bcher-kva.example"
    assert parse_mailbox("Jörg <jorg@münchen.de>") == Mailbox(address="jorg@xn--mnchen-3ya.de", name="Jörg")


def test_invalid_idn_is_refused() -> None:
    with pytest.raises(AddressError):
        normalize_domain("bü\u200dcher..example")


@pytest.mark.parametrize(
    ("raw", "name", "address"),
    [
        ("user@example.com", "", "user@example.com"),
        ("<user@example.com>", "", "user@example.com"),
        ("Jane Doe <jane@example.com>", "Jane Doe", "jane@example.com"),
        ('"Doe, Jane" <jane@example.com>', "Doe, Jane", "jane@example.com"),
        ('"Say \\"hi\\"" <jane@example.com>', 'Say "hi"', "jane@example.com"),
        ("  Jane   <jane@EXAMPLE.com>  ", "Jane", "jane@example.com"),
    ],
)
def test_display_names(raw: str, name: str, address: str) -> None:
    mailbox = parse_mailbox(raw)
    assert (mailbox.name, mailbox.address) == (name, address)


def test_mailbox_parts() -> None:
    mailbox = parse_mailbox("Jane <jane.doe@mail.example.com>")
    assert mailbox.local_part == "jane.doe"
    assert mailbox.domain == "mail.example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "user@example.com\r\nBcc: victim@example.org",
        "user@example.com\nX: y",
        "Jane\r <jane@example.com>",
        "Jane <jane@example.com>\n",
        "user@exam\0ple.com",
    ],
)
def test_cr_lf_nul_refused(raw: str) -> None:
    with pytest.raises(AddressError):
        parse_mailbox(raw)
    with pytest.raises(AddressError):
        validate_address(raw)


@pytest.mark.parametrize("raw", ["Jane <jane@example.com", "Jane jane@example.com>", "<a@b.com> <c@d.com>", "Jane <>"])
def test_malformed_angle_brackets(raw: str) -> None:
    with pytest.raises(AddressError):
        parse_mailbox(raw)
