"""SMTP replies as values, and their classification into delivery outcomes (DESIGN §2).

Enhanced status codes (RFC 3463) decide first; the basic code decides when there is none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum


class ReplyCode(IntEnum):
    """The SMTP reply codes Petrel reasons about by name (RFC 5321 §4.2.3)."""

    SERVICE_READY = 220
    CLOSING = 221
    AUTH_SUCCESSFUL = 235
    OK = 250
    START_MAIL_INPUT = 354
    SERVICE_NOT_AVAILABLE = 421
    MAILBOX_UNAVAILABLE_TEMP = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    TEMP_AUTH_FAILURE = 454
    SYNTAX_ERROR = 500
    AUTH_REQUIRED = 530
    AUTH_FAILED = 535
    MAILBOX_UNAVAILABLE = 550
    USER_NOT_LOCAL = 551
    EXCEEDED_STORAGE = 552
    MAILBOX_NAME_NOT_ALLOWED = 553
    TRANSACTION_FAILED = 554


class Stage(StrEnum):
    """Where in the SMTP conversation a reply (or a failure) came."""

    CONNECT = "connect"
    TLS = "tls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_RETRY_RE = re.compile(
    r"(?:try again|retry|wait)\D{0,20}?(\d+)\s*(s|sec|secs|seconds?|m|mins?|minutes?|h|hours?)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}

# The text of the network reply for a transaction cut short by its overall deadline.
DEADLINE_EXCEEDED = "the SMTP transaction exceeded its deadline"


@dataclass(frozen=True)
class SmtpReply:
    """A reply as the server sent it. `code == 0` stands for no reply at all (a network failure)."""

    code: int
    text: str
    stage: Stage
    enhanced: str | None = None

    @classmethod
    def parse(cls, code: int, message: bytes | str, stage: Stage) -> SmtpReply:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        text = " ".join(text.split())
        match = _ENHANCED_RE.match(text)
        enhanced = match.group(0) if match and match.group(1) == str(code)[0] else None
        return cls(code=code, text=text[:500], stage=stage, enhanced=enhanced)

    @classmethod
    def network(cls, stage: Stage, detail: str) -> SmtpReply:
        return cls(code=0, text=detail[:500], stage=stage)

    @classmethod
    def deadline_exceeded(cls, stage: Stage) -> SmtpReply:
        """No reply before the transaction's deadline (at `stage`). Past DATA the server may have the
        message: like any network failure it is deferred and sent again (at-least-once)."""
        return cls.network(stage, DEADLINE_EXCEEDED)

    @property
    def exceeded_deadline(self) -> bool:
        return self.code == 0 and self.text == DEADLINE_EXCEEDED

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    def retry_after_seconds(self) -> int | None:
        """A delay the server asked for ("try again in 300 seconds"), if any."""
        match = _RETRY_RE.search(self.text)
        if not match:
            return None
        return int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code else f"({self.stage}) {self.text}"


class BounceClass(StrEnum):
    HARD = "hard"  # the mailbox or domain does not exist
    BLOCK = "block"  # policy, reputation or authentication: the server's standing, not the address
    MESSAGE = "message"  # this message was refused (size, content)


@dataclass(frozen=True)
class Relayed:
    reply: SmtpReply


@dataclass(frozen=True)
class SoftFail:
    """Try again later: a 4xx, a network or TLS failure, or a server-side setup problem."""

    reply: SmtpReply
    reason: str
    retry_after: int | None = None


@dataclass(frozen=True)
class HardFail:
    """A permanent refusal of this recipient or message."""

    reply: SmtpReply
    bounce_class: BounceClass
    suppress: bool


@dataclass(frozen=True)
class PermanentFail:
    """A permanent error that is not the recipient's (the sender is refused): `failed`."""

    reply: SmtpReply
    reason: str


DeliveryOutcome = Relayed | SoftFail | HardFail | PermanentFail

# Enhanced codes that mean the address itself is bad: bounce hard and suppress it.
MAILBOX_CODES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.10", "5.5.0"})


def classify(reply: SmtpReply) -> DeliveryOutcome:
    """The outcome of one recipient's transaction, from the reply that ended it."""
    if reply.exceeded_deadline:
        return SoftFail(reply, reason="deadline-exceeded")
    if reply.code == 0:
        return SoftFail(reply, reason=f"{reply.stage}-failure")
    if reply.is_positive:
        return Relayed(reply)
    if reply.stage in (Stage.CONNECT, Stage.TLS, Stage.AUTH):
        # The tenant's own server refused us: its setup, not the recipient. Keep the message.
        return SoftFail(reply, reason=f"{reply.stage}-refused", retry_after=reply.retry_after_seconds())
    if 400 <= reply.code < 500:
        return SoftFail(reply, reason="temporary-failure", retry_after=reply.retry_after_seconds())
    enhanced = reply.enhanced
    if reply.stage is Stage.MAIL:
        # Refused at MAIL FROM: the message itself (too big: 5.3.4 against SIZE=, content 5.6.x)
        # bounces like any message refusal; anything else is about the sender, not the recipient.
        if enhanced is not None and enhanced.startswith(("5.3.", "5.6.")):
            return HardFail(reply, BounceClass.MESSAGE, suppress=False)
        return PermanentFail(reply, reason="sender-refused")
    if enhanced is not None:
        if enhanced in MAILBOX_CODES:
            return HardFail(reply, BounceClass.HARD, suppress=True)
        if enhanced.startswith("5.7."):
            return HardFail(reply, BounceClass.BLOCK, suppress=False)
        if enhanced.startswith(("5.3.", "5.6.")):
            return HardFail(reply, BounceClass.MESSAGE, suppress=False)
        return HardFail(reply, BounceClass.HARD, suppress=False)
    if reply.code == ReplyCode.EXCEEDED_STORAGE and reply.stage is Stage.DATA:
        return HardFail(reply, BounceClass.MESSAGE, suppress=False)
    return HardFail(reply, BounceClass.HARD, suppress=False)
