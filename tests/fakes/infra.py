"""In-memory BlobStore, JobQueue and SecretStore."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
        self.refuse_when: Callable[[SendJob], bool] = lambda job: False
        self.refuse_all = False

    def send_jobs(self, pool: Pool, jobs: Sequence[SendJob]) -> list[SendJob]:
        failed = [job for job in jobs if self.refuse_all or self.refuse_when(job)]
        self.sent[pool].extend(job for job in jobs if job not in failed)
        return failed

    def drain(self, pool: Pool) -> list[SendJob]:
        jobs, self.sent[pool] = self.sent[pool], []
        return jobs


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
