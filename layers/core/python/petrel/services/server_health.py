"""What one batch's outcomes say about its servers and providers (DESIGN "Traffic shaping").

- Each server's sends, hard bounces and connection failures in the batch are added to its recent
  window: one write per server per batch (TokenBuckets.record_outcomes).
- A bounce rate over the server's threshold (over at least `bounce_min_sends` of its last
  `bounce_window` sends), or connection failures that keep coming (`failure_threshold` in a row) while
  another server of its pool takes traffic, pause it: one conditional write across all workers, a
  `server.paused` event, its pool's other servers take its traffic, and it resumes after
  `probation_minutes` (petrel.services.dispatch) or by command.
- A "slow down" (421, or an enhanced code 4.7.x) halves the rate of the bucket it concerns for a while:
  the provider's through that server when the recipient's provider is known, else the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from petrel.mail.smtp_reply import DeliveryOutcome, HardFail, ReplyCode, SmtpReply, Stage
from petrel.services import shaping

if TYPE_CHECKING:
    from petrel.models.records import SmtpServer
    from petrel.ports import TenantStore, TokenBuckets

# How long a "slow down" halves a bucket's rate before it starts to recover.
SLOW_DOWN_SECONDS = shaping.SLOW_DOWN_SECONDS


@dataclass
class HealthDeps:
    tenants: TenantStore
    buckets: TokenBuckets


@dataclass(frozen=True)
class Observed:
    """One attempt's SMTP outcome through `server`, for a recipient with `provider`."""

    server: SmtpServer
    provider: str
    outcome: DeliveryOutcome


@dataclass
class _Tally:
    server: SmtpServer
    sends: int = 0
    bounces: int = 0
    failures: int = 0
    slowed: set[str] = field(default_factory=set)
    server_slowed: bool = False


def connection_failed(reply: SmtpReply) -> bool:
    """The server could not take mail at all: no reply (refused, reset, timed out), a refusal before
    MAIL (greeting, TLS, AUTH), or 421 closing."""
    return (
        reply.code == 0
        or reply.stage in (Stage.CONNECT, Stage.TLS, Stage.AUTH)
        or reply.code == ReplyCode.SERVICE_NOT_AVAILABLE
    )


def says_slow_down(reply: SmtpReply) -> bool:
    """421, or a 4.7.x enhanced code (a policy deferral: rate limited, too many connections)."""
    return reply.code == ReplyCode.SERVICE_NOT_AVAILABLE or (
        reply.code // 100 == 4 and (reply.enhanced or "").startswith("4.7.")
    )


def observe(
    deps: HealthDeps, observed: Sequence[Observed], now: datetime, *, fan_out: shaping.FanOut = shaping.one_by_one
) -> list[SmtpServer]:
    """Record the batch's outcomes per server, slow down the buckets told to, pause the servers whose
    window passes a threshold; the servers this call paused. The servers are settled at once through
    `fan_out` (each server's writes are its own)."""
    tallies: dict[tuple[str, str], _Tally] = {}
    for seen in observed:
        tally = tallies.setdefault((seen.server.tenant_id, seen.server.server_id), _Tally(seen.server))
        reply = seen.outcome.reply
        if connection_failed(reply):
            tally.failures += 1
        else:
            tally.sends += 1
            tally.bounces += isinstance(seen.outcome, HardFail)
        if says_slow_down(reply):
            # 421 speaks for the whole server; a 4.7.x to one recipient for that recipient's provider
            if reply.code == ReplyCode.SERVICE_NOT_AVAILABLE:
                tally.server_slowed = True
            else:
                tally.slowed.add(seen.provider)
    at = now.timestamp()

    def has_pool_mate(server: SmtpServer) -> bool:
        return any(
            other.server_id != server.server_id and other.pool == server.pool and other.takes_traffic(now)
            for other in deps.tenants.list_servers(server.tenant_id)
        )

    def settle(tally: _Tally) -> SmtpServer | None:
        """One server's slow-downs, its outcomes recorded, and its pause when they call for one."""
        server = tally.server
        for provider in sorted(tally.slowed):
            shaping.slow_down_provider(deps.buckets, server, provider, now=at, seconds=SLOW_DOWN_SECONDS)
        if tally.server_slowed:
            key = shaping.server_key(server.tenant_id, server.server_id)
            deps.buckets.slow_down(key, now=at, seconds=SLOW_DOWN_SECONDS)
        stats, reason = shaping.record_batch(
            deps.buckets, server, sends=tally.sends, bounces=tally.bounces, failures=tally.failures
        )
        if reason is not None and shaping.bounce_verdict(server, stats) is None and not has_pool_mate(server):
            # Connection failures alone: a pause would move no traffic (no other server of its pool takes
            # any) and would keep the server out for its probation after it comes back; its deferred
            # messages' retries find it as soon as it answers.
            reason = None
        if reason is not None and server.paused_at is None:
            resume_at = shaping.probation_end(server, now)
            if deps.tenants.pause_server(
                server.tenant_id, server.server_id, at=now, reason=reason, resume_at=resume_at
            ):
                return server
        return None

    settled = fan_out([_bind(settle, tally) for tally in tallies.values()])
    return [server for server in settled if server is not None]


def _bind(settle: Callable[[_Tally], SmtpServer | None], tally: _Tally) -> Callable[[], SmtpServer | None]:
    return lambda: settle(tally)
