"""The system clock: timezone-aware UTC, the only `datetime.now` the services see."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
