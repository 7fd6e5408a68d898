"""DKIM signing (RFC 6376, relaxed/relaxed; RFC 8463 for Ed25519), pure and fast.

Why not `dkim.sign`: dkimpy does the RSA private-key step in pure Python and re-parses the PEM on every
call (about 12 ms per RSA-2048 signature). Here the key is loaded once (`DkimKey`) and the private-key
operation is `cryptography`'s. The output is byte-identical to dkimpy's for the same key, message, header
list and timestamp: same tag order (v a c d i q s t h bh b), same `i=@domain`, same `" : "`-joined h=,
and the same folding at column 72 (the DKIM-Signature name counted on the first line) - receivers do
not care about folding, but byte identity makes dkimpy a complete oracle for the tests.

Invariant: the returned header, prepended to `message`, verifies with any RFC 6376 verifier against the
key's public record (`public_record`), and any change to the body or to a signed header breaks it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# RFC 6376 5.4.1's headers that matter, plus List-Unsubscribe-Post (RFC 8058 requires it signed for
# one-click unsubscribe). Only those present in the message are listed in h=.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
# Listed once more than they occur, so that adding another instance in transit breaks the signature.
OVERSIGNED: tuple[str, ...] = ("from",)
# RFC 6376 5.4: signing these breaks mail in ordinary transit (or, for Bcc, leaks it).
NEVER_SIGNED = frozenset({"return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature"})
MIN_RSA_BITS = 1024

_HEADER_NAME = "DKIM-Signature"
_FIRST_LINE = 72 - len(_HEADER_NAME)  # dkimpy counts the field name on the first line
_NEXT_LINES = 71
_LINE = re.compile(rb"\r?\n")
# The first empty line: at the very start, or right after a line's end (the header's end, in `parse`).
_HEADER_END = re.compile(rb"(?:\A|\n)\r?\n")
_NAME = re.compile(rb"([\x21-\x7e]+?):")
_CRLF = b"\r\n"


class DkimError(ValueError):
    """The key or the message cannot be signed (the send path defers such a message: never unsigned)."""


@dataclass(frozen=True)
class DkimKey:
    """A private key loaded once, with the algorithm its type implies."""

    key: PrivateKey
    algorithm: Algorithm

    @classmethod
    def load(cls, key: DkimKey | PrivateKey | bytes | str) -> DkimKey:
        """Accept a `DkimKey`, a loaded `cryptography` key, or an unencrypted PEM (PKCS#1 or PKCS#8)."""
        if isinstance(key, DkimKey):
            return key
        if isinstance(key, str | bytes):
            pem = key.encode() if isinstance(key, str) else key
            try:
                loaded = serialization.load_pem_private_key(pem, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as error:
                raise DkimError(f"unreadable DKIM private key: {error}") from error
        else:
            loaded = key
        if isinstance(loaded, rsa.RSAPrivateKey):
            if loaded.key_size < MIN_RSA_BITS:
                raise DkimError(f"RSA key of {loaded.key_size} bits; receivers require at least {MIN_RSA_BITS}")
            return cls(loaded, "rsa-sha256")
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            return cls(loaded, "ed25519-sha256")
        raise DkimError(f"unsupported DKIM key type {type(loaded).__name__}")

    def public_record(self) -> str:
        """The TXT record value for `<selector>._domainkey.<domain>` (RFC 6376 3.6.1, RFC 8463 4.2).

        An RSA-2048 value is longer than one 255-octet TXT string: the publisher splits it."""
        public = self.key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"

    def private_key_step(self, data: bytes) -> bytes:
        """The private-key step over the hashed header data (RFC 8463 signs the SHA-256 of it)."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.key.sign(hashlib.sha256(data).digest())


def sign(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key: DkimKey | PrivateKey | bytes | str,
    headers: Iterable[str] = SIGNED_HEADERS,
    oversign: Iterable[str] = OVERSIGNED,
    algorithm: Algorithm | None = None,
    timestamp: int | None = None,
    identity: str | None = None,
) -> bytes:
    """The `DKIM-Signature: ...\\r\\n` field (folded, CRLF-terminated) to prepend to `message`.

    `headers` names the fields worth signing; h= lists each occurrence present, in message order, then
    each `oversign` field once more. `algorithm` defaults to the key's own; a mismatch is an error.
    """
    key = DkimKey.load(private_key)
    if algorithm is not None and algorithm != key.algorithm:
        raise DkimError(f"{algorithm} requested with a key for {key.algorithm}")
    fields, body = parse(message)
    names = signed_header_list(fields, headers, oversign)
    return sign_fields(
        fields,
        body,
        names,
        selector=selector,
        domain=domain,
        key=key,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        identity=identity,
    )


def sign_fields(
    fields: Sequence[tuple[bytes, bytes]],
    body: bytes,
    names: Sequence[str],
    *,
    selector: str,
    domain: str,
    key: DkimKey,
    timestamp: int,
    identity: str | None = None,
) -> bytes:
    """Sign already parsed fields with an explicit h= list (lower-case names, repeats allowed)."""
    lowered = [name.lower() for name in names]
    if "from" not in lowered:
        raise DkimError("the From field must be signed (RFC 6376 5.4)")
    forbidden = sorted(NEVER_SIGNED.intersection(lowered))
    if forbidden:
        raise DkimError(f"refusing to sign {', '.join(forbidden)}")
    d = _ascii(domain, "domain")
    i = _ascii(identity, "identity") if identity is not None else b"@" + d
    if not i.lower().endswith(d.lower()):
        raise DkimError("identity must end with the signing domain")
    body_hash = base64.b64encode(hashlib.sha256(canonical_body(body)).digest())
    tags: list[tuple[bytes, bytes]] = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode()),
        (b"c", b"relaxed/relaxed"),
        (b"d", d),
        (b"i", i),
        (b"q", b"dns/txt"),
        (b"s", _ascii(selector, "selector")),
        (b"t", str(timestamp).encode()),
        (b"h", " : ".join(lowered).encode()),
        (b"bh", body_hash),
    ]
    prefix = b"; ".join(name + b"=" + value for name, value in tags) + b"; b="
    # What is signed is the field as first written, with a 60-character placeholder in b= that forces
    # b= onto its own line, then emptied (RFC 6376 3.7): the placeholder shapes the folding only.
    unsigned = _without_b_value(fold(prefix + b"0" * 60, _FIRST_LINE, len(prefix)))
    data = b"".join(_select(fields, lowered))
    data += b"dkim-signature:" + _relaxed_value(b" " + unsigned).rstrip()
    signature = base64.b64encode(key.private_key_step(data))
    return _HEADER_NAME.encode() + b": " + fold(prefix + signature + _CRLF, _FIRST_LINE, len(prefix))


def parse(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Split a message into (name, raw value with its CRLF) fields and a CRLF-normalised body.

    LF and CRLF line ends are both accepted (as dkimpy does); an mbox `From ` line is skipped.
    """
    end = _HEADER_END.search(message)
    if end is None:  # no empty line: all header
        head, body = message, b""
    else:
        head, body = message[: end.start()], message[end.end() :]
        if head.endswith(b"\r"):  # the last field's CRLF
            head = head[:-1]
    fields: list[tuple[bytes, bytes]] = []
    for line in _LINE.split(head):
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                raise DkimError("message starts with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + line + _CRLF)
            continue
        match = _NAME.match(line)
        if match is not None:
            fields.append((match.group(1), line[match.end() :] + _CRLF))
        elif not line.startswith(b"From "):
            raise DkimError(f"not a header field: {line[:40]!r}")
    # Every line end of the body as CRLF (what splitting it into lines and joining them with CRLF gives).
    return fields, body.replace(_CRLF, b"\n").replace(b"\n", _CRLF)


def signed_header_list(
    fields: Sequence[tuple[bytes, bytes]], headers: Iterable[str], oversign: Iterable[str] = OVERSIGNED
) -> list[str]:
    """h=: every occurrence of a field named in `headers`, in message order, then each `oversign` name
    once more (so it is listed once more than it occurs, and a copy added in transit breaks the
    signature); an `oversign` name absent from the message is listed once, signing its absence."""
    wanted = {name.lower() for name in headers}
    extra = {name.lower() for name in oversign}
    forbidden = sorted(NEVER_SIGNED.intersection(wanted | extra))
    if forbidden:
        raise DkimError(f"refusing to sign {', '.join(forbidden)}")
    present = [name.decode("ascii").lower() for name, _ in fields]
    if "from" not in present:
        raise DkimError("the message has no From field")
    listed = [name for name in present if name in wanted or name in extra]
    again = list(dict.fromkeys(name for name in listed if name in extra))  # once each, first-seen order
    return listed + again + sorted(extra.difference(again))


def canonical_body(body: bytes) -> bytes:
    """Relaxed body canonicalization (RFC 6376 3.4.4): no trailing WSP, runs of WSP as one space, no
    empty lines at the end, one final CRLF, and an empty body as nothing at all."""
    body = _one_space(body)
    if b" \r\n" in body:  # a line's trailing WSP, now one space
        body = body.replace(b" \r\n", _CRLF)
    end = len(body)
    while end >= 2 and body[end - 2 : end] == _CRLF:
        end -= 2
    return body[:end] + _CRLF if end else b""


def fold(value: bytes, first: int, cut_from: int = 0) -> bytes:
    """Fold as dkimpy does: at the last space within the line limit (the space becomes CRLF + space),
    the first line `first` characters, the others 71; a run holding no space is cut at the limit with
    CRLF + space inserted.

    One deliberate difference: a run is cut only at or after `cut_from` (where the b= value starts,
    the one place base64 allows folding whitespace). dkimpy also cuts a d=, i= or s= value longer than
    a line, which yields a domain with a space in it - a signature no receiver can verify. Below that
    length (every real domain and selector fits) the output is the same bytes as dkimpy's.
    """
    if len(value) <= first or (value.endswith(_CRLF) and len(value) <= first + 2):
        return value
    out: list[bytes] = []
    limit, start = first, 0
    while len(value) - start > limit:
        end = start + limit
        space = value.rfind(b" ", start, end)
        if space != -1:
            out.append(value[start:space])
            start = space + 1
        elif end >= cut_from:  # inside the b= value
            out.append(value[start:end])
            start = end
        else:
            space = value.find(b" ", end)
            if space == -1:
                break
            out.append(value[start:space])
            start = space + 1
        limit = _NEXT_LINES
    out.append(value[start:])
    return (_CRLF + b" ").join(out)


def _select(fields: Sequence[tuple[bytes, bytes]], names: Sequence[str]) -> list[bytes]:
    """Canonical `name:value\\r\\n` of each h= entry: repeats take the next instance up from the bottom
    (RFC 6376 5.4.2); a name with no instance left contributes nothing."""
    lowered = [name.decode("ascii").lower() for name, _ in fields]
    below: dict[str, int] = {}
    out: list[bytes] = []
    for name in names:
        index = below.get(name, len(fields))
        while index > 0:
            index -= 1
            if lowered[index] == name:
                out.append(name.encode() + b":" + _relaxed_value(fields[index][1]))
                break
        below[name] = index
    return out


def _relaxed_value(value: bytes) -> bytes:
    """Relaxed header canonicalization (RFC 6376 3.4.2) of a value: unfolded, WSP runs as one space,
    stripped, CRLF-terminated."""
    return _one_space(value.replace(_CRLF, b"").replace(b"\n", b"")).strip() + _CRLF


def _one_space(data: bytes) -> bytes:
    """Each run of WSP (spaces and tabs) as one space: tabs become spaces, then each double space one
    until none is left (a pass halves every run). Each step is a scan in C; a regular expression for the
    runs stops at every space of the text, which made it most of the non-RSA cost of a signature."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def _without_b_value(field: bytes) -> bytes:
    """The field with the b= value (and the folding inside it) removed; b= is always last here."""
    cut = field.rindex(b"b=") + 2
    return field[:cut]


def _ascii(value: str, what: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as error:
        raise DkimError(f"the {what} must be ASCII (use the IDNA A-label)") from error
