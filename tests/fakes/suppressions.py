"""In-memory SuppressionStore: addresses kept lower-cased, listed in address order."""

from __future__ import annotations

import base64
import binascii

from petrel.models.records import Suppression
from petrel.ports import AlreadyExists, InvalidCursor, RecordNotFound, SuppressionPage


class FakeSuppressionStore:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Suppression] = {}
        self.reads = 0

    def add(self, suppression: Suppression) -> None:
        key = (suppression.tenant_id, suppression.email.lower())
        if key in self.items:
            raise AlreadyExists(f"{key[1]} is on the suppression list already")
        self.items[key] = suppression.model_copy(update={"email": key[1]})

    def get(self, tenant_id: str, email: str) -> Suppression | None:
        self.reads += 1
        return self.items.get((tenant_id, email.lower()))

    def remove(self, tenant_id: str, email: str) -> None:
        if self.items.pop((tenant_id, email.lower()), None) is None:
            raise RecordNotFound(f"{email.lower()} is not on the suppression list")

    def list(self, tenant_id: str, *, limit: int, cursor: str | None) -> SuppressionPage:
        emails = sorted(e for (t, e) in self.items if t == tenant_id)
        if cursor:
            try:
                after = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            except (ValueError, binascii.Error) as exc:
                raise InvalidCursor("cursor is not valid") from exc
            if "@" not in after:
                raise InvalidCursor("cursor is not valid")
            emails = [e for e in emails if e > after]
        page = emails[:limit]
        more = len(emails) > limit
        next_cursor = base64.urlsafe_b64encode(page[-1].encode()).decode().rstrip("=") if more else None
        return SuppressionPage([self.items[(tenant_id, e)] for e in page], next_cursor)
