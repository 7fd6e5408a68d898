"""A tenant's sending quotas: recipients accepted per UTC day (`daily_quota`) and per second
(`per_second_quota`), counted at submission.

Each quota is a counter per tenant per window in the tenants table (`TenantStore.consume_quota`: one
conditional add, so two API instances cannot both take the last units). An email takes as many units
as it has recipients, and takes them only once it has passed every check, just before it is stored:
a request refused for any other reason costs nothing. When the store then fails, the units are given
back, best effort: units that cannot be given back stay counted until their window ends (the tenant
loses them), and a store that failed after writing (a timeout after the commit) gets them back though
the email was stored (the tenant gains them). Both are rare and bounded by one email's recipients.

A request replayed under its `Idempotency-Key` never reaches the submission, so it takes nothing again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from petrel.errors import InvalidRequest, QuotaExceeded
from petrel.models.records import Tenant
from petrel.ports import TenantStore

# A counter outlives its window by this much (DynamoDB's TTL deletes it some time after that; a late
# deletion costs nothing, since a window's name is never used again).
COUNTER_SLACK_SECONDS = 3600


@dataclass(frozen=True)
class QuotaWindow:
    """One quota's current window: its counter's name, its limit and when the next window starts."""

    quota: str  # "per_second_quota" or "daily_quota": the tenant setting it comes from
    window: str  # the counter's name, unique to the window (e.g. `day#2026-11-30`)
    limit: int
    ends_at: datetime

    def retry_after(self, now: datetime) -> int:
        """Whole seconds until the next window (at least 1): the 429's `Retry-After`."""
        return max(1, math.ceil((self.ends_at - now).total_seconds()))

    @property
    def expires_at(self) -> int:
        return int(self.ends_at.timestamp()) + COUNTER_SLACK_SECONDS


def windows(tenant: Tenant, now: datetime) -> list[QuotaWindow]:
    """The tenant's quotas in force at `now`, the shorter window first (the cheaper refusal)."""
    now = now.astimezone(UTC)
    found: list[QuotaWindow] = []
    if tenant.per_second_quota is not None:
        second = int(now.timestamp())
        found.append(
            QuotaWindow(
                "per_second_quota",
                f"sec#{second}",
                tenant.per_second_quota,
                datetime.fromtimestamp(second + 1, UTC),
            )
        )
    if tenant.daily_quota is not None:
        day = now.date()
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        found.append(QuotaWindow("daily_quota", f"day#{day.isoformat()}", tenant.daily_quota, midnight))
    return found


@dataclass(frozen=True)
class Consumed:
    """Units an email took from its tenant's windows: what `give_back` returns if it is not stored."""

    tenant_id: str
    units: int
    windows: Sequence[QuotaWindow] = ()


def consume(tenants: TenantStore, tenant: Tenant, units: int, now: datetime) -> Consumed:
    """Take `units` recipients from each of the tenant's quotas, all or none.

    QuotaExceeded (429) when a window has no room now; InvalidRequest (422) when the email alone is
    larger than a quota (no window would ever take it: waiting would not help).
    """
    taken: list[QuotaWindow] = []
    for window in windows(tenant, now):
        if units > window.limit:
            give_back(tenants, Consumed(tenant.tenant_id, units, taken))
            raise InvalidRequest(
                f"the email has {units} recipients; this tenant's {window.quota} is {window.limit}",
                errors=[{"pointer": "", "detail": f"at most {window.limit} recipients per email"}],
            )
        if not tenants.consume_quota(
            tenant.tenant_id, window.window, units, limit=window.limit, expires_at=window.expires_at
        ):
            give_back(tenants, Consumed(tenant.tenant_id, units, taken))
            wait = window.retry_after(now)
            raise QuotaExceeded(
                f"this tenant's {window.quota} of {window.limit} recipients is used up; retry in {wait} s",
                retry_after=wait,
                quota=window.quota,
                limit=window.limit,
            )
        taken.append(window)
    return Consumed(tenant.tenant_id, units, tuple(taken))


def give_back(tenants: TenantStore, consumed: Consumed) -> None:
    """Return the units of an email that was not stored after all. Best effort: the caller is already
    failing and reports its own error; units not returned stay counted until their window ends."""
    for window in consumed.windows:
        try:
            tenants.release_quota(consumed.tenant_id, window.window, consumed.units)
        except Exception:  # noqa: S112 - see the docstring: the original failure is what matters
            continue
