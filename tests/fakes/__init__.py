"""One in-memory double per port in `petrel.ports`, held to the adapters' contract tests."""

from tests.fakes.clock import FixedClock
from tests.fakes.idempotency import FakeIdempotencyStore
from tests.fakes.infra import FakeBlobStore, FakeJobQueue, FakeSecretStore
from tests.fakes.messages import FakeMessageStore
from tests.fakes.smtp import FakeSmtpRelay, RelayCall
from tests.fakes.tenants import FakeTenantStore
from tests.fakes.world import FakeWorld, Seeded

__all__ = [
    "FakeBlobStore",
    "FakeIdempotencyStore",
    "FakeJobQueue",
    "FakeMessageStore",
    "FakeSecretStore",
    "FakeSmtpRelay",
    "FakeTenantStore",
    "FakeWorld",
    "FixedClock",
    "RelayCall",
    "Seeded",
]
