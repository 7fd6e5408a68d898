"""Faults injected into a running function: wrappers around the send worker's dependencies (its
MessageStore and SmtpRelay) and the API's, swapped in for the duration of a `with` block.

The local stack's functions each have their own container (`platform.running().worker.container`); the
worker reads `container.deliver` for every job, so a wrapper set on it is used from the next job on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from local.platform import LocalPlatform
from petrel.ports import MessageKey
from petrel.services.deliver import DeliverDeps


def throttled(operation: str) -> ClientError:
    """What botocore raises once its own retries of a throttled DynamoDB call are used up."""
    response: Any = {
        "Error": {
            "Code": "ProvisionedThroughputExceededException",
            "Message": "The level of configured provisioned throughput for the table was exceeded.",
        },
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


class ThrottlingMessages:
    """Wraps the worker's MessageStore: for one tenant, every `every`-th `transition` (and every
    `lease_every`-th `lease`) raises DynamoDB's throttling error, until `transitions` (`leases`) have
    been raised. Each message is throttled at most once, so that no job needs more receives than
    the queue's maxReceiveCount allows. The throttled call writes nothing."""

    def __init__(
        self, inner: Any, tenant_id: str, *, every: int = 3, lease_every: int = 4, transitions: int = 4, leases: int = 3
    ) -> None:
        self._inner = inner
        self._tenant = tenant_id
        self._every, self._lease_every = every, lease_every
        self._budget = {"transition": transitions, "lease": leases}
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.faulted: set[str] = set()  # message ids
        self.raised: Counter[str] = Counter()  # operation -> count
        self.lost_outcomes: Counter[str] = Counter()  # message id -> throttled writes of a `relayed` outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _throttle(self, operation: str, tenant_id: str, message_id: str, every: int) -> bool:
        with self._lock:
            if tenant_id != self._tenant or message_id in self.faulted or self._budget[operation] <= 0:
                return False
            self._calls[operation] += 1
            if self._calls[operation] % every:
                return False
            self._budget[operation] -= 1
            self.faulted.add(message_id)
            self.raised[operation] += 1
            return True

    def lease(self, key: MessageKey, **kwargs: Any) -> Any:
        if self._throttle("lease", key.tenant_id, key.message_id, self._lease_every):
            raise throttled("UpdateItem")
        return self._inner.lease(key, **kwargs)

    def transition(self, key: MessageKey, **kwargs: Any) -> None:
        if self._throttle("transition", key.tenant_id, key.message_id, self._every):
            if str(kwargs["change"].status) == "relayed":
                self.lost_outcomes[key.message_id] += 1
            raise throttled("UpdateItem")
        self._inner.transition(key, **kwargs)


@dataclass(frozen=True)
class Relayed:
    recipient: str
    code: int
    started: float  # time.monotonic()
    ended: float


class RecordingRelay:
    """Wraps the worker's SmtpRelay and records each relay to one of `recipients` as a `Relayed`: its
    reply code and when it started and ended. The worker relays a batch's messages on several threads
    at once, so what a batch did is read from these times, not from the thread that relayed."""

    def __init__(self, inner: Any, recipients: Iterable[str]) -> None:
        self._inner = inner
        self._recipients = {r.lower() for r in recipients}
        self._lock = threading.Lock()
        self.relays: list[Relayed] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
        started = time.monotonic()
        reply = self._inner.relay(server, password, envelope, data, **kwargs)
        if envelope.recipient.lower() in self._recipients:
            with self._lock:
                self.relays.append(Relayed(envelope.recipient.lower(), reply.code, started, time.monotonic()))
        return reply


class WorkerCrash(BaseException):
    """Kills the whole invocation: BatchProcessor's per-record handling catches only Exception."""


class CrashingRelay:
    """Wraps the worker's SmtpRelay: the `after`-th relay (to one of `recipients`) of a batch (one
    thread's invocation) goes through, and then, before its reply is returned (so before any status is
    written), the invocation crashes. Only `crashes` times in all."""

    def __init__(self, inner: Any, recipients: Iterable[str], *, after: int = 2, crashes: int = 1) -> None:
        self._inner = inner
        self._recipients = {r.lower() for r in recipients}
        self._after = after
        self._thread = threading.local()
        self._lock = threading.Lock()
        self.crashes_left = crashes
        self.crashed_after: list[str] = []  # recipients whose relay preceded a crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
        reply = self._inner.relay(server, password, envelope, data, **kwargs)
        if envelope.recipient.lower() in self._recipients:
            self._thread.count = getattr(self._thread, "count", 0) + 1
            if self._thread.count == self._after and reply.is_positive:
                with self._lock:
                    crash = self.crashes_left > 0
                    if crash:
                        self.crashes_left -= 1
                        self.crashed_after.append(envelope.recipient.lower())
                if crash:
                    raise WorkerCrash(f"simulated crash after relaying to {envelope.recipient}")
        return reply

    def close(self) -> None:  # DeliverDeps.end_batch: this thread's batch is over
        self._thread.count = 0
        self._inner.close()


@contextlib.contextmanager
def worker_deps(platform: LocalPlatform, **replace_with: Callable[[Any], Any]) -> Iterator[DeliverDeps]:
    """Replace attributes of the running send worker's DeliverDeps for the duration (value: old -> new)."""
    deps = platform.running().worker.container.deliver
    saved = {name: getattr(deps, name) for name in replace_with}
    try:
        for name, make in replace_with.items():
            setattr(deps, name, make(saved[name]))
        yield deps
    finally:
        for name, value in saved.items():
            setattr(deps, name, value)


@contextlib.contextmanager
def api_sends(platform: LocalPlatform, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Replace `send_jobs` of the job queue the running API function submits to (value: old -> new) for
    the duration. The queue object stays (the API's services hold it); only this instance's method is
    shadowed, and the class's comes back afterwards."""
    queue = platform.running().api.container.queue
    queue.send_jobs = make(queue.send_jobs)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del queue.send_jobs
