"""Address syntax and `Name <address>` parsing.

The syntax of an address and the mapping of internationalized domains go through `email-validator`:
it implements IDNA 2008 with UTS #46 (Python's own `idna` codec is IDNA 2003, which maps `ß` to `ss`,
a final sigma to the medial one and drops joiners, so it names a different domain than the one the user typed, and
accepts symbols such as `☃` that IDNA 2008 forbids). It is used for syntax only: no DNS lookups.

What stays here is Petrel's own policy on top of it: no SMTPUTF8 local parts (Petrel's relay does not
negotiate SMTPUTF8), no quoted local parts or address literals, a domain of at least two labels
whose top-level label is not numeric, `.test` allowed (the local stack and the tests use it), the local
part kept exactly as written (email-validator lower-cases `Postmaster` and the like), and the display
name rules of `mail.text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from petrel.mail.text import header_text_problem

_NAMED_RE = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*$")
# The local part used to validate a bare domain through the address validator.
_PROBE_LOCAL = "postmaster"
_MAX_ADDRESS = 254


class AddressError(ValueError):
    """An address that cannot be used; the message says why in one sentence."""


@dataclass(frozen=True)
class Mailbox:
    address: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


def _ascii_domain(address: str, what: str) -> str:
    """email-validator's verdict on a plain `local@domain` with Petrel's options: the domain's ASCII form,
    or AddressError(`what: reason`).

    `globally_deliverable=False` because Petrel applies its own rule on labels (`_check_labels`);
    `test_environment=True` only lets the reserved `.test` names through. Imported here, not at module
    level: its import compiles regular expressions over all of Unicode (~50 ms CPU), which a function
    that never validates an address (the authorizer, the API's reads) should not pay at cold start."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validated = validate_email(
            address,
            allow_smtputf8=False,
            allow_empty_local=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            strict=True,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        text = str(exc).rstrip(".")
        raise AddressError(f"{what}: {text[:1].lower()}{text[1:]}") from exc
    return str(validated.ascii_domain)


def _check_labels(original: str, ascii_domain: str) -> None:
    """At least two labels, and a top-level label that is not all digits (that is an IP address)."""
    labels = ascii_domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise AddressError(f"{original!r} is not a valid domain name")


def _prepared_domain(domain: str) -> str:
    """Surrounding space and a final root dot dropped; ASCII lower-cased (UTS #46 maps the rest)."""
    domain = domain.strip().rstrip(".")
    return domain.lower() if domain.isascii() else domain


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form of a domain (IDNs become punycode, per IDNA 2008); raises AddressError."""
    prepared = _prepared_domain(domain)
    if not prepared or "@" in prepared:
        raise AddressError(f"{domain!r} is not a valid domain name")
    ascii_domain = _ascii_domain(f"{_PROBE_LOCAL}@{prepared}", f"{domain!r} is not a valid domain name")
    _check_labels(domain, ascii_domain)
    return ascii_domain


def validate_address(address: str) -> str:
    """The address with its domain normalized (local part kept as written); raises AddressError."""
    if any(c in address for c in "\r\n\0"):
        raise AddressError("an address must not contain control characters")
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{address!r} is not an email address (expected local-part@domain)")
    if not local.isascii():
        raise AddressError(f"{address!r}: non-ASCII local parts (SMTPUTF8) are not supported")
    ascii_domain = _ascii_domain(f"{local}@{_prepared_domain(domain)}", f"{address!r} is not a valid email address")
    _check_labels(domain, ascii_domain)
    full = f"{local}@{ascii_domain}"
    if len(full) > _MAX_ADDRESS:
        raise AddressError(f"{address!r} is longer than {_MAX_ADDRESS} characters")
    return full


@lru_cache(maxsize=1024)
def parse_mailbox(value: str) -> Mailbox:
    """Parse `address` or `Display Name <address>`; a display name is header text (`mail.text`).

    Kept for the last 1,024 values (a Mailbox is immutable; a refusal is not kept, it raises each time):
    the send worker parses each message's From to find its signing domain, and a sender's From is the
    same for many messages, while a full validation costs about 0.1 ms."""
    problem = header_text_problem(value, allow_tab=False)
    if problem is not None:
        raise AddressError(f"an address {problem}")
    match = _NAMED_RE.match(value)
    if match:
        name = match.group("name").strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
        return Mailbox(address=validate_address(match.group("addr")), name=name)
    if "<" in value or ">" in value:
        raise AddressError(f"{value!r} is not an email address")
    return Mailbox(address=validate_address(value))
