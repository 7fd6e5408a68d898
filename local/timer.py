"""What EventBridge's `rate(...)` rules do deployed: invoke a handler every few seconds, here on a thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from local.lambda_runtime import Handler, LocalContext

log = logging.getLogger("petrel.local")


class Every(threading.Thread):
    """Invokes `handler` with a scheduled event every `interval_seconds` until stopped.

    A failed invocation is logged and the next one comes on time, as a rule with no retry does.
    """

    def __init__(
        self, handler: Handler, *, interval_seconds: float, function_name: str, timeout_seconds: int = 300
    ) -> None:
        super().__init__(name=f"every-{function_name}", daemon=True)
        self._handler = handler
        self._interval = interval_seconds
        self._function = function_name
        self._timeout = timeout_seconds  # the function's Lambda timeout: each invocation's context counts down
        self._halt = threading.Event()
        self.runs = 0
        self.last: Any = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            self.invoke()

    def invoke(self) -> Any:
        event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        try:
            self.last = self._handler(event, LocalContext(self._function, timeout_seconds=self._timeout))
        except Exception:
            if not self._halt.is_set():  # stopping: the endpoint it failed on may be going away
                log.exception("%s failed; the next run is in %.0f s", self._function, self._interval)
            self.last = None
        self.runs += 1
        return self.last
