"""Identifiers that sort by creation time (a ULID-like layout in Crockford base32)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


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
