"""`python -m bench.buckets`: traffic shaping's token buckets under concurrency, and their write cost.

- race: 8 threads, each a worker with its own TokenBuckets instance, take from one bucket (200 tokens
  a second, burst 50) for about 5 s of wall clock, always wanting more than it holds: against the
  DynamoDB adapter on moto's in-process mock with its requests applied one at a time (as DynamoDB
  applies each request to an item; moto's own threads do not), and against the in-memory fake. Printed:
  tokens granted per second (after the initial burst) against the configured rate, the most granted
  in any 1 s window against rate + burst, and PASS when the bucket never exceeded rate x elapsed + burst
  and sustained at least 95 % of its rate.
- cost: the bulk take of petrel.services.shaping.take_for_batch for batches of 10 messages on the
  adapter on moto, counting its requests: DynamoDB write units per message (each conditional write of
  an item under 1 KB is 1 WRU, also when its condition fails) and read units (strongly consistent
  GetItem: 1 RRU), for a server past its warm-up sending to one provider, and for a warming server of a
  tenant with its own rate sending to two providers.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.moto_session import moto_session
from petrel.ports import BucketSpec, TokenBuckets
from tests.support_moto import AtomicRequests

THREADS = 8
RATE = 200.0
BURST = 50.0  # a quarter second: a taker descheduled for less than that on a loaded machine loses nothing
SECONDS = 5.0
WANT = 25  # each take asks for more than the bucket holds between two takes
SUSTAIN = 0.95
BATCH = 10
BATCHES = 200


@dataclass(frozen=True)
class Race:
    granted: int
    elapsed: float
    max_window: int
    takes: int

    @property
    def sustained(self) -> float:
        """Tokens per second beyond the initial burst."""
        return max(0.0, self.granted - BURST) / self.elapsed

    @property
    def within(self) -> bool:
        return self.granted <= RATE * self.elapsed + BURST and self.max_window <= RATE + BURST

    @property
    def passed(self) -> bool:
        return self.within and self.sustained >= SUSTAIN * RATE


def race(make: Callable[[], TokenBuckets]) -> Race:
    bucket = BucketSpec("srv#tn_bench#race", RATE, BURST)
    start = threading.Barrier(THREADS)
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker(_: int) -> None:
        buckets, mine = make(), []
        start.wait()
        end = time.time() + SECONDS
        while (now := time.time()) < end:
            mine.append((now, buckets.take(bucket, WANT, now=now).granted))
        with lock:
            grants.extend(mine)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    grants.sort()
    times = [t for t, _ in grants]
    return Race(sum(g for _, g in grants), times[-1] - times[0], _max_window(grants), len(grants))


def _max_window(grants: list[tuple[float, int]]) -> int:
    """The most tokens granted to takes whose `now` fell within any 1 s."""
    best, total, first = 0, 0, 0
    for t, granted in grants:
        total += granted
        while grants[first][0] <= t - 1.0:
            total -= grants[first][1]
            first += 1
        best = max(best, total)
    return best


def cost(buckets: TokenBuckets, client: AtomicRequests | None, warming: bool) -> tuple[float, float]:
    """(write units, read units) per message of the bulk take for BATCHES batches of BATCH messages,
    one batch every 0.1 s: within every limit (so nothing is refused and given back)."""
    from petrel.models.records import ServerShaping, SmtpServer, Tenant
    from petrel.services.shaping import Want, take_for_batch

    created = datetime(2026, 11, 28, tzinfo=UTC) if warming else datetime(2026, 1, 1, tzinfo=UTC)
    tenant = Tenant(
        tenant_id="tn_bench", name="bench", created_at=created, send_rate_per_second=500 if warming else None
    )
    shaping = ServerShaping(rate_per_second=500, burst=500, provider_rate_per_second=500, provider_burst=500)
    server = SmtpServer(
        tenant_id="tn_bench",
        server_id="srv_warming" if warming else "srv_warm",
        host="mail.example",
        port=587,
        username="relay",
        secret_name="x",
        created_at=created,
        shaping=shaping,
    )
    providers = ("google", "microsoft") if warming else ("google",)
    per = BATCH // len(providers)
    now, today = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp(), datetime(2026, 11, 30, tzinfo=UTC).date()
    before = Counter(client.calls) if client else Counter()
    for i in range(BATCHES):
        wants = [Want(tenant, server, provider, per) for provider in providers]
        admitted = take_for_batch(buckets, wants, now=now + i * 0.1, today=today)
        assert sum(a.admitted for a in admitted) == BATCH, admitted
    messages = BATCHES * BATCH
    if client is None:
        from tests.fakes.buckets import FakeTokenBuckets

        assert isinstance(buckets, FakeTokenBuckets)
        return buckets.writes / messages, buckets.reads / messages
    calls = client.calls - before
    return (calls["update_item"] + calls["put_item"]) / messages, calls["get_item"] / messages


def main() -> int:
    from moto import mock_aws

    from petrel import resources
    from petrel.adapters.buckets import DynamoTokenBuckets
    from tests.fakes.buckets import FakeTokenBuckets

    session = moto_session()
    ok = True
    with mock_aws():
        from local.provision import provision

        db = session.client("dynamodb")
        made = provision(
            db,
            session.client("sqs"),
            session.client("s3"),
            prefix="bench",
            visibility_timeout=60,
            max_receive_count=5,
            scheduler=session.client("scheduler"),
            iam=session.client("iam"),
        )
        table = made.tables[resources.BUCKETS.name]
        client = AtomicRequests(db)
        fake = FakeTokenBuckets()
        for name, make in (
            ("moto (serialized)", lambda: DynamoTokenBuckets(client, table)),  # type: ignore[arg-type]
            ("fake", lambda: fake),
        ):
            before = Counter(client.calls)
            result = race(make)
            ok &= result.passed
            calls = client.calls - before
            requests = f" | {calls['update_item']} writes, {calls['get_item']} reads" if calls else ""
            print(
                f"buckets race {name:18} {result.sustained:6.1f} tokens/s after the burst vs rate {RATE:.0f}"
                f" ({result.sustained / RATE:.1%}) | max 1 s window {result.max_window} vs rate+burst"
                f" {RATE + BURST:.0f} | {result.granted} in {result.elapsed:.2f} s over {result.takes} takes"
                f"{requests} | {'PASS' if result.passed else 'FAIL'}"
            )
        for warming in (False, True):
            scenario = "warming server, tenant rate, 2 providers" if warming else "warm server, 1 provider"
            adapter = DynamoTokenBuckets(client, table)  # type: ignore[arg-type]
            wru, rru = cost(adapter, client, warming)
            fake_wru, _ = cost(FakeTokenBuckets(), None, warming)
            print(
                f"buckets cost {scenario:42} {wru:.2f} WRU/msg, {rru:.2f} RRU/msg on moto"
                f" (fake: {fake_wru:.2f} WRU/msg) for batches of {BATCH}"
            )
            ok &= wru < 1.0
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
