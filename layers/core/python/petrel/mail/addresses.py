"""Address syntax (RFC 5321/5322 dot-atom subset) and `Name <address>` parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from petrel.mail.text import header_text_problem

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NAMED_RE = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]*)>\s*$")


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


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII form of a domain (IDNs become punycode); raises AddressError."""
    domain = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise AddressError(f"domain {domain!r} is not a valid internationalized domain name") from exc
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        raise AddressError(f"{domain!r} is not a valid domain name")
    if labels[-1].isdigit():
        raise AddressError(f"{domain!r} is not a valid domain name")
    return ascii_domain


def validate_address(address: str) -> str:
    """The address with its domain normalized; raises AddressError with the reason."""
    if any(c in address for c in "\r\n\0"):
        raise AddressError("an address must not contain control characters")
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"{address!r} is not an email address (expected local-part@domain)")
    if not local.isascii():
        raise AddressError(f"{address!r}: non-ASCII local parts (SMTPUTF8) are not supported")
    if len(local) > 64 or not _LOCAL_RE.match(local):
        raise AddressError(f"{address!r} has an invalid local part")
    full = f"{local}@{normalize_domain(domain)}"
    if len(full) > 254:
        raise AddressError(f"{address!r} is longer than 254 characters")
    return full


def parse_mailbox(value: str) -> Mailbox:
    """Parse `address` or `Display Name <address>`; a display name is header text (`mail.text`)."""
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
