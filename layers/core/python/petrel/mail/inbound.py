"""Reading one incoming message into what Petrel stores: headers, addresses, text, HTML, attachments.

Incoming mail is whatever the world sends, so `parse_inbound` is total: no input makes it raise. What
it cannot read it keeps as well as it can and says so in `parse_error` (the raw bytes are stored
anyway, so nothing is lost; the error tells the operator why a field is missing or odd). Invariants,
each held by a test in tests/unit/test_mail_inbound.py:

- every string in the result encodes as UTF-8 (no lone surrogates: they would fail the DynamoDB write);
- the result is bounded by the limits below whatever the input, except attachment payloads, which are
  the decoded bytes (at most the size of the raw message);
- a 25 MB attachment costs a few copies of itself, not the email package's usual seven or eight: the
  raw bytes are fed to the parser in chunks (no whole-message str and StringIO copy) and clean base64 is
  decoded straight from the parsed str;
- enclosed messages and report parts (message/rfc822, message/delivery-status,
  message/feedback-report, text/rfc822-headers) are attachments, so the raw report can be downloaded.

The body is chosen as `petrel.mail.reports` chooses it (the first text/plain and text/html outside
`Content-Disposition: attachment`, not inside enclosed messages), so the stored text and the text the
classifier reads agree; every other leaf part is an attachment.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from email import errors, policy
from email.header import decode_header
from email.headerregistry import AddressHeader, BaseHeader, ContentDispositionHeader, ContentTypeHeader
from email.message import EmailMessage, Message
from email.parser import BytesFeedParser, BytesParser
from typing import cast

from petrel.mail.reports import body_text, message_ids

# ------------------------------------------------------------------------------------------ limits

MAX_TEXT = 512 * 1024  # characters of text and of HTML kept (the raw message keeps the rest)
MAX_HEADER_VALUE = 4000  # characters of one decoded header value (a long References still fits)
MAX_HEADERS_CHARS = 64 * 1024  # characters of all headers kept together (names and values)
MAX_HEADER_NAME = 200
MAX_ADDRESSES = 100  # To + Cc addresses kept
MAX_REFERENCES = 100  # the newest References kept
MAX_ATTACHMENTS = 100  # attachments extracted; the rest stay in the raw message
MAX_DEPTH = 32  # multipart nesting followed
MAX_PARSE_ERROR = 1000  # characters of parse_error
MAX_SHORT = 255  # filenames, content types, content ids, addresses

_FEED_CHUNK = 64 * 1024
_RAW_HEADER_FACTOR = 4  # raw characters parsed per kept character (encoded words are longer than text)
_SALVAGE_BYTES = 2 * 1024 * 1024
_WANTED = frozenset({"from", "to", "cc", "subject", "message-id", "in-reply-to", "references"})
# Obsolete syntax is for readers to accept (RFC 5322 section 4); bytes and charsets are checked here.
_SKIPPED_HEADER_DEFECTS = (errors.ObsoleteHeaderDefect, errors.UndecodableBytesDefect, errors.CharsetError)
# The flattening policy for enclosed messages: source header lines kept as they came, CRLF line ends.
_FLATTEN = policy.default.clone(refold_source="none", linesep="\r\n")

# The headers policy.default parses by their own grammar (email.headerregistry); the rest are unstructured.
_STRUCTURED = frozenset(
    {
        *("from", "to", "cc", "bcc", "sender", "reply-to", "date", "orig-date", "message-id", "mime-version"),
        *("resent-from", "resent-to", "resent-cc", "resent-bcc", "resent-sender", "resent-date"),
        *("content-type", "content-disposition", "content-transfer-encoding"),
    }
)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LINESEP = re.compile(r"\r\n|\r|\n")
_BASE64_JUNK = re.compile(r"[^A-Za-z0-9+/=\s]")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_ASCII = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "646"})

# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class ParsedAttachment:
    """One attachment (or inline part, or enclosed message/report part) with its decoded bytes.

    `content_id` is without its angle brackets, as HTML refers to it (`cid:...`); `filename` is the
    last path component only, so a hostile `../../x` cannot steer where a download lands.
    """

    filename: str | None
    content_type: str
    disposition: str | None
    content_id: str | None
    size: int
    payload: bytes = field(repr=False)


@dataclass(frozen=True)
class ParsedInbound:
    """What one incoming message says, bounded and safe to store; `parse_error` lists every defect.

    `truncated` names the fields cut to their limits (`text`, `html`, `headers`): not defects, but the
    full content is only in the raw message.
    """

    headers: tuple[tuple[str, str], ...] = ()
    from_: str | None = None
    to: tuple[str, ...] = ()
    subject: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    text: str | None = None
    html: str | None = None
    attachments: tuple[ParsedAttachment, ...] = ()
    parse_error: str | None = None
    truncated: tuple[str, ...] = ()


class _Defects:
    """The defects found, in order, each once with up to three places it was found; one bounded line."""

    def __init__(self) -> None:
        self._seen: dict[str, list[str]] = {}

    def add(self, text: str, where: str | None = None) -> None:
        places = self._seen.setdefault(safe_text(text)[:200], [])
        if where is not None and where not in places:
            places.append(where)

    def has(self, text: str) -> bool:
        return text in self._seen

    def summary(self) -> str | None:
        if not self._seen:
            return None
        kept: list[str] = []
        used = 0
        for text, places in self._seen.items():
            item = f"{text} ({_places(places)})" if places else text
            if used + len(item) + 2 > MAX_PARSE_ERROR - 20:
                break
            kept.append(item)
            used += len(item) + 2
        rest = len(self._seen) - len(kept)
        return "; ".join(kept) + (f"; and {rest} more" if rest else "")


def _places(places: list[str]) -> str:
    shown = ", ".join(places[:3])
    return f"{shown} and {len(places) - 3} more" if len(places) > 3 else shown


# ------------------------------------------------------------------------------------------ public


def parse_bytes(raw: bytes) -> EmailMessage:
    """Raw bytes as an `EmailMessage` (policy.default), fed in chunks.

    This is `BytesParser(policy=policy.default).parsebytes(raw)` without its two whole-message copies
    (the str of all the bytes, then a StringIO of it at four bytes a character): for a 35 MB message
    that is the difference between ~100 MB and ~270 MB at the peak. Callers that also classify can pass
    the result to `petrel.mail.reports.classify` and `read_inbound` instead of parsing twice.
    """
    parser = BytesFeedParser(policy=policy.default)
    view = memoryview(raw)
    for start in range(0, len(view), _FEED_CHUNK):
        parser.feed(bytes(view[start : start + _FEED_CHUNK]))
    return cast(EmailMessage, parser.close())


def parse_inbound(raw: bytes, *, max_text: int = MAX_TEXT) -> ParsedInbound:
    """Read one raw incoming message. Pure, and never raises: defects go to `parse_error`."""
    try:
        message = parse_bytes(raw)
    except Exception as exc:  # the parser gave up (e.g. nesting deeper than the interpreter allows)
        return _salvage(raw, exc)
    defects = _Defects()
    if not raw.strip():
        defects.add("empty message")
    return _read_guarded(message, max_text, defects)


def read_inbound(message: Message, *, max_text: int = MAX_TEXT) -> ParsedInbound:
    """Read a message already parsed by `parse_bytes` (to classify and store one parse). Never raises."""
    return _read_guarded(message, max_text, _Defects())


def safe_text(value: str) -> str:
    """`value` with what cannot be stored as UTF-8 text replaced: lone surrogates and NUL become U+FFFD."""
    if _SURROGATE.search(value) is not None:
        value = _SURROGATE.sub("\ufffd", value)
    return value.replace("\0", "\ufffd") if "\0" in value else value


# ------------------------------------------------------------------------------------------ headers


@dataclass
class _Headers:
    """The headers kept for storage, and the few Petrel reads, decoded whatever the budget left."""

    kept: list[tuple[str, str]] = field(default_factory=list)
    parsed: dict[str, list[tuple[str, BaseHeader | None]]] = field(default_factory=dict)
    cut: bool = False


def _read_headers(message: Message, defects: _Defects) -> _Headers:
    headers = _Headers()
    used = 0
    dropped = 0
    items = message.raw_items()
    for raw_name, raw_value in items:
        name = safe_text(raw_name)[:MAX_HEADER_NAME]
        key = name.lower()
        over = used >= MAX_HEADERS_CHARS
        if over and key not in _WANTED:
            dropped += 1
            continue
        value, header = _decode_header(name, raw_value if isinstance(raw_value, str) else str(raw_value), defects)
        if key in _WANTED:
            headers.parsed.setdefault(key, []).append((value, header))
        if over:
            dropped += 1
            continue
        if len(value) > MAX_HEADER_VALUE:
            value, headers.cut = value[:MAX_HEADER_VALUE], True
        headers.kept.append((name, value))
        used += len(name) + len(value)
    if dropped:
        headers.cut = True
        defects.add(f"headers over {MAX_HEADERS_CHARS // 1024} KiB: {dropped} of {len(message)} not kept")
    return headers


def _decode_header(name: str, raw_value: str, defects: _Defects) -> tuple[str, BaseHeader | None]:
    """A header's decoded value (RFC 2047 words decoded; 8-bit bytes read as UTF-8 where they are).

    Only the first `_RAW_HEADER_FACTOR * MAX_HEADER_VALUE` raw characters are parsed, so one 1 MB
    header costs no more than a normal one.
    """
    unfolded = "".join(_LINESEP.split(raw_value[: _RAW_HEADER_FACTOR * MAX_HEADER_VALUE]))
    where = f"{name} header"
    cut = len(raw_value) > _RAW_HEADER_FACTOR * MAX_HEADER_VALUE
    if cut:
        defects.add(f"{where} over {_RAW_HEADER_FACTOR * MAX_HEADER_VALUE} characters; cut")
    _check_bytes(unfolded, where, defects)
    if name.lower() not in _STRUCTURED and "=?" not in unfolded:
        # Unstructured text without encoded words reads as itself: the header parser (most of the
        # cost of a small message) would return the same string.
        return _recover_bytes(unfolded, where, defects).strip(), None
    _check_encoded_words(unfolded, where, defects)
    header: BaseHeader | None
    try:
        header = policy.default.header_factory(name, unfolded)
        value = str(header)
    except Exception:
        header, value = None, unfolded
        defects.add(f"unreadable {name} header")
    if header is not None and not cut:  # a value cut short has defects of the cut's making
        for defect in header.defects:
            if not isinstance(defect, _SKIPPED_HEADER_DEFECTS):
                defects.add(f"{name} header: {_describe(defect)}")
    return _recover_bytes(value, where, defects).strip(), header


def _check_bytes(raw_value: str, where: str, defects: _Defects) -> None:
    """Note 8-bit header bytes that are not UTF-8 (the header parser replaces them without a word)."""
    if _SURROGATE.search(raw_value) is None:
        return
    try:
        raw_value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        defects.add(f"non-UTF-8 bytes in {where}")


def _check_encoded_words(value: str, where: str, defects: _Defects) -> None:
    """Note RFC 2047 words in an unknown charset or with bytes their charset cannot decode.

    The header parser replaces them silently for most headers (it reports them for address headers
    only), so they are checked here, the same way for every header.
    """
    if "=?" not in value:
        return
    try:
        words = decode_header(value)
    except Exception:
        defects.add(f"malformed encoded word in {where}")
        return
    for data, charset in words:
        if charset is None or not isinstance(data, bytes) or charset == "unknown-8bit":
            continue
        label = safe_text(charset)[:40]
        try:
            data.decode(charset)
        except UnicodeError:
            defects.add(f"bytes not valid {label} in an encoded word in {where}")
        except (LookupError, ValueError, TypeError):
            defects.add(f"unknown charset {label!r} in {where}")


def _recover_bytes(value: str, where: str, defects: _Defects) -> str:
    """Surrogate-escaped bytes (how the parser carries 8-bit header bytes) read back as UTF-8.

    RFC 6532 allows UTF-8 in headers, so valid UTF-8 is no defect; anything else is replaced and noted.
    """
    if _SURROGATE.search(value) is None:
        return safe_text(value)
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte (an odd encoded word)
        defects.add(f"invalid characters in {where}")
        return safe_text(value)
    try:
        return safe_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        defects.add(f"non-UTF-8 bytes in {where}")
        return safe_text(data.decode("utf-8", "replace"))


def _first_value(headers: _Headers, key: str) -> str | None:
    found = headers.parsed.get(key)
    return found[0][0] if found else None


def _addresses(entries: list[tuple[str, BaseHeader | None]]) -> list[str]:
    """The addr-specs of address headers (the parser's reading, else any address-shaped text)."""
    found: list[str] = []
    for value, header in entries:
        specs: list[str] = []
        if isinstance(header, AddressHeader):
            try:
                specs = [address.addr_spec for address in header.addresses]
            except Exception:
                specs = []
        specs = [safe_text(spec).strip() for spec in specs if spec and "@" in spec]
        if not specs:
            specs = _ADDRESS.findall(value)
        found.extend(spec[:MAX_SHORT] for spec in specs)
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------------------------------------- body


@dataclass
class _Body:
    plain: str | None = None
    html: str | None = None
    fallback: str | None = None  # the raw text of a multipart whose boundary was never found
    attachments: list[ParsedAttachment] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class _Part:
    """What one part's MIME headers say, each header parsed once (parsing is most of the cost)."""

    kind: str
    charset: str | None = None
    disposition: str | None = None
    filename: str | None = None
    content_id: str | None = None

    @property
    def maintype(self) -> str:
        return self.kind.partition("/")[0]


def _part(part: Message) -> _Part:
    """The part's content type (RFC 2045 defaults), charset, disposition, filename and Content-ID.

    Parameters come from the header objects of policy.default, which decode RFC 2231 and RFC 2047.
    """
    content_type = _header_object(part, "Content-Type")
    disposition = _header_object(part, "Content-Disposition")
    kind = part.get_default_type()
    params: dict[str, str] = {}
    if isinstance(content_type, ContentTypeHeader):
        kind, params = content_type.content_type, dict(content_type.params)
    disposition_params: dict[str, str] = {}
    disposition_value: str | None = None
    if isinstance(disposition, ContentDispositionHeader):
        disposition_value = (disposition.content_disposition or "").lower() or None
        disposition_params = dict(disposition.params)
    charset = params.get("charset")
    return _Part(
        kind=safe_text(kind)[:MAX_SHORT],
        charset=safe_text(charset).strip().lower() if charset else None,
        disposition=safe_text(disposition_value)[:32] if disposition_value else None,
        filename=_filename(disposition_params.get("filename") or params.get("name")),
        content_id=_content_id(_header_object(part, "Content-ID")),
    )


def _header_object(part: Message, name: str) -> object:
    """The part's first `name` header as policy.default parses it, or None (also when it cannot)."""
    try:
        return part.get(name)
    except Exception:
        return None


def _filename(name: str | None) -> str | None:
    """The decoded filename's last path component, controls removed (a `../../x` steers nothing)."""
    if not name:
        return None
    cleaned = "".join(char for char in safe_text(name) if char >= " " and char != "\x7f")
    cleaned = re.split(r"[\\/]", cleaned)[-1].strip()
    return cleaned[:MAX_SHORT] or None


def _content_id(value: object) -> str | None:
    if value is None:
        return None
    cleaned = safe_text(str(value)).strip().strip("<>").strip()
    return cleaned[:MAX_SHORT] or None


def _walk(message: Message, defects: _Defects) -> Iterator[tuple[Message, str, _Part]]:
    """Each part in document order with where it is ("message", "part 1.2"), nesting bounded.

    Multiparts are entered; enclosed messages are not (they are the original's, kept as attachments).
    Iterative, so a hostile nesting depth costs a defect, not a RecursionError.
    """
    stack: list[tuple[Message, str, int]] = [(message, "", 0)]
    while stack:
        part, path, depth = stack.pop()
        try:
            info = _part(part)
        except Exception as exc:  # a header nobody foresaw: the part is kept as opaque bytes
            info = _Part(kind="application/octet-stream")
            defects.add(f"unreadable MIME headers ({type(exc).__name__})", f"part {path}" if path else "message")
        yield part, (f"part {path}" if path else "message"), info
        payload = part.get_payload() if part.is_multipart() else None
        if not isinstance(payload, list) or info.maintype == "message":
            continue
        if depth >= MAX_DEPTH:
            defects.add(f"parts nested deeper than {MAX_DEPTH} levels not read")
            continue
        children = [(sub, f"{path}.{i}" if path else str(i), depth + 1) for i, sub in enumerate(payload, 1)]
        stack.extend(child for child in reversed(children) if isinstance(child[0], Message))


def _read_body(message: Message, defects: _Defects) -> _Body:
    body = _Body()
    for part, where, info in _walk(message, defects):
        try:
            _take_part(part, where, info, body, defects)
        except Exception as exc:
            defects.add(f"unreadable {where} ({type(exc).__name__})")
        for defect in part.defects:  # after reading: decoding adds the base64 defects to the part
            defects.add(_describe(defect), where)
    if body.skipped:
        defects.add(f"{body.skipped} parts over the limit of {MAX_ATTACHMENTS} attachments not extracted")
    return body


def _take_part(part: Message, where: str, info: _Part, body: _Body, defects: _Defects) -> None:
    """Put one part where it belongs: the text, the HTML, or the attachments."""
    if part.is_multipart() and info.maintype != "message":
        return  # a container: `_walk` yields its parts
    if info.maintype == "multipart":  # no parts: the boundary was missing or never found
        if body.fallback is None:
            body.fallback = _decode_text(part, where, info, defects)
        return
    inline = info.disposition != "attachment"
    if inline and info.kind == "text/plain" and body.plain is None:
        body.plain = _decode_text(part, where, info, defects)
        return
    if inline and info.kind == "text/html" and body.html is None:
        body.html = _decode_text(part, where, info, defects)
        return
    if len(body.attachments) >= MAX_ATTACHMENTS:
        body.skipped += 1
        return
    payload = _enclosed_bytes(part, where, defects) if part.is_multipart() else _payload_bytes(part, where, defects)
    body.attachments.append(
        ParsedAttachment(
            filename=info.filename,
            content_type=info.kind,
            disposition=info.disposition,
            content_id=info.content_id,
            size=len(payload),
            payload=payload,
        )
    )


def _decode_text(part: Message, where: str, info: _Part, defects: _Defects) -> str:
    """A text part decoded by its charset; unknown charsets and bad bytes fall back to UTF-8 with
    replacement, and say so. Undeclared or US-ASCII parts holding UTF-8 are read as UTF-8 quietly."""
    data = _payload_bytes(part, where, defects)
    charset = info.charset or "us-ascii"
    label = charset[:40]
    if charset in _ASCII:
        try:
            return _body_text(data.decode("utf-8"), where, defects)
        except UnicodeDecodeError:
            defects.add(f"8-bit bytes in a {label} {where}; decoded as UTF-8 with replacement")
            return _body_text(data.decode("utf-8", "replace"), where, defects)
    try:
        return _body_text(data.decode(charset), where, defects)
    except (LookupError, ValueError, TypeError) as exc:
        if isinstance(exc, UnicodeError):
            defects.add(f"bytes not valid {label} in {where}; undecodable bytes replaced")
            with suppress(Exception):  # a codec that ignores `errors` (idna) falls through to UTF-8
                return _body_text(data.decode(charset, "replace"), where, defects)
        else:
            defects.add(f"unknown charset {label!r} in {where}; decoded as UTF-8 with replacement")
        return _body_text(data.decode("utf-8", "replace"), where, defects)


def _body_text(text: str, where: str, defects: _Defects) -> str:
    if "\0" in text:
        defects.add(f"NUL characters in {where}")
    return safe_text(text)


def _payload_bytes(part: Message, where: str, defects: _Defects) -> bytes:
    """A leaf part's decoded bytes. Clean base64 is decoded straight from the parsed str (one copy);
    anything else goes through the email package, which records bad base64 as the part's defects."""
    # Bad padding or length, or odd bytes, fall through: the email package decodes what it can and records it.
    with suppress(Exception):
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            payload = part.get_payload()
            if isinstance(payload, str) and _BASE64_JUNK.search(payload) is None:
                return binascii.a2b_base64(payload)
    try:
        decoded = part.get_payload(decode=True)
    except Exception as exc:
        defects.add(f"could not decode {where} ({type(exc).__name__})")
        return b""
    return decoded if isinstance(decoded, bytes) else b""


def _enclosed_bytes(part: Message, where: str, defects: _Defects) -> bytes:
    """A message/* part's content (an enclosed message, or the blocks of a report) as bytes."""
    chunks: list[bytes] = []
    for sub in part.get_payload():
        if not isinstance(sub, Message):
            continue
        try:
            chunks.append(sub.as_bytes(policy=_FLATTEN))
        except Exception:
            defects.add(f"could not copy the content of {where}")
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------- defects

_DEFECT_TEXT: dict[type[errors.MessageDefect], str] = {
    errors.NoBoundaryInMultipartDefect: "multipart without a boundary",
    errors.StartBoundaryNotFoundDefect: "multipart boundary not found",
    errors.CloseBoundaryNotFoundDefect: "closing multipart boundary missing",
    errors.FirstHeaderLineIsContinuationDefect: "first header line is a continuation",
    errors.MisplacedEnvelopeHeaderDefect: "misplaced envelope 'From ' line",
    errors.MissingHeaderBodySeparatorDefect: "a line in the headers is not a header (missing blank line?)",
    errors.MultipartInvariantViolationDefect: "multipart content type but no parts",
    errors.InvalidMultipartContentTransferEncodingDefect: "invalid transfer encoding for a multipart",
    errors.UndecodableBytesDefect: "undecodable bytes",
    errors.InvalidBase64PaddingDefect: "bad base64 padding",
    errors.InvalidBase64CharactersDefect: "bad base64 characters",
    errors.InvalidBase64LengthDefect: "bad base64 length",
}


def _describe(defect: errors.MessageDefect) -> str:
    """A short phrase for one of the email package's defects."""
    known = _DEFECT_TEXT.get(type(defect))
    if known is not None:
        return known
    phrase = _CAMEL.sub(" ", type(defect).__name__.removesuffix("Defect")).lower()
    detail = " ".join(str(defect).split())[:80]
    return f"{phrase}: {detail}" if detail else phrase


# ------------------------------------------------------------------------------------------- whole


def _read_guarded(message: Message, max_text: int, defects: _Defects) -> ParsedInbound:
    try:
        return _read(message, max(0, max_text), defects)
    except Exception as exc:  # a bug or an input nobody foresaw: the raw is kept, say what happened
        defects.add(f"unreadable message ({type(exc).__name__})")
        return ParsedInbound(parse_error=defects.summary())


def _read(message: Message, max_text: int, defects: _Defects) -> ParsedInbound:
    headers = _read_headers(message, defects)
    if len(message) == 0:
        if not defects.has("empty message"):
            defects.add("no header section")
    elif "from" not in headers.parsed:
        defects.add("missing From header")
    body = _read_body(message, defects)
    text = body.plain
    if text is None and body.html is not None:
        text = _html_text(message, defects)
    if text is None:
        text = body.fallback
    truncated = ["headers"] if headers.cut else []
    text, html = _cap(text, "text", max_text, truncated), _cap(body.html, "html", max_text, truncated)
    from_ = _addresses(headers.parsed.get("from", [])[:1])
    if "from" in headers.parsed and not from_:
        defects.add("From header without an address")
    recipients = _addresses([*headers.parsed.get("to", []), *headers.parsed.get("cc", [])])
    references = message_ids(" ".join(value for value, _ in headers.parsed.get("references", [])))
    subject = _first_value(headers, "subject")
    return ParsedInbound(
        headers=tuple(headers.kept),
        from_=from_[0] if from_ else None,
        to=tuple(recipients[:MAX_ADDRESSES]),
        subject=subject[:MAX_HEADER_VALUE] if subject is not None else None,
        message_id=_message_id(_first_value(headers, "message-id")),
        in_reply_to=_first(message_ids(_first_value(headers, "in-reply-to"))),
        references=references[-MAX_REFERENCES:],
        text=text,
        html=html,
        attachments=tuple(body.attachments),
        parse_error=defects.summary(),
        truncated=tuple(truncated),
    )


def _html_text(message: Message, defects: _Defects) -> str | None:
    """The HTML body as text, read by the classifier's own rule (`reports.body_text`)."""
    try:
        return safe_text(body_text(message))
    except Exception as exc:
        defects.add(f"could not derive text from the HTML ({type(exc).__name__})")
        return None


def _cap(value: str | None, name: str, limit: int, truncated: list[str]) -> str | None:
    if value is None or len(value) <= limit:
        return value
    truncated.append(name)
    return value[:limit]


def _message_id(value: str | None) -> str | None:
    """The `<id>` of a Message-ID; a bare id without brackets is kept as written (it still identifies)."""
    if value is None:
        return None
    ids = message_ids(value)
    if ids:
        return ids[0][: MAX_SHORT * 4]
    bare = "".join(value.split())
    return bare[: MAX_SHORT * 4] or None


def _first(values: tuple[str, ...]) -> str | None:
    return values[0][: MAX_SHORT * 4] if values else None


def _salvage(raw: bytes, exc: Exception) -> ParsedInbound:
    """When the full parse fails, the headers alone (from the start of the message) are still read."""
    defects = _Defects()
    defects.add(f"the MIME structure could not be parsed ({type(exc).__name__})")
    try:
        headers_only = BytesParser(policy=policy.default).parsebytes(raw[:_SALVAGE_BYTES], headersonly=True)
        read = _read(_without_body(headers_only), MAX_TEXT, defects)
    except Exception:
        return ParsedInbound(parse_error=defects.summary())
    return ParsedInbound(
        headers=read.headers,
        from_=read.from_,
        to=read.to,
        subject=read.subject,
        message_id=read.message_id,
        in_reply_to=read.in_reply_to,
        references=read.references,
        parse_error=read.parse_error,
        truncated=read.truncated,
    )


def _without_body(message: Message) -> Message:
    message.set_payload("")
    return message
