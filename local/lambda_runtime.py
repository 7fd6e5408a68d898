"""What the local stack needs of Lambda: a context object and SQS-event-source behaviour."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("petrel.local")


@dataclass
class LocalContext:
    function_name: str
    timeout_seconds: int = 60
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"
    _deadline: float = field(default_factory=lambda: 0.0)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[dict[str, Any], Any], Any]
# What stops the pump itself (Ctrl-C, interpreter exit) rather than crashing one invocation.
_NOT_A_CRASH = (KeyboardInterrupt, SystemExit, GeneratorExit)


class QueuePump(threading.Thread):
    """Polls one queue like Lambda's SQS event source: batches, partial failures, visibility, DLQ.

    Records the handler reports failed (or all, if it raises or crashes) are left on the queue; SQS makes
    them visible again after the visibility timeout and moves them to the DLQ after maxReceiveCount. A
    crash is any BaseException other than KeyboardInterrupt, SystemExit and GeneratorExit (tests raise
    one to kill an invocation mid-batch: the handler's per-record error handling catches only Exception).
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        function_name: str,
        batch_size: int = 10,
        timeout_seconds: int = 60,
    ) -> None:
        super().__init__(name=f"pump-{queue_url.rsplit('/', 1)[-1]}", daemon=True)
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._handler = handler
        self._function = function_name
        self._batch = batch_size
        self._timeout = timeout_seconds  # each invocation's LocalContext counts down from it
        self._halt = threading.Event()
        self.invocations = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll_once(wait_seconds=1)
            except Exception:
                if self._halt.is_set():
                    return  # stopping: what failed was the last poll, not worth a traceback
                log.exception("queue pump %s failed; retrying", self.name)
                self._halt.wait(1.0)

    def poll_once(self, wait_seconds: int = 0) -> int:
        out = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch,
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = out.get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [self._record(m) for m in messages]}
        self.invocations += 1
        try:
            result = self._handler(event, LocalContext(self._function, timeout_seconds=self._timeout))
            failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        except Exception:
            log.exception("%s raised; the whole batch returns to the queue", self._function)
            return len(messages)
        except _NOT_A_CRASH:
            raise
        except BaseException:
            # Any other BaseException stands for the invocation dying (the process crashed, the runtime
            # was killed): Lambda acknowledges nothing, so the whole batch comes back after the
            # visibility timeout. The pump itself keeps running, as the event source would.
            log.exception("%s crashed; the whole batch returns to the queue", self._function)
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
            ]
            self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)
        return len(messages)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": hashlib.md5(message["Body"].encode(), usedforsecurity=False).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": "us-east-1",
        }
