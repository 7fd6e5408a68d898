"""When a message's way forward should have acted: the "due" time the sweeper's index is sorted by.

The message store writes it when a message waits (petrel.resources.DUE_INDEX); these are the rules.
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


def creation_due_time(status: MessageStatus, *, created_at: datetime, next_attempt_at: datetime | None) -> int | None:
    """The due time a new message is stored with, or None for none: a message queued at its creation
    waits for nothing but its job, and the sweeper finds it through its tenant's creation shard
    (petrel.resources.creation_shard) instead, which costs no index write; a scheduled one is due at
    its `send_at` (`next_attempt_at`)."""
    if status is MessageStatus.QUEUED:
        return None
    return due_time(status, at=created_at, next_attempt_at=next_attempt_at)
