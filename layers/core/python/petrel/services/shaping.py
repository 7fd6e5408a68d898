"""Traffic shaping: how many of a batch's messages may be relayed now, and when a server is unhealthy.

The send worker calls `take_for_batch` once per batch with its messages grouped by (tenant, server,
destination provider). Each bucket involved is taken from once for the whole batch, never once per
message, in this order:

1. the tenant's rate (`Tenant.send_rate_per_second`; none when unset), shared by all its servers;
2. the server's rate (`ServerShaping.rate_per_second`, `burst`), times any slow-down in force;
3. the server x provider rate (`provider_rate_per_second`, `provider_burst`), times its slow-down;
4. the server's daily warm-up cap (a counter per UTC day; none once the ramp is over).

Each stage sees only what the stages before it admitted; rate tokens that a later stage refused are
given back (a daily count cannot be, which is why the cap comes last). When a stage fails (the store
raised), every token taken is given back and the error goes to the caller: nothing of the batch may go.
A message that finds no token is not an attempt: the worker hands it back to its queue with the delay
given here, and the delays of one bucket's refused messages are spaced at that bucket's rate so that
they do not all return at once.

The takes of one stage are independent of each other (one bucket each), and so are the rate factors
read before the first stage: each group of them goes through `fan_out` at once (the worker runs them
on its threads: a batch's calls to DynamoDB then cost a round trip per stage, not one per bucket).

`bounce_verdict` and `failure_verdict` turn a server's recent outcomes (TokenBuckets.record_outcomes)
into the reason to pause it, or None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar

from petrel.models.records import WARMUP_DAYS, SmtpServer, Tenant
from petrel.ports import BucketSpec, Grant, ServerStats, TokenBuckets

SLOW_DOWN_SECONDS = 300.0  # a provider's "slow down" halves its bucket for this long, then recovers as long

TENANT_RATE = "tenant-rate"
SERVER_RATE = "server-rate"
PROVIDER_RATE = "provider-rate"
WARMUP_CAP = "warmup-cap"

T = TypeVar("T")


class FanOut(Protocol):
    """Runs independent calls, at once where it can; their results in order, once every call has
    returned. A call that raised raises here (the first in order), after the others have ended."""

    def __call__(self, calls: Sequence[Callable[[], T]]) -> list[T]: ...


def one_by_one(calls: Sequence[Callable[[], T]]) -> list[T]:
    """The FanOut that runs its calls one after the other (tests, and any caller without threads)."""
    results: list[T] = []
    error: Exception | None = None
    for call in calls:
        try:
            results.append(call())
        except Exception as raised:  # the others still run, as they would on threads
            error = error or raised
    if error is not None:
        raise error
    return results


# -- keys -------------------------------------------------------------------------------------------


def tenant_key(tenant_id: str) -> str:
    return f"ten#{tenant_id}"


def server_key(tenant_id: str, server_id: str) -> str:
    return f"srv#{tenant_id}#{server_id}"


def provider_key(tenant_id: str, server_id: str, provider: str) -> str:
    return f"prov#{tenant_id}#{server_id}#{provider}"


def daily_key(tenant_id: str, server_id: str) -> str:
    """The warm-up counter's key (TokenBuckets.take_daily adds the day)."""
    return f"day#{tenant_id}#{server_id}"


def stats_key(tenant_id: str, server_id: str) -> str:
    return f"stat#{tenant_id}#{server_id}"


# -- buckets ----------------------------------------------------------------------------------------


def server_bucket(server: SmtpServer, factor: float = 1.0) -> BucketSpec:
    shaping = server.shaping
    return BucketSpec(
        server_key(server.tenant_id, server.server_id),
        shaping.rate_per_second * factor,
        max(1.0, shaping.burst * factor),
    )


def provider_bucket(server: SmtpServer, provider: str, factor: float = 1.0) -> BucketSpec:
    shaping = server.shaping
    return BucketSpec(
        provider_key(server.tenant_id, server.server_id, provider),
        shaping.provider_rate_per_second * factor,
        max(1.0, shaping.provider_burst * factor),
    )


def tenant_bucket(tenant: Tenant) -> BucketSpec | None:
    """The tenant's own rate across its servers (a second's worth of burst), or None when it has none."""
    rate = tenant.send_rate_per_second
    if rate is None:
        return None
    return BucketSpec(tenant_key(tenant.tenant_id), rate, max(1.0, rate))


def daily_cap(server: SmtpServer, today: date) -> int | None:
    """The most messages the server may take on `today` (UTC) by its age in days, from its warm-up
    ramp: the cap of the last step whose day it has reached (the first step's before that). None once
    the ramp is over (from day WARMUP_DAYS, or the day after a longer ramp's last step) or when the
    server has no ramp."""
    steps = sorted(server.shaping.warmup, key=lambda step: step.day)
    if not steps:
        return None
    created = server.created_at if server.created_at.tzinfo else server.created_at.replace(tzinfo=UTC)
    age = max(0, (today - created.astimezone(UTC).date()).days)
    if age >= max(WARMUP_DAYS, steps[-1].day + 1):
        return None
    reached = [step.daily_cap for step in steps if step.day <= age]
    return reached[-1] if reached else steps[0].daily_cap


# -- one batch --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """`count` messages of a batch from `tenant`, to be relayed through `server`, to `provider`."""

    tenant: Tenant
    server: SmtpServer
    provider: str
    count: int


@dataclass(frozen=True)
class Admission:
    """For one Want: `admitted` may be relayed now; the other `deferred` go back to their queue, the
    i-th after `delays[i]` seconds (ascending). `limited_by` names the limit that deferred the first of
    them (TENANT_RATE, SERVER_RATE, PROVIDER_RATE, WARMUP_CAP). A warm-up deferral waits for the next
    UTC day, longer than an SQS delay (900 s) allows."""

    want: Want
    admitted: int
    delays: tuple[float, ...] = ()
    limited_by: str | None = None

    @property
    def deferred(self) -> int:
        return self.want.count - self.admitted

    @property
    def delay_seconds(self) -> float:
        """When the first deferred message may try again (0.0 when none was deferred)."""
        return self.delays[0] if self.delays else 0.0


@dataclass
class _Group:
    want: Want
    allowed: int
    delays: list[float] = field(default_factory=list)
    limited_by: str | None = None

    def cut(self, keep: int, delays: Sequence[float], reason: str) -> None:
        self.allowed = keep
        self.delays.extend(delays)
        self.limited_by = self.limited_by or reason


@dataclass
class _Taken:
    bucket: BucketSpec
    groups: list[_Group]
    granted: int


def take_for_batch(
    buckets: TokenBuckets, wants: Sequence[Want], *, now: float, today: date, fan_out: FanOut = one_by_one
) -> list[Admission]:
    """How many of each Want may be relayed now (module docstring), one Admission per Want, in order."""
    groups = [_Group(want, max(0, want.count)) for want in wants]
    keys = sorted(
        {server_key(w.server.tenant_id, w.server.server_id) for w in wants}
        | {provider_key(w.server.tenant_id, w.server.server_id, w.provider) for w in wants}
    )
    factors = dict(zip(keys, fan_out([_factor_call(buckets, key, now) for key in keys]), strict=True))
    stages: tuple[tuple[str, Callable[[Want], BucketSpec | None]], ...] = (
        (TENANT_RATE, lambda w: tenant_bucket(w.tenant)),
        (SERVER_RATE, lambda w: server_bucket(w.server, factors[server_key(w.server.tenant_id, w.server.server_id)])),
        (
            PROVIDER_RATE,
            lambda w: provider_bucket(
                w.server, w.provider, factors[provider_key(w.server.tenant_id, w.server.server_id, w.provider)]
            ),
        ),
    )
    taken: list[_Taken] = []
    try:
        for reason, bucket_of in stages:
            found = _by_bucket(groups, bucket_of)
            calls = [_take_call(buckets, bucket, sum(g.allowed for g in members), now) for bucket, members in found]
            results = fan_out(calls)
            for (bucket, members), grant in zip(found, results, strict=True):
                if isinstance(grant, Grant):
                    taken.append(_Taken(bucket, members, grant.granted))
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            for (bucket, members), grant in zip(found, results, strict=True):
                assert isinstance(grant, Grant)
                _share(members, grant.granted, _spaced(grant.wait_seconds, bucket.rate), reason)
        _take_daily(buckets, groups, now=now, today=today, fan_out=fan_out)
    except Exception:
        _give_back_all(buckets, taken, now=now, fan_out=fan_out)
        raise
    returns: list[Callable[[], None]] = []
    for t in taken:
        unused = t.granted - sum(g.allowed for g in t.groups)
        if unused > 0:
            returns.append(_give_back_call(buckets, t.bucket, unused, now))
    fan_out(returns)
    return [Admission(g.want, g.allowed, tuple(sorted(g.delays)), g.limited_by) for g in groups]


def _factor_call(buckets: TokenBuckets, key: str, now: float) -> Callable[[], float]:
    return lambda: buckets.factor(key, now=now)


def _take_call(buckets: TokenBuckets, bucket: BucketSpec, wanted: int, now: float) -> Callable[[], Grant | Exception]:
    """A take whose failure is a value: the takes that succeeded beside it are then given back."""

    def take() -> Grant | Exception:
        try:
            return buckets.take(bucket, wanted, now=now)
        except Exception as error:
            return error

    return take


def _give_back_call(buckets: TokenBuckets, bucket: BucketSpec, count: int, now: float) -> Callable[[], None]:
    return lambda: buckets.give_back(bucket, count, now=now)


def _give_back_all(buckets: TokenBuckets, taken: Sequence[_Taken], *, now: float, fan_out: FanOut) -> None:
    """A stage failed (the store refused or was unreachable): nothing of the batch goes, so every token
    already taken goes back, as far as the store lets it (a token it keeps is only a token lost)."""

    def give_back(t: _Taken) -> Callable[[], None]:
        def call() -> None:
            with contextlib.suppress(Exception):
                buckets.give_back(t.bucket, t.granted, now=now)

        return call

    fan_out([give_back(t) for t in taken if t.granted > 0])


def _by_bucket(
    groups: Sequence[_Group], bucket_of: Callable[[Want], BucketSpec | None]
) -> list[tuple[BucketSpec, list[_Group]]]:
    """The groups that still want something, by the bucket they draw from (in the batch's order)."""
    found: dict[str, tuple[BucketSpec, list[_Group]]] = {}
    for group in groups:
        if group.allowed <= 0:
            continue
        bucket = bucket_of(group.want)
        if bucket is not None:
            found.setdefault(bucket.key, (bucket, []))[1].append(group)
    return list(found.values())


def _spaced(first: float, rate: float) -> Callable[[int], float]:
    """The i-th refused message of a bucket waits for its own token: `first`, then one per 1/rate."""
    return lambda i: first + i / rate


def _share(members: Sequence[_Group], granted: int, delay: Callable[[int], float], reason: str) -> None:
    """Hand `granted` out to `members` in order; the i-th message refused (across them) waits delay(i)."""
    left, refused = granted, 0
    for group in members:
        keep = min(group.allowed, left)
        left -= keep
        cut = group.allowed - keep
        if cut:
            group.cut(keep, [delay(refused + j) for j in range(cut)], reason)
            refused += cut


def _take_daily(buckets: TokenBuckets, groups: Sequence[_Group], *, now: float, today: date, fan_out: FanOut) -> None:
    """The warm-up stage: one counter per capped server and day; what it refuses waits for tomorrow."""
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC).timestamp()
    wait = max(1.0, tomorrow - now)
    servers: dict[tuple[str, str], tuple[SmtpServer, list[_Group]]] = {}
    for group in groups:
        server = group.want.server
        if group.allowed > 0:
            servers.setdefault((server.tenant_id, server.server_id), (server, []))[1].append(group)
    capped: list[tuple[int, SmtpServer, list[_Group]]] = []
    for server, members in servers.values():
        cap = daily_cap(server, today)
        if cap is not None:
            capped.append((cap, server, members))

    def take(cap: int, server: SmtpServer, wanted: int) -> Callable[[], int]:
        key = daily_key(server.tenant_id, server.server_id)
        return lambda: buckets.take_daily(key, wanted, cap=cap, day=today.isoformat())

    got = fan_out([take(cap, server, sum(g.allowed for g in members)) for cap, server, members in capped])
    for (_, _, members), granted in zip(capped, got, strict=True):
        _share(members, granted, _spaced(wait, float("inf")), WARMUP_CAP)


# -- adaptive protection ----------------------------------------------------------------------------


def slow_down_provider(
    buckets: TokenBuckets, server: SmtpServer, provider: str, *, now: float, seconds: float = SLOW_DOWN_SECONDS
) -> float:
    """A provider answered 421 or 4.7.x through `server`: halve that server x provider bucket (call once
    per provider per batch). Returns the factor now in force."""
    return buckets.slow_down(provider_key(server.tenant_id, server.server_id, provider), now=now, seconds=seconds)


def bounce_verdict(server: SmtpServer, stats: ServerStats) -> str | None:
    """The reason to pause `server` when its bounce rate over its recent window passes its threshold
    (counted only over at least `bounce_min_sends` sends), else None."""
    shaping = server.shaping
    if stats.sends < shaping.bounce_min_sends or stats.bounce_rate < shaping.bounce_threshold:
        return None
    return (
        f"bounce rate {stats.bounce_rate:.1%} over the last {stats.sends} sends "
        f"(threshold {shaping.bounce_threshold:.1%})"
    )


def failure_verdict(server: SmtpServer, stats: ServerStats) -> str | None:
    """The reason to pause `server` when its consecutive connection failures reach its threshold."""
    threshold = server.shaping.failure_threshold
    if stats.consecutive_failures < threshold:
        return None
    return f"{stats.consecutive_failures} consecutive connection failures (threshold {threshold})"


def record_batch(
    buckets: TokenBuckets, server: SmtpServer, *, sends: int, bounces: int, failures: int
) -> tuple[ServerStats, str | None]:
    """Record one batch's outcomes for `server` (TokenBuckets.record_outcomes: one write) and say whether
    it must be paused: the pause reason (connection failures first), or None."""
    stats = buckets.record_outcomes(
        stats_key(server.tenant_id, server.server_id),
        sends=sends,
        bounces=bounces,
        failures=failures,
        window=server.shaping.bounce_window,
    )
    return stats, failure_verdict(server, stats) or bounce_verdict(server, stats)


def probation_end(server: SmtpServer, paused_at: datetime) -> datetime:
    """When a server paused by the worker at `paused_at` resumes on its own."""
    return paused_at + timedelta(minutes=server.shaping.probation_minutes)
