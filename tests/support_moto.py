"""What tests and benches that race threads against moto share."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class AtomicRequests:
    """A boto3 client whose requests are applied one at a time, as DynamoDB applies each to an item
    atomically (moto does not: its conditional writes race between threads), each counted by
    operation in `calls`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                return method(*args, **kwargs)

        return one_at_a_time
