"""What moto's EventBridge Scheduler lacks: firing. Puts each due one-time schedule's input on its queue.

moto stores schedules but never runs them (NOTES.md), so the local stack fires them itself, through
the same API the code uses, as Scheduler would:

* Only `at(...)` expressions (in their `ScheduleExpressionTimezone`) with an SQS target are run;
  anything else is logged once and left alone.
* A schedule fires once, when due and ENABLED: its `Target.Input` goes to the queue named by
  `Target.Arn` (with `SqsParameters.MessageGroupId` if it has one).
* What cannot be put on the queue is retried with backoff within the schedule's `RetryPolicy`
  (errors that a retry cannot fix, such as a queue that does not exist, are not retried), then sent
  to `Target.DeadLetterConfig` with Scheduler's message attributes (`ERROR_CODE`, `ERROR_MESSAGE`, ...)
  and the input as its body; with no dead-letter queue it is dropped, as Scheduler drops it.
* `ActionAfterCompletion=DELETE`: the firer deletes the schedule *before* sending and sends only if
  that delete succeeded. The delete is the claim: a schedule cancelled (deleted by the code) at any
  moment before it fires is never sent, and two firers could not both send it. `NONE`: the schedule
  is read again just before it fires (a cancel is seen), and stays, fired.

Cost. ListSchedules returns no expression or input, so each schedule is read once (GetSchedule) and
cached; firing costs one DeleteSchedule and a tenth of a SendMessageBatch. Listing is cheap when
nothing is new: moto lists newest first, so each poll reads pages only until one holds a schedule
already known (the "head"). A full listing, which also forgets schedules deleted by someone else and
re-reads updated ones, runs every few seconds, less often when it is slow (thousands pending).
Reads of new schedules are spread over polls (`read_budget_seconds`), oldest first, so that firing
goes on while a burst of new schedules is read.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("petrel.local")

_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_PAGE = 100  # ListSchedules' largest page
_BATCH = 10  # SendMessageBatch's limit
# Scheduler's defaults when a schedule has no RetryPolicy.
_DEFAULT_RETRIES = 185
_DEFAULT_EVENT_AGE = 86_400
# Errors a retry cannot fix: Scheduler sends these to the DLQ at once.
_PERMANENT = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidParameterValue",
        "InvalidMessageContents",
        "MissingParameter",
        "InvalidArn",
        "UnsupportedTarget",
    }
)
_GONE = frozenset({"ResourceNotFoundException"})

# The message attributes of a Scheduler dead letter (its user guide, "Configuring a dead-letter queue").
ERROR_CODE = "ERROR_CODE"
ERROR_MESSAGE = "ERROR_MESSAGE"
EXECUTION_ID = "EXECUTION_ID"
EXHAUSTED_RETRY_CONDITION = "EXHAUSTED_RETRY_CONDITION"
IS_PAYLOAD_TRUNCATED = "IS_PAYLOAD_TRUNCATED"
RETRY_ATTEMPTS = "RETRY_ATTEMPTS"
SCHEDULED_TIME = "SCHEDULED_TIME"
SCHEDULE_ARN = "SCHEDULE_ARN"
TARGET_ARN = "TARGET_ARN"


def _code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def due_time(expression: str, timezone: str | None) -> datetime | None:
    """When `at(yyyy-mm-ddThh:mm:ss)` in `timezone` (default UTC) falls, in UTC; None for any other expression.

    Raises ValueError for an `at(...)` that is not a date or a timezone that does not exist.
    """
    match = _AT.match(expression.strip())
    if match is None:
        return None
    zone: tzinfo = UTC
    if timezone and timezone.upper() not in ("UTC", "ETC/UTC"):
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {timezone!r}") from exc
    return datetime.fromisoformat(match.group(1)).replace(tzinfo=zone).astimezone(UTC)


def _queue_name(arn: str) -> tuple[str, str] | None:
    """(queue name, account) of an SQS ARN `arn:<partition>:sqs:<region>:<account>:<name>`."""
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
        return None
    return parts[5], parts[4]


@dataclass
class _Schedule:
    """What the firer knows of one schedule: read once, from GetSchedule."""

    name: str
    arn: str
    modified: Any  # LastModificationDate: a change means someone updated it (re-read)
    due: datetime | None  # None: not something this firer runs (logged when read)
    state: str
    target_arn: str = ""
    input: str = ""
    dlq_arn: str | None = None
    delete_after: bool = True
    group_id: str | None = None
    max_retries: int = _DEFAULT_RETRIES
    max_age: int = _DEFAULT_EVENT_AGE
    fired: bool = False  # NONE schedules stay after firing; they do not fire twice
    claimed: bool = False  # deleted by the firer (DELETE schedules): it alone may still send it
    failures: int = 0
    retry_at: datetime | None = None

    def next_try(self) -> datetime | None:
        if self.due is None or self.fired or self.state != "ENABLED":
            return None
        return self.retry_at or self.due


@dataclass
class _Failure:
    code: str
    message: str
    permanent: bool


@dataclass
class FirerStats:
    fired: int = 0  # inputs put on their target queue
    failed: int = 0  # schedules given up on (dead-lettered, or dropped when they had no DLQ)
    dead_lettered: int = 0
    retried: int = 0  # failed sends that will be tried again
    cancelled: int = 0  # due, but deleted by someone else first
    read: int = 0  # GetSchedule calls for new or updated schedules
    sweeps: int = 0
    calls: Counter[str] = field(default_factory=Counter)  # API calls by operation


class ScheduleFirer(threading.Thread):
    """Polls one schedule group every `poll_seconds` and fires what is due (see the module docstring).

    `fire_due(now)` runs one poll synchronously at an explicit time (tests); the thread calls it with
    the wall clock. Counters are in `stats` (`fired`, `failed` are also properties).
    """

    def __init__(
        self,
        scheduler: Any,
        sqs: Any,
        group: str,
        *,
        poll_seconds: float = 0.25,
        min_sweep_seconds: float = 2.0,
        read_budget_seconds: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(name=f"firer-{group}", daemon=True)
        self._scheduler = scheduler
        self._sqs = sqs
        self.group = group
        self.poll_seconds = poll_seconds
        self.min_sweep_seconds = min_sweep_seconds
        self.read_budget_seconds = read_budget_seconds
        self._clock = clock
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._known: dict[str, _Schedule] = {}
        self._unread: dict[str, dict[str, Any]] = {}  # name -> ListSchedules summary
        self._urls: dict[str, str] = {}  # queue ARN -> URL
        self._next_sweep = 0.0  # time.monotonic() of the next full listing
        self.stats = FirerStats()

    # -- counters ------------------------------------------------------------------------------
    @property
    def fired(self) -> int:
        return self.stats.fired

    @property
    def failed(self) -> int:
        return self.stats.failed

    @property
    def pending(self) -> int:
        """Schedules known or listed that have not fired (or been given up on) yet."""
        return len(self._unread) + sum(1 for s in self._known.values() if s.next_try() is not None)

    # -- thread --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        log.debug("schedule firer for %s started (every %.2f s)", self.group, self.poll_seconds)
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self.fire_due(read_budget=self.read_budget_seconds)
            except Exception:
                if self._halt.is_set():
                    break  # stopping: what failed was the last poll, not worth a traceback
                log.exception("schedule firer %s failed; retrying", self.group)
                self._halt.wait(1.0)
            self._halt.wait(max(0.0, self.poll_seconds - (time.monotonic() - started)))
        log.debug("schedule firer for %s stopped: %d fired, %d failed", self.group, self.stats.fired, self.stats.failed)

    # -- one poll ------------------------------------------------------------------------------
    def fire_due(self, now: datetime | None = None, *, read_budget: float | None = None, sweep: bool = False) -> int:
        """List what is new, read it (for at most `read_budget` seconds; None: all), fire what is due
        at `now` (default: the clock). A full listing if `sweep` or if one is due. Returns how many
        inputs reached their target queue."""
        with self._lock:
            self._refresh(full=sweep or time.monotonic() >= self._next_sweep)
            self._read_new(read_budget)
            return self._fire(_utc(now) if now is not None else self._clock())

    # -- listing -------------------------------------------------------------------------------
    def _call(self, client: Any, operation: str, **kwargs: Any) -> Any:
        self.stats.calls[operation] += 1
        return getattr(client, operation)(**kwargs)

    def _pages(self) -> Iterable[list[dict[str, Any]]]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"GroupName": self.group, "MaxResults": _PAGE}
            if token:
                args["NextToken"] = token
            page = self._call(self._scheduler, "list_schedules", **args)
            yield page.get("Schedules", [])
            token = page.get("NextToken")
            if not token:
                return

    def _refresh(self, *, full: bool) -> None:
        started = time.monotonic()
        listed: dict[str, dict[str, Any]] = {}
        complete = False
        try:
            for page in self._pages():
                known_here = False
                for summary in page:
                    listed[summary["Name"]] = summary
                    known_here = known_here or summary["Name"] in self._known or summary["Name"] in self._unread
                if known_here and not full:
                    break  # newest first: the rest was seen by an earlier poll
            else:
                complete = True
        except ClientError as exc:
            # A page token whose schedule was deleted meanwhile (moto: "Resource not found!"): what was
            # listed so far is good; the next poll lists again.
            log.debug("listing %s interrupted (%s); using what was listed", self.group, _code(exc))
        for name, summary in listed.items():
            cached = self._known.get(name)
            if cached is None:
                self._unread.setdefault(name, summary)
            elif summary.get("LastModificationDate") != cached.modified and not cached.claimed:
                del self._known[name]  # updated: read it again
                self._unread[name] = summary
        if full and complete:
            for name in [n for n, s in self._known.items() if n not in listed and not s.claimed]:
                del self._known[name]  # deleted by someone else: cancelled
            for name in [n for n in self._unread if n not in listed]:
                del self._unread[name]
            self.stats.sweeps += 1
            took = time.monotonic() - started
            self._next_sweep = time.monotonic() + max(self.min_sweep_seconds, 10 * took)
        elif full:
            self._next_sweep = time.monotonic() + self.poll_seconds

    def _read_new(self, budget: float | None) -> None:
        if not self._unread:
            return
        deadline = None if budget is None else time.monotonic() + budget
        oldest_first = sorted(self._unread.items(), key=lambda item: str(item[1].get("CreationDate", "")))
        for name, summary in oldest_first:
            if deadline is not None and time.monotonic() >= deadline:
                break
            del self._unread[name]
            try:
                schedule = self._call(self._scheduler, "get_schedule", Name=name, GroupName=self.group)
            except ClientError as exc:
                if _code(exc) in _GONE:
                    continue  # cancelled before it was read
                self._unread[name] = summary
                raise
            self.stats.read += 1
            self._known[name] = self._parse(schedule, summary)

    def _parse(self, schedule: dict[str, Any], summary: dict[str, Any]) -> _Schedule:
        name = schedule["Name"]
        target = schedule.get("Target", {})
        expression = schedule.get("ScheduleExpression", "")
        entry = _Schedule(
            name=name,
            arn=schedule.get("Arn", summary.get("Arn", "")),
            modified=schedule.get("LastModificationDate", summary.get("LastModificationDate")),
            due=None,
            state=schedule.get("State", "ENABLED"),
        )
        try:
            due = due_time(expression, schedule.get("ScheduleExpressionTimezone"))
        except ValueError as exc:
            log.warning("schedule %s/%s: %s; it will not fire", self.group, name, exc)
            return entry
        if due is None:
            log.warning("schedule %s/%s: only at(...) is run locally, not %r", self.group, name, expression)
            return entry
        if _queue_name(target.get("Arn", "")) is None:
            log.warning("schedule %s/%s: only SQS targets are run locally, not %s", self.group, name, target.get("Arn"))
            return entry
        policy = target.get("RetryPolicy") or {}
        entry.due = due
        entry.target_arn = target["Arn"]
        entry.input = target.get("Input", "")
        entry.dlq_arn = (target.get("DeadLetterConfig") or {}).get("Arn")
        entry.delete_after = schedule.get("ActionAfterCompletion", "NONE") == "DELETE"
        entry.group_id = (target.get("SqsParameters") or {}).get("MessageGroupId")
        entry.max_retries = int(policy.get("MaximumRetryAttempts", _DEFAULT_RETRIES))
        entry.max_age = int(policy.get("MaximumEventAgeInSeconds", _DEFAULT_EVENT_AGE))
        return entry

    # -- firing --------------------------------------------------------------------------------
    def _fire(self, now: datetime) -> int:
        due = sorted(
            (s for s in self._known.values() if (at := s.next_try()) is not None and at <= now),
            key=lambda s: s.next_try() or now,
        )
        by_target: dict[str, list[_Schedule]] = {}
        for schedule in due:
            by_target.setdefault(schedule.target_arn, []).append(schedule)
        sent = 0
        for target, schedules in by_target.items():
            for start in range(0, len(schedules), _BATCH):
                if self._halt.is_set():
                    return sent
                chunk = [s for s in schedules[start : start + _BATCH] if self._claim(s)]
                if not chunk:
                    continue
                failures = self._send(target, chunk)
                for schedule in chunk:
                    failure = failures.get(schedule.name)
                    if failure is None:
                        sent += 1
                        self._done(schedule, fired=True)
                    else:
                        self._failed(schedule, failure, now)
        return sent

    def _claim(self, schedule: _Schedule) -> bool:
        """May this firer send it? DELETE: the delete succeeded (now or on an earlier try). NONE: it still exists."""
        if schedule.claimed:
            return True
        try:
            if schedule.delete_after:
                self._call(self._scheduler, "delete_schedule", Name=schedule.name, GroupName=self.group)
                schedule.claimed = True
            else:
                current = self._call(self._scheduler, "get_schedule", Name=schedule.name, GroupName=self.group)
                if current.get("State", "ENABLED") != "ENABLED":
                    schedule.state = current["State"]
                    return False
        except ClientError as exc:
            if _code(exc) in _GONE:
                log.debug("schedule %s/%s was cancelled before it fired", self.group, schedule.name)
                self.stats.cancelled += 1
                self._known.pop(schedule.name, None)
                return False
            log.warning("schedule %s/%s: %s; trying again at the next poll", self.group, schedule.name, _code(exc))
            return False
        return True

    def _queue_url(self, arn: str) -> str:
        url = self._urls.get(arn)
        if url is None:
            parsed = _queue_name(arn)
            if parsed is None:
                raise ValueError(f"not an SQS queue ARN: {arn}")
            name, account = parsed
            found = self._call(self._sqs, "get_queue_url", QueueName=name, QueueOwnerAWSAccountId=account)
            url = str(found["QueueUrl"])
            self._urls[arn] = url
        return url

    def _send(self, target: str, chunk: list[_Schedule]) -> dict[str, _Failure]:
        """Put each input on `target`; what failed, by schedule name."""
        entries = []
        for index, schedule in enumerate(chunk):
            entry: dict[str, Any] = {"Id": str(index), "MessageBody": schedule.input}
            if schedule.group_id:
                entry["MessageGroupId"] = schedule.group_id
            entries.append(entry)
        try:
            result = self._call(self._sqs, "send_message_batch", QueueUrl=self._queue_url(target), Entries=entries)
        except (ClientError, BotoCoreError, ValueError) as exc:
            code = _code(exc)
            if code in _PERMANENT:
                self._urls.pop(target, None)
            failure = _Failure(code, str(exc), permanent=code in _PERMANENT or isinstance(exc, ValueError))
            return {schedule.name: failure for schedule in chunk}
        failures: dict[str, _Failure] = {}
        for item in result.get("Failed", []):
            schedule = chunk[int(item["Id"])]
            failures[schedule.name] = _Failure(
                str(item.get("Code", "")), str(item.get("Message", "")), permanent=bool(item.get("SenderFault"))
            )
        return failures

    def _failed(self, schedule: _Schedule, failure: _Failure, now: datetime) -> None:
        assert schedule.due is not None
        condition: str | None = None
        if not failure.permanent:
            next_at = now + timedelta(seconds=min(30, 2**schedule.failures))
            if schedule.failures >= schedule.max_retries:
                condition = "MaximumRetryAttempts"
            elif next_at > schedule.due + timedelta(seconds=schedule.max_age):
                condition = "MaximumEventAgeInSeconds"
            else:
                schedule.failures += 1
                schedule.retry_at = next_at
                self.stats.retried += 1
                log.info(
                    "schedule %s/%s: %s; retry %d at %s",
                    self.group,
                    schedule.name,
                    failure.code,
                    schedule.failures,
                    next_at.isoformat(),
                )
                return
        self.stats.failed += 1
        log.warning(
            "schedule %s/%s could not be delivered to %s: %s %s",
            self.group,
            schedule.name,
            schedule.target_arn,
            failure.code,
            failure.message,
        )
        self._dead_letter(schedule, failure, condition)
        self._done(schedule, fired=False)

    def _dead_letter(self, schedule: _Schedule, failure: _Failure, condition: str | None) -> None:
        if not schedule.dlq_arn:
            log.warning("schedule %s/%s has no dead-letter queue: dropped", self.group, schedule.name)
            return
        assert schedule.due is not None
        attributes = {
            ERROR_CODE: failure.code,
            ERROR_MESSAGE: failure.message[:1024] or failure.code,
            EXECUTION_ID: str(uuid.uuid4()),
            IS_PAYLOAD_TRUNCATED: "false",
            RETRY_ATTEMPTS: str(schedule.failures),
            SCHEDULED_TIME: schedule.due.strftime("%Y-%m-%dT%H:%M:%SZ"),
            SCHEDULE_ARN: schedule.arn,
            TARGET_ARN: schedule.target_arn,
        }
        if condition:
            attributes[EXHAUSTED_RETRY_CONDITION] = condition
        try:
            self._call(
                self._sqs,
                "send_message",
                QueueUrl=self._queue_url(schedule.dlq_arn),
                MessageBody=schedule.input or "{}",
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            )
        except (ClientError, BotoCoreError, ValueError) as exc:
            log.error("schedule %s/%s: its dead-letter queue refused it (%s): lost", self.group, schedule.name, exc)
            return
        self.stats.dead_lettered += 1

    def _done(self, schedule: _Schedule, *, fired: bool) -> None:
        if fired:
            self.stats.fired += 1
            log.debug("schedule %s/%s fired into %s", self.group, schedule.name, schedule.target_arn)
        if schedule.delete_after:
            self._known.pop(schedule.name, None)
        else:
            schedule.fired = True
            schedule.retry_at = None
