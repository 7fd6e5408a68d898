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


# IDNA 2008 with UTS #46 (non-transitional), where Python's IDNA 2003 codec names a different domain.
@pytest.mark.parametrize(
    ("domain", "idna2008", "idna2003"),
    [
        ("faß.de", "xn--fa-hia.de", "fass.de"),  # sharp s is a letter of its own, not "ss"
        ("βόλος.com", "xn--nxasmm1c.com", "xn--nxasmq6b.com"),  # final sigma kept, not mapped to the medial one
        ("ΒΌΛΟΣ.com", "xn--nxasmq6b.com", "xn--nxasmq6b.com"),  # capital sigma maps to the medial one in both
    ],
)
def test_idna_2008_mapping(domain: str, idna2008: str, idna2003: str) -> None:
    assert normalize_domain(domain) == idna2008
    assert validate_address(f"user@{domain}") == f"user@{idna2008}"
    assert domain.lower().encode("idna").decode("ascii") == idna2003  # what the old codec made of it


@pytest.mark.parametrize(
    "domain",
    [
        "bü\u200dcher.example",  # a joiner outside its context: IDNA 2003 silently dropped it
        "☃.net",  # symbols are not allowed in IDNA 2008 (IDNA 2003 encoded xn--n3h.net)
        "xn--abc.example",  # looks like punycode but does not decode to a valid label
        "ab--cd.example",  # "??--" labels are reserved for encodings (RFC 5891)
    ],
)
def test_names_idna_2008_refuses(domain: str) -> None:
    with pytest.raises(AddressError):
        normalize_domain(domain)
    with pytest.raises(AddressError):
        validate_address(f"user@{domain}")


@pytest.mark.parametrize("local", ["Postmaster", "ABUSE", "Jane.Doe"])
def test_local_part_kept_as_written(local: str) -> None:
    assert validate_address(f"{local}@Example.COM") == f"{local}@example.com"


def test_reserved_test_domain_allowed_other_special_use_refused() -> None:
    assert validate_address("inbox@petrel.test") == "inbox@petrel.test"
    for domain in ("host.localhost", "printer.local", "mail.invalid"):
        with pytest.raises(AddressError):
            validate_address(f"user@{domain}")


def test_reason_is_given() -> None:
    with pytest.raises(AddressError, match="two periods"):
        validate_address("us..er@example.com")


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
