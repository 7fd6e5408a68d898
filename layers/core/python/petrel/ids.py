"""Identifiers that sort by creation time (a ULID-like layout in Crockford base32).

An email's id and its messages' ids are related so that a message id leads to its email without an
index (the message store then reads the message by its key, no `by_message_id` lookup): an email id's
random tail ends in `EMAIL_TAIL` ("0000"), and each of its messages' ids is the email id's time and
random head with the recipient's position (1, 2, ...) in place of that tail. Both are ordinary ids
(`is_id` accepts them); ids made before this rule have random tails, and `email_id_of` of one of them
names an email that does not exist (the store falls back to its index for those).
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TAIL = 4  # characters of an id's random part that a message id uses for its position
EMAIL_TAIL = "0" * _TAIL
MAX_MESSAGES = 32**_TAIL - 1  # positions 1 .. MAX_MESSAGES


def encode(value: int, length: int) -> str:
    """`value` in `length` Crockford base32 characters, most significant first."""
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """`<prefix>_` + 10 chars of millisecond time + 16 random chars; lexical order = time order."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{prefix}_{encode(ms, 10)}{encode(secrets.randbits(80), 16)}"


def is_id(value: str, prefix: str) -> bool:
    head, sep, tail = value.partition("_")
    return head == prefix and sep == "_" and len(tail) == 26 and all(c in _ALPHABET for c in tail)


def new_email_id(now_ms: int | None = None) -> str:
    """An email id (`em_`): time, 60 random bits, then `EMAIL_TAIL`, so its messages' ids derive from it."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"em_{encode(ms, 10)}{encode(secrets.randbits(60), 12)}{EMAIL_TAIL}"


def message_id(email_id: str, position: int) -> str:
    """The id (`msg_`) of the `position`-th (from 1) message of the email `email_id` (a `new_email_id`)."""
    if not 1 <= position <= MAX_MESSAGES:
        raise ValueError(f"message position {position} out of range")
    return f"msg_{email_id.partition('_')[2][:-_TAIL]}{encode(position, _TAIL)}"


def email_id_of(message_id_: str) -> str | None:
    """The email id a message id derives from (see the module docstring); None when it is not a
    message id at all. For an id made before the rule, the email named does not exist."""
    if not is_id(message_id_, "msg"):
        return None
    return f"em_{message_id_.partition('_')[2][:-_TAIL]}{EMAIL_TAIL}"
