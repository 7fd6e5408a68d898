"""What the local stack needs of Lambda: a context object and SQS-event-source behaviour."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
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
# The most messages one ReceiveMessage returns (an event source gathers a larger batch from several).
SQS_RECEIVE_MAX = 10


def message_group(message: dict[str, Any]) -> str:
    """The tenant SQS fair queues see in a message: its MessageGroupId, or (without one) the message
    itself, as each message without a group counts as its own tenant."""
    group = message.get("Attributes", {}).get("MessageGroupId")
    return str(group) if group else f"~{message['MessageId']}"


def fair_order(messages: Sequence[dict[str, Any]], in_flight: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The messages interleaved round-robin by group, each group's in the order received.

    Groups with fewer messages in flight (handed to the function, not yet done) come first in each round,
    then the order each group was first seen: as SQS fair queues serve quiet tenants before noisy ones, and
    among noisy ones the one with fewest messages in flight first.
    """
    by_group: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_group.setdefault(message_group(message), []).append(message)
    busy = in_flight or {}
    order = sorted(by_group, key=lambda group: busy.get(group, 0))  # stable: first seen breaks ties
    out: list[dict[str, Any]] = []
    for depth in range(max((len(queue) for queue in by_group.values()), default=0)):
        out.extend(by_group[group][depth] for group in order if depth < len(by_group[group]))
    return out


# A held message handed out within this long of its receive (or renewal) keeps the visibility it has.
_FRESH_SECONDS = 0.5


@dataclass
class _Held:
    message: dict[str, Any]
    renewed_at: float  # monotonic time of its receive or its last visibility renewal


class FairBuffer:
    """What SQS fair queues do on the server, for the pumps of one queue: they see the whole backlog.

    moto keeps a standard queue's MessageGroupId but delivers in arrival order, so a flood of one tenant
    would hold every receive until it drains. The buffer receives ahead (up to `max_held` messages, kept
    invisible: each is received once, so no receive count grows without a delivery) and hands each pump a
    batch in `fair_order`. A held message's visibility is renewed before a third of it has passed, so it
    is never delivered twice while held; a batch handed out has its visibility timeout afresh, as Lambda's.
    """

    def __init__(self, sqs: Any, queue_url: str, *, max_held: int = 1000, refresh_seconds: float = 0.25) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._max_held = max_held
        # How often a buffer that can fill a batch looks for newly arrived jobs: each receive scans the
        # whole queue on moto, held messages included, so a receive per invocation would slow a flood.
        self._refresh = refresh_seconds
        self._refilled_at = float("-inf")
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}  # by MessageId, in receive order
        self._in_flight: dict[str, int] = {}
        self._visibility: int | None = None

    @property
    def held(self) -> int:
        return len(self._held)

    def take(self, count: int, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """Up to `count` messages for one invocation, fairly chosen from all the buffer could see."""
        with self._lock:
            if len(self._held) < count or time.monotonic() - self._refilled_at >= self._refresh:
                self._refill(wait_seconds)
                self._refilled_at = time.monotonic()
            now = time.monotonic()
            self._renew(now)
            batch = fair_order([h.message for h in self._held.values()], self._in_flight)[:count]
            # Lambda's batch is invisible for the whole visibility timeout from its receive: one held a
            # while gets it afresh. One whose handle went stale is SQS's again, not this batch's.
            waited = [m for m in batch if now - self._held[m["MessageId"]].renewed_at > _FRESH_SECONDS]
            lost = self._change_visibility(waited, self._queue_visibility())
            for message in batch:
                del self._held[message["MessageId"]]
            batch = [m for m in batch if m["MessageId"] not in lost]
            for message in batch:
                group = message_group(message)
                self._in_flight[group] = self._in_flight.get(group, 0) + 1
            return batch

    def done(self, messages: Iterable[dict[str, Any]]) -> None:
        """The invocation that took `messages` has ended (whatever became of them)."""
        with self._lock:
            for message in messages:
                group = message_group(message)
                left = self._in_flight.get(group, 0) - 1
                if left > 0:
                    self._in_flight[group] = left
                else:
                    self._in_flight.pop(group, None)

    def release(self) -> None:
        """Make every held message visible again at once (the pumps are stopping)."""
        with self._lock:
            held = [h.message for h in self._held.values()]
            self._held.clear()
            self._change_visibility(held, 0)

    def _queue_visibility(self) -> int:
        if self._visibility is None:
            out = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["VisibilityTimeout"])
            self._visibility = int(out.get("Attributes", {}).get("VisibilityTimeout", 30))
        return self._visibility

    def _refill(self, wait_seconds: int) -> None:
        """Receive until the queue shows nothing more, the buffer is full, or a quarter of the visibility
        timeout has passed (what was received first must still be invisible when `_renew` looks at it);
        long-poll only when empty."""
        visibility = self._queue_visibility()
        until = time.monotonic() + visibility / 4
        while len(self._held) < self._max_held and time.monotonic() < until:
            out = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=min(SQS_RECEIVE_MAX, self._max_held - len(self._held)),
                WaitTimeSeconds=wait_seconds if not self._held else 0,
                VisibilityTimeout=visibility,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = out.get("Messages", [])
            now = time.monotonic()
            for message in messages:
                # A message seen again (its visibility ran out elsewhere) is held under its newest handle.
                self._held.pop(message["MessageId"], None)
                self._held[message["MessageId"]] = _Held(message, now)
            if not messages:
                return

    def _renew(self, now: float) -> None:
        visibility = self._queue_visibility()
        stale = [h for h in self._held.values() if now - h.renewed_at > visibility / 3]
        lost = self._change_visibility([h.message for h in stale], visibility)
        for held in stale:
            if held.message["MessageId"] in lost:
                del self._held[held.message["MessageId"]]  # its handle is no longer good: SQS has it back
            else:
                held.renewed_at = now

    def _change_visibility(self, messages: Sequence[dict[str, Any]], seconds: int) -> set[str]:
        """ChangeMessageVisibility for each; the MessageIds of those it failed for."""
        lost: set[str] = set()
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
            ]
            out = self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            lost.update(chunk[int(failure["Id"])]["MessageId"] for failure in out.get("Failed", []))
        return lost


class QueuePump(threading.Thread):
    """Polls one queue like Lambda's SQS event source: batches, partial failures, visibility, DLQ.

    Records the handler reports failed (or all, if it raises or crashes) are left on the queue; SQS makes
    them visible again after the visibility timeout and moves them to the DLQ after maxReceiveCount. A
    crash is any BaseException other than KeyboardInterrupt, SystemExit and GeneratorExit (tests raise
    one to kill an invocation mid-batch: the handler's per-record error handling catches only Exception).

    Batches are ordered as SQS fair queues deliver them: round-robin by MessageGroupId (fair_order).
    With a `buffer` shared by the pumps of a queue, a batch is chosen from everything the buffer has
    received ahead, so a flooding tenant's backlog does not hold back the others' jobs; without one,
    from one receive.
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
        buffer: FairBuffer | None = None,
    ) -> None:
        super().__init__(name=f"pump-{queue_url.rsplit('/', 1)[-1]}", daemon=True)
        self._sqs = sqs
        self._url = queue_url
        self._arn = queue_arn
        self._handler = handler
        self._function = function_name
        self._batch = batch_size
        self._timeout = timeout_seconds  # each invocation's LocalContext counts down from it
        self._buffer = buffer
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
        """One invocation's worth: receive a batch, run the handler, delete what it did not fail."""
        if self._buffer is None:
            messages = fair_order(self._receive(wait_seconds))
            return self._invoke(messages)
        messages = self._buffer.take(self._batch, wait_seconds)
        try:
            return self._invoke(messages)
        finally:
            self._buffer.done(messages)

    def _receive(self, wait_seconds: int) -> list[dict[str, Any]]:
        """A batch as the event source gathers one: receives of at most 10 (SQS's limit) until the batch
        is full or the queue has no more to give (a receive that returns fewer than it asked for: with
        a batching window, Lambda would wait the window out instead)."""
        batch: list[dict[str, Any]] = []
        while len(batch) < self._batch:
            asked = min(SQS_RECEIVE_MAX, self._batch - len(batch))
            out = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=asked,
                WaitTimeSeconds=wait_seconds if not batch else 0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = list(out.get("Messages", []))
            batch += received
            if len(received) < asked:
                break
        return batch

    def _invoke(self, messages: list[dict[str, Any]]) -> int:
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
