"""The fakes' paging cursors: opaque, and taken only by the listing that handed them out (the ports'
rule: InvalidCursor for a cursor of another listing, or for anything that is no cursor at all)."""

from __future__ import annotations

import base64
import binascii
import json

from petrel.ports import InvalidCursor


def encode_cursor(listing: str, after: str) -> str:
    raw = json.dumps({"listing": listing, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, listing: str) -> str:
    """The position `encode_cursor` stored for `listing`; InvalidCursor for anything else."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidCursor("cursor is not valid") from exc
    if not isinstance(raw, dict) or raw.get("listing") != listing or not isinstance(raw.get("after"), str):
        raise InvalidCursor("cursor does not belong to this listing")
    return str(raw["after"])
