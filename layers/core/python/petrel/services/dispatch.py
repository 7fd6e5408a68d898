"""One batch of send jobs before any lease: the server each job goes through, the provider its
recipient is with, and how many the token buckets admit now (DESIGN "Traffic shaping").

A job the buckets do not admit goes back to its queue with the delay they gave: it is not an attempt
(its message is not leased, nothing is written) and not a failed receive (a new queue message). The
buckets are taken in bulk, one take per bucket per batch (petrel.services.shaping.take_for_batch).

What is not shaped goes on as before: a job whose tenant is gone or suspended (the attempt ends or
holds it), whose recipient one of the tenant's own mailboxes receives for (delivered locally, no SMTP),
or whose pool has no usable server (the attempt defers it, `no-server`). A paused server takes no
traffic; its pool's other servers take it. A pause whose probation is over ends here, once across all
workers (a conditional write), with a `server.resumed` event.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from petrel.models.records import SmtpServer, Tenant
from petrel.services import shaping

if TYPE_CHECKING:
    from petrel.models.jobs import SendJob
    from petrel.ports import Clock, MailboxStore, TokenBuckets
    from petrel.services.deliver import Batch, TenantConfig

# The longest a job waits on its queue for tokens (SQS's DelaySeconds limit); a longer wait (a daily
# cap spent) is several such waits.
MAX_WAIT_SECONDS = 900
PROBATION_OVER = "probation over"


@dataclass
class DispatchDeps:
    tenants: TenantConfig
    mailboxes: MailboxStore
    buckets: TokenBuckets
    # A recipient domain's provider group (its MX hosts looked up and cached; petrel.mail.providers).
    provider_of: Callable[[str], str]
    clock: Clock
    rng: random.Random = field(default_factory=random.Random)


# The provider group of a job that does not name its recipient's domain (queued before jobs did).
UNKNOWN_PROVIDER = "unknown"


@dataclass(frozen=True)
class Route:
    """Where a job goes: `server` (None: not shaped, the attempt chooses or finds none) and the
    recipient's `provider` group."""

    job: SendJob
    server: SmtpServer | None = None
    provider: str = UNKNOWN_PROVIDER


@dataclass
class Dispatch:
    """The batch split: the routes to attempt now, and the jobs to hand back with their delay."""

    now: list[Route] = field(default_factory=list)
    later: list[tuple[SendJob, int]] = field(default_factory=list)


def pool_servers(deps: DispatchDeps, tenant_id: str, pool: str, now: datetime) -> list[SmtpServer]:
    """The pool's servers that may take traffic now; a pause whose probation is over is ended first."""
    servers = [s for s in deps.tenants.list_servers(tenant_id) if s.pool == pool and s.takes_traffic(now)]
    for server in servers:
        if server.paused_at is not None:
            deps.tenants.resume_server(
                tenant_id, server.server_id, paused_at=server.paused_at, at=now, detail=PROBATION_OVER
            )
    return servers


def pick(deps: DispatchDeps, batch: Batch, servers: Sequence[SmtpServer]) -> SmtpServer | None:
    """A weighted pick among the servers that have not failed in this batch."""
    healthy = [s for s in servers if not batch.failed(s.server_id)]
    if not healthy:
        return None
    return deps.rng.choices(healthy, weights=[s.weight for s in healthy])[0]


def receives_locally(deps: DispatchDeps, tenant_id: str, domain: str) -> bool:
    return any(m.enabled and m.domain == domain for m in deps.mailboxes.list_mailboxes(tenant_id))


def route(deps: DispatchDeps, batch: Batch, job: SendJob, now: datetime) -> tuple[Route, Tenant | None]:
    """The job's route, and its tenant when the route is to be shaped (None: not shaped)."""
    tenant = deps.tenants.get_tenant(job.tenant_id)
    if tenant is None or tenant.suspended:
        return Route(job), None
    if job.domain is not None and receives_locally(deps, job.tenant_id, job.domain):
        return Route(job), None
    server = pick(deps, batch, pool_servers(deps, job.tenant_id, job.pool, now))
    if server is None:
        return Route(job), None
    provider = deps.provider_of(job.domain) if job.domain is not None else UNKNOWN_PROVIDER
    return Route(job, server, provider), tenant


def dispatch(
    deps: DispatchDeps, batch: Batch, jobs: Sequence[SendJob], *, fan_out: shaping.FanOut = shaping.one_by_one
) -> Dispatch:
    """Route every job, take the buckets' tokens for the shaped ones in bulk (each stage's takes at once
    through `fan_out`), and split the batch."""
    now = deps.clock.now()
    out = Dispatch()
    groups: dict[tuple[str, str, str], tuple[shaping.Want, list[Route]]] = {}
    for job in jobs:
        routed, tenant = route(deps, batch, job, now)
        if tenant is None or routed.server is None:
            out.now.append(routed)
            continue
        key = (tenant.tenant_id, routed.server.server_id, routed.provider)
        want, routes = groups.get(key) or (shaping.Want(tenant, routed.server, routed.provider, 0), [])
        routes.append(routed)
        groups[key] = (shaping.Want(want.tenant, want.server, want.provider, len(routes)), routes)
    if not groups:
        return out
    wants = [want for want, _ in groups.values()]
    admissions = shaping.take_for_batch(deps.buckets, wants, now=now.timestamp(), today=now.date(), fan_out=fan_out)
    for (_, routes), admission in zip(groups.values(), admissions, strict=True):
        out.now.extend(routes[: admission.admitted])
        for routed, wait in zip(routes[admission.admitted :], admission.delays, strict=True):
            out.later.append((routed.job, min(MAX_WAIT_SECONDS, max(1, math.ceil(wait)))))
    return out
