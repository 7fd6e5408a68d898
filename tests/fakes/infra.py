"""In-memory BlobStore, JobQueue, RetryScheduler and SecretStore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from petrel.models.jobs import SendJob
from petrel.models.records import POOLS, Pool


class BlobNotFound(KeyError):
    pass


class FakeBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.gets = 0

    def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = bytes(data)

    def get(self, key: str) -> bytes:
        self.gets += 1
        if key not in self.blobs:
            raise BlobNotFound(key)
        return self.blobs[key]


class FakeJobQueue:
    """Jobs land in `sent[pool]`. Refuse some (`refuse_when(job)` is true) or all (`refuse_all`)."""

    def __init__(self) -> None:
        self.sent: dict[Pool, list[SendJob]] = {pool: [] for pool in POOLS}
        self.delays: dict[str, int] = {}  # message id -> the delay it was last sent with
        self.refuse_when: Callable[[SendJob], bool] = lambda job: False
        self.refuse_all = False

    def send_jobs(self, pool: Pool, jobs: Sequence[SendJob], delay_seconds: int = 0) -> list[SendJob]:
        failed = [job for job in jobs if self.refuse_all or self.refuse_when(job)]
        for job in jobs:
            if job not in failed:
                self.sent[pool].append(job)
                self.delays[job.message_id] = delay_seconds
        return failed

    def drain(self, pool: Pool) -> list[SendJob]:
        jobs, self.sent[pool] = self.sent[pool], []
        return jobs


@dataclass(frozen=True)
class FakeSchedule:
    name: str
    at: datetime
    job: SendJob


class SchedulerDown(RuntimeError):
    pass


class FakeRetryScheduler:
    """Schedules by name; `fire_due(now, queue)` plays EventBridge Scheduler (fires, then deletes).

    `down = True` makes create and delete fail like an unreachable Scheduler.
    """

    def __init__(self) -> None:
        self.schedules: dict[str, FakeSchedule] = {}
        self.down = False
        self.created = 0

    def schedule(self, name: str, at: datetime, job: SendJob) -> bool:
        if self.down:
            raise SchedulerDown("scheduler unreachable")
        if name in self.schedules:
            return False
        self.schedules[name] = FakeSchedule(name, at, job)
        self.created += 1
        return True

    def cancel(self, name: str) -> bool:
        if self.down:
            raise SchedulerDown("scheduler unreachable")
        return self.schedules.pop(name, None) is not None

    def fire_due(self, now: datetime, queue: FakeJobQueue) -> list[SendJob]:
        due = sorted((s for s in self.schedules.values() if s.at <= now), key=lambda s: s.at)
        for item in due:
            del self.schedules[item.name]
            queue.send_jobs(item.job.pool, [item.job])
        return [item.job for item in due]


class SecretNotFound(KeyError):
    pass


class SecretStoreDown(RuntimeError):
    pass


class FakeSecretStore:
    """`down = True` makes every read fail, like an unreachable Secrets Manager."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.down = False
        self.reads = 0

    def get_secret(self, name: str) -> str:
        self.reads += 1
        if self.down:
            raise SecretStoreDown("secrets manager unreachable")
        if name not in self.secrets:
            raise SecretNotFound(name)
        return self.secrets[name]

    def put_secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def delete_secret(self, name: str) -> None:
        self.secrets.pop(name, None)
