"""Fair send queues end to end: one tenant's flood does not hold back another tenant's mail.

Tenant A posts a flood through the batch API, all of it scheduled a few seconds ahead, so that its whole
backlog lands on the pool's queue at once (SQS DelaySeconds) however long the posting took; just after,
tenant B posts a few emails to the same queue. Both tenants' jobs carry their tenant as MessageGroupId; the
local pumps (a FairBuffer per send queue) hand B's jobs to the worker ahead of A's backlog, as SQS fair
queues do. The check compares the relay times Petrel records (each message's `updated_at` once relayed), not
wall-clock thresholds: B's emails are relayed while most of A's flood is still waiting, where moto's arrival
order alone would relay them last. (Posting the flood to be sent at once let the worker relay most of it
while the rest was still being posted: what was left when B posted was too short a backlog to tell.)
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.platform import LocalPlatform
from tests.e2e.support.api import Api
from tests.e2e.support.tenants import make_tenant, unique_addresses

pytestmark = pytest.mark.e2e

FLOOD = 300
QUIET = 3
BATCH = 100  # emails per POST /v1/emails/batch
MAILBOXES = 10  # the flood's recipients (the stand-in refuses unknown users): one recipient per email
# How far ahead the flood is scheduled: longer than posting it takes (about 10 s here under load).
FLOOD_AHEAD = timedelta(seconds=20)
# How long after the flood's release B posts: the flood is then the queue's backlog, a batch or two taken.
QUIET_AFTER = 2.0


def _relayed(api: Api) -> dict[str, tuple[datetime, datetime]]:
    """The tenant's relayed messages: when each was queued and when relayed, by message id."""
    found: dict[str, tuple[datetime, datetime]] = {}
    cursor = None
    while True:
        query = "/v1/emails?status=relayed&limit=100" + (f"&cursor={cursor}" if cursor else "")
        code, page = api.call("GET", query)
        assert code == 200, page
        for item in page["data"]:
            found[item["id"]] = (datetime.fromisoformat(item["created_at"]), datetime.fromisoformat(item["updated_at"]))
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def _wait_relayed(api: Api, count: int, timeout: float) -> dict[str, tuple[datetime, datetime]]:
    deadline = time.monotonic() + timeout
    relayed = _relayed(api)
    while len(relayed) < count and time.monotonic() < deadline:
        time.sleep(1)
        relayed = _relayed(api)
    assert len(relayed) == count, f"{len(relayed)} of {count} relayed after {timeout:.0f} s"
    return relayed


def _emails(sender: str, recipients: list[str], subject: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"from": sender, "to": [to], "subject": f"{subject} {n}", "text": "fair", **extra}
        for n, to in enumerate(recipients)
    ]


def test_a_flooding_tenant_does_not_delay_another_tenants_mail(platform: LocalPlatform) -> None:
    flooding, quiet = make_tenant(platform, "Flooding"), make_tenant(platform, "Quiet")
    boxes = unique_addresses(platform, "flood", MAILBOXES)
    quiet_boxes = unique_addresses(platform, "quiet", QUIET)
    platform.mailu.add_users({address: secrets.token_urlsafe(12) for address in boxes + quiet_boxes})
    release = datetime.now(UTC) + FLOOD_AHEAD
    flood = _emails(
        flooding.from_address, [boxes[n % MAILBOXES] for n in range(FLOOD)], "Flood", send_at=release.isoformat()
    )
    for start in range(0, FLOOD, BATCH):
        code, body = flooding.api.call("POST", "/v1/emails/batch", {"emails": flood[start : start + BATCH]})
        assert code == 202, body
        assert all(result["status"] == 202 for result in body["results"]), body
    time.sleep(max(0.0, (release - datetime.now(UTC)).total_seconds()) + QUIET_AFTER)
    for email in _emails(quiet.from_address, quiet_boxes, "Quiet"):
        code, body = quiet.api.call("POST", "/v1/emails", email)
        assert code == 202, body

    quiet_relayed = _wait_relayed(quiet.api, QUIET, timeout=30)
    flood_relayed = _wait_relayed(flooding.api, FLOOD, timeout=120)

    quiet_queued = min(queued for queued, _ in quiet_relayed.values())
    quiet_last = max(relayed for _, relayed in quiet_relayed.values())
    flood_times = [relayed for _, relayed in flood_relayed.values()]
    # The flood's messages relayed while the quiet tenant's waited, and those still waiting behind them.
    meanwhile = sum(1 for at in flood_times if quiet_queued < at <= quiet_last)
    after = sum(1 for at in flood_times if at > quiet_last)
    print(
        f"\nfairness: the quiet tenant's {QUIET} were relayed while {meanwhile} of the flood's {FLOOD} messages"
        f" were, and before {after} more"
    )
    assert quiet_last < max(flood_times)
    # In arrival order B's jobs, queued behind all of A's waiting ones, would be relayed after every one
    # of them (meanwhile would be all of A's backlog, after none).
    assert meanwhile < after, f"the quiet tenant waited for {meanwhile} of the flood's messages, {after} came later"
