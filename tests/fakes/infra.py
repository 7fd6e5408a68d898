"""In-memory BlobStore, JobQueue, RetryScheduler and SecretStore."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlencode

from petrel.models.jobs import Job, ReleaseJob, SendJob
from petrel.models.records import POOLS, Pool
from petrel.ports import AlreadyExists, Clock, RecordNotFound


class FakeBlobStore:
    """Objects by key. `presign_put` returns a `fake-s3://` URL; `upload(url, data)` plays the client
    that PUTs to it (refused once expired, or with another length or type, as S3 refuses them);
    `presign_get` and `download(url)` the same for reading."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.blobs: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.gets = 0
        self._clock = clock
        self._presigned: dict[str, tuple[str, str, int, datetime | None]] = {}  # url -> key, type, size, until
        self._links: dict[str, tuple[str, datetime | None]] = {}  # presign_get: url -> key, until

    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None:
        self.blobs[key] = bytes(data)
        self.content_types[key] = content_type

    def get(self, key: str) -> bytes:
        self.gets += 1
        if key not in self.blobs:
            raise RecordNotFound(f"no object {key}")
        return self.blobs[key]

    def size(self, key: str) -> int | None:
        return len(self.blobs[key]) if key in self.blobs else None

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> str:
        url = f"fake-s3://{key}?token={len(self._presigned)}"
        until = self._clock.now() + timedelta(seconds=expires_in) if self._clock else None
        self._presigned[url] = (key, content_type, size, until)
        return url

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A `fake-s3://` URL naming the key, the expiry and the download name; `download(url)` follows it."""
        query = urlencode({"expires_in": expires_in, **({"filename": filename} if filename is not None else {})})
        url = f"fake-s3://{key}?{query}"
        until = self._clock.now() + timedelta(seconds=expires_in) if self._clock else None
        self._links[url] = (key, until)
        return url

    def download(self, url: str) -> bytes:
        """GET a pre-signed URL as its holder would (refused once expired; RecordNotFound when gone)."""
        key, until = self._links[url]
        if until is not None and self._clock is not None and self._clock.now() > until:
            raise PermissionError("the download URL has expired")
        return self.get(key)

    def upload(self, url: str, data: bytes, content_type: str, *, check_length: bool = True) -> None:
        """PUT `data` to a pre-signed URL. `check_length=False` plays a store that cannot bind the
        length (moto does not check signatures): the submission's own size check must then catch it."""
        key, bound_type, bound_size, until = self._presigned[url]
        if until is not None and self._clock is not None and self._clock.now() > until:
            raise PermissionError("the upload URL has expired")
        if content_type != bound_type or (check_length and len(data) != bound_size):
            raise PermissionError("SignatureDoesNotMatch: the upload's type or length is not the signed one")
        self.put(key, data, content_type)


J = TypeVar("J", bound=Job)


class FakeJobQueue:
    """Jobs land in `sent[pool]`. Refuse some (`refuse_when(job)` is true) or all (`refuse_all`).

    SendJobs and ReleaseJobs share a queue, as on SQS (a release job arrives from its schedule).
    """

    def __init__(self) -> None:
        self.sent: dict[Pool, list[Job]] = {pool: [] for pool in POOLS}
        self.delays: dict[str, int] = {}  # message id (email id for a release) -> its last delay
        self.refuse_when: Callable[[Job], bool] = lambda job: False
        self.refuse_all = False
        self.batches = 0  # SendMessageBatch calls the real queue would make (10 jobs each)

    def send_jobs(self, pool: Pool, jobs: Sequence[J], delay_seconds: int = 0) -> list[J]:
        failed = [job for job in jobs if self.refuse_all or self.refuse_when(job)]
        self.batches += -(-len(jobs) // 10)
        for job in jobs:
            if job not in failed:
                self.sent[pool].append(job)
                self.delays[job.message_id if isinstance(job, SendJob) else job.email_id] = delay_seconds
        return failed

    def backlog(self, pool: Pool) -> int:
        """The jobs on the pool's queue: sent and not drained yet."""
        return len(self.sent[pool])

    def drain(self, pool: Pool) -> list[SendJob]:
        """The SendJobs waiting on the pool's queue, taken off it (release jobs stay: see `drain_all`)."""
        jobs = [job for job in self.sent[pool] if isinstance(job, SendJob)]
        self.sent[pool] = [job for job in self.sent[pool] if not isinstance(job, SendJob)]
        return jobs

    def drain_all(self, pool: Pool) -> list[Job]:
        jobs, self.sent[pool] = self.sent[pool], []
        return jobs

    def releases(self, pool: Pool) -> list[ReleaseJob]:
        return [job for job in self.sent[pool] if isinstance(job, ReleaseJob)]


@dataclass(frozen=True)
class FakeSchedule:
    name: str
    at: datetime
    job: Job


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

    def schedule(self, name: str, at: datetime, job: Job) -> None:
        if self.down:
            raise SchedulerDown("scheduler unreachable")
        if name in self.schedules:
            raise AlreadyExists(f"schedule {name} exists")
        self.schedules[name] = FakeSchedule(name, at, job)
        self.created += 1

    def cancel(self, name: str) -> None:
        if self.down:
            raise SchedulerDown("scheduler unreachable")
        if self.schedules.pop(name, None) is None:
            raise RecordNotFound(f"no schedule {name}")

    def fire_due(self, now: datetime, queue: FakeJobQueue) -> list[Job]:
        due = sorted((s for s in self.schedules.values() if s.at <= now), key=lambda s: s.at)
        for item in due:
            del self.schedules[item.name]
            queue.send_jobs(item.job.pool, [item.job])
        return [item.job for item in due]


class SecretStoreDown(RuntimeError):
    pass


class FakeSecretStore:
    """`down = True` makes every read fail, like an unreachable Secrets Manager. `secrets` holds the
    live secrets; `deleted` the names of deleted ones, still in their recovery window (taken for
    `create_secret`, as Secrets Manager keeps them 7 days; `purge` ends the window here)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.down = False
        self.reads = 0

    def get_secret(self, name: str) -> str:
        self.reads += 1
        if self.down:
            raise SecretStoreDown("secrets manager unreachable")
        if name not in self.secrets:
            raise RecordNotFound(f"no secret {name}")
        return self.secrets[name]

    def put_secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def create_secret(self, name: str, value: str) -> None:
        if name in self.secrets or name in self.deleted:
            raise AlreadyExists(f"a secret {name} exists, or was deleted less than 7 days ago")
        self.secrets[name] = value

    def delete_secret(self, name: str) -> None:
        if self.secrets.pop(name, None) is None:
            raise RecordNotFound(f"no secret {name}")
        self.deleted.add(name)

    def purge(self, name: str) -> None:
        """The recovery window ended: the name may be created again."""
        self.deleted.discard(name)
