"""When a message's way forward should have acted: the "due" time the sweeper's index is sorted by.

The message store writes it with every status change (petrel.resources.DUE_INDEX); this is the one rule.
"""

from __future__ import annotations

import math
from datetime import datetime

from petrel.models.records import FINAL_STATUSES, MessageStatus


def due_time(status: MessageStatus, *, at: datetime, next_attempt_at: datetime | None) -> int | None:
    """Epoch seconds by which a message in `status` should have moved on, or None for a final status.

    `at` is the moment of the write (a message's creation, for a new one); `next_attempt_at` is its
    `send_at` (scheduled) or its next retry (deferred), and wins when given. A `sending` message's due
    time is its lease's end, which the lease itself writes.
    """
    if status in FINAL_STATUSES:
        return None
    return math.ceil((next_attempt_at or at).timestamp())
