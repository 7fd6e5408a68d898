"""The retry ladder (DESIGN §1): when the next attempt of a deferred message is due, and when to give up.

This module is the one place that knows the ladder. Its delays are a setting (`PETREL_RETRY_DELAYS`),
read by `petrel.settings`; the services only ask `RetryLadder.next_attempt`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# Seconds to wait after the 1st, 2nd, ... failed attempt; the last one repeats ("then every 8 h").
DEFAULT_DELAYS: tuple[int, ...] = (60, 300, 900, 3600, 7200, 14400, 28800)
DEFAULT_JITTER = 0.10


def parse_delays(text: str) -> tuple[int, ...]:
    """`"60,300,900"` → (60, 300, 900); each a positive whole number of seconds."""
    try:
        delays = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"retry delays must be whole seconds separated by commas, got {text!r}") from exc
    if not delays or any(d <= 0 for d in delays):
        raise ValueError(f"retry delays must be positive seconds, got {text!r}")
    return delays


def schedule_name(message_id: str, attempt: int) -> str:
    """A schedule per (message, attempt it follows): a duplicate create collides instead of doubling.

    Attempt 0 is the release of a message sent with `send_at`.
    """
    return f"{message_id}-{attempt}"


@dataclass(frozen=True)
class RetryLadder:
    delays: tuple[int, ...] = DEFAULT_DELAYS
    jitter: float = DEFAULT_JITTER

    def delay(self, failures: int, retry_after: int | None, rng: random.Random) -> float:
        """Seconds until the next attempt after `failures` failed attempts (1-based).

        The ladder's step with ±jitter; a longer delay the server asked for wins.
        """
        step = self.delays[min(max(failures, 1), len(self.delays)) - 1]
        jittered = step * (1 + rng.uniform(-self.jitter, self.jitter))
        return max(jittered, float(retry_after or 0))

    def next_attempt(
        self, *, failures: int, retry_after: int | None, now: datetime, expires: datetime, rng: random.Random
    ) -> datetime | None:
        """When to try again, or None when that would be past the message's maximum age."""
        due = now + timedelta(seconds=self.delay(failures, retry_after, rng))
        return due if due < expires else None
