"""Chaos soak: thousands of messages through the local stack's real path (HTTP API, queues, worker,
real Postfix) while Postfix is stopped and restarted twice, 5 % of the recipients meet a 4xx, and
crashes are injected at random points, about `PETREL_SOAK_CHAOS` (1 %) each:

* in the worker: before SMTP (leased, nothing sent), after DATA (the server took the message, its
  status is not written), after recording (the outcome is written, the job is not acknowledged): the
  job's handling raises, SQS brings the job back after its visibility timeout;
* in the API: between storing and enqueuing (the job of a stored message never reaches its queue:
  what a crash of the API function at that point leaves behind; only the sweeper can find it).

At the end every message is in the state its recipient calls for, Postfix holds exactly the messages
Petrel marked relayed, and every duplicate copy is explained by a crash after DATA or an attempt whose
reply was lost after DATA (at-least-once); it prints the counts. `PETREL_SOAK_MESSAGES` sets the size
(default 5,000).

It sends as a tenant of its own (tests/e2e/support/tenants.py), whose delivery reports no poller reads:
what it checks is the send path, so its messages end `relayed` and the ingest side stays idle.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from email import message_from_binary_file
from pathlib import Path
from typing import Any

import pytest

from local.platform import LocalPlatform
from tests.e2e.support.api import Api
from tests.e2e.support.aws_state import count_messages, queue_depths, waiting_sample
from tests.e2e.support.injection import api_sends, worker_deps
from tests.e2e.support.tenants import make_tenant

pytestmark = [pytest.mark.e2e, pytest.mark.soak]

MESSAGES = int(os.environ.get("PETREL_SOAK_MESSAGES", "5000"))
FLAKY_SHARE = 0.05  # recipients answered 451 until the second restart
GONE = max(5, MESSAGES // 200)  # 550 5.1.1: bounced (hard) and suppressed
SUPPRESSED = max(5, MESSAGES // 200)  # on the suppression list before the run: never sent
MAILBOXES = 100
PER_EMAIL = 10  # recipients per email: each is a message of its own (status, retries, suppression)
BATCH = 10  # emails per request: 100 messages
WAITING = ("scheduled", "queued", "sending", "deferred")
# The settle limit: generous, since the embedded moto sets the pace (on a slower 2-core machine the
# 5,000 messages settled in 855 to 1,228 s; on a faster one in 280 to 344 s).
FINISH_TIMEOUT = float(os.environ.get("PETREL_SOAK_TIMEOUT", "2400"))
CHAOS = float(os.environ.get("PETREL_SOAK_CHAOS", "0.01"))  # the chance of each injected crash
PROGRESS = bool(os.environ.get("PETREL_SOAK_PROGRESS"))  # print each look of the wait as it happens
# Between two counts of the waiting messages: the embedded moto scans the whole table for each (about a
# millisecond per item), time it does not spend on the traffic under test; while the send queues still
# hold jobs (read every QUEUE_POLL_SECONDS, cheaply) there is no count at all.
SETTLE_POLL_SECONDS = 15
QUEUE_POLL_SECONDS = 5
FEW_JOBS = 50  # at most this many jobs queued: count (a job of another test's may wait there a while)
FINAL = frozenset({"relayed", "delivered", "bounced", "failed", "suppressed", "cancelled"})


class ChaosCrash(Exception):
    """An injected crash of one job's handling."""


class Chaos:
    """Random crashes at the worker's and the API's dangerous points (see the module docstring)."""

    def __init__(self, rate: float, seed: int) -> None:
        self._rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.after_data: set[str] = set()  # message ids whose server took a copy before a crash
        self.lost_jobs: set[str] = set()  # message ids whose job never reached its queue

    def _hit(self, point: str) -> bool:
        with self._lock:
            if self._rng.random() >= self._rate:
                return False
            self.counts[point] += 1
            return True

    def relay(self, inner: Any) -> Any:
        chaos = self

        class Relay:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
                if chaos._hit("before-smtp"):
                    raise ChaosCrash("before SMTP")
                reply = inner.relay(server, password, envelope, data, **kwargs)
                if reply.is_positive and chaos._hit("after-data"):
                    with chaos._lock:
                        chaos.after_data.add(envelope.envid)
                    raise ChaosCrash("after DATA")
                return reply

        return Relay()

    def messages(self, inner: Any) -> Any:
        chaos = self

        class Store:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def transition(self, *args: Any, **kwargs: Any) -> None:
                inner.transition(*args, **kwargs)  # raises when it did not apply
                if chaos._hit("after-record"):
                    raise ChaosCrash("after recording, before acknowledging")

        return Store()

    def send_jobs(self, inner: Any) -> Any:
        """The API's `send_jobs`, losing each job at the chance of a crash between store and enqueue."""
        chaos = self

        def send_jobs(pool: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
            kept = []
            for job in jobs:
                if chaos._hit("between-store-and-enqueue"):
                    with chaos._lock:
                        chaos.lost_jobs.add(job.message_id)
                else:
                    kept.append(job)
            return inner(pool, kept, *args, **kwargs)

        return send_jobs


def _batches(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _post(api: Api, emails: list[dict[str, Any]]) -> list[str]:
    """Post emails in batches of 100; returns their ids (every item must be accepted)."""
    ids: list[str] = []
    for chunk in _batches(emails):
        status, body = api.call("POST", "/v1/emails/batch", {"emails": chunk})
        assert status == 202, body
        for result in body["results"]:
            assert result["status"] == 202, result
            ids.append(result["email"]["id"])
    return ids


def _pages(api: Api, status: str) -> Iterator[list[dict[str, Any]]]:
    """The tenant's messages in `status`, page by page (`next_cursor` followed to the listing's end). A
    status without an index of its own (queued, sending) is listed by walking the tenant's messages, a
    bounded stretch per call: a page may hold fewer than asked for, even none, with a cursor to go on."""
    cursor = None
    while True:
        query = f"/v1/emails?status={status}&limit=100" + (f"&cursor={cursor}" if cursor else "")
        code, page = api.call("GET", query)
        assert code == 200, page
        yield page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _listing(api: Api, status: str, recipients: set[str]) -> dict[str, dict[str, Any]]:
    """Every message of the tenant in `status` whose recipient is one of this run's, by message id."""
    return {item["id"]: item for data in _pages(api, status) for item in data if item["email"] in recipients}


def _any_waiting(api: Api) -> list[str]:
    """The statuses that still hold a message of the tenant, read through the API (each listed to its
    first message, following the cursor of a walked status to the listing's end)."""
    return [status for status in WAITING if any(data for data in _pages(api, status))]


def _send_jobs(platform: LocalPlatform) -> int:
    """Jobs on the send queues (visible, in flight, delayed): a few cheap queue reads."""
    return sum(sum(depth.values()) for name, depth in queue_depths(platform).items() if name.startswith("send"))


def _wait_until_settled(platform: LocalPlatform, api: Api, tenant_id: str) -> float:
    """Wait until no message of the tenant waits: while the send queues hold many jobs, some still do;
    once they hold few, counted in the embedded DynamoDB (aws_state.count_messages: a whole-table scan, so at
    most every SETTLE_POLL_SECONDS), then confirmed through the API's listings."""
    started = time.monotonic()
    waiting: list[str] = list(WAITING)
    seen: list[str] = []  # what each look found, by time: slow or stuck, the failure tells
    counted_at = -SETTLE_POLL_SECONDS
    while (elapsed := time.monotonic() - started) < FINISH_TIMEOUT:
        jobs = _send_jobs(platform)
        if jobs > FEW_JOBS:
            seen.append(f"{elapsed:.0f} s: {jobs} jobs queued")
        elif elapsed - counted_at >= SETTLE_POLL_SECONDS:
            counted_at = elapsed
            left = count_messages(platform, tenant_id, WAITING)
            seen.append(f"{elapsed:.0f} s: {left} waiting")
            if left == 0:
                waiting = _any_waiting(api)
                if not waiting:
                    return time.monotonic() - started
        if PROGRESS and seen:
            print(f"soak: {seen[-1]}", flush=True)
        time.sleep(QUEUE_POLL_SECONDS)
    sweeper = next((timer for timer in platform._timers if getattr(timer, "name", "") == "every-sweeper"), None)
    raise AssertionError(
        f"messages still {waiting} after {FINISH_TIMEOUT:.0f} s; by time: {seen[-40:]}; "
        f"queues: {queue_depths(platform)}; the sweeper's last run: {getattr(sweeper, 'last', None)}; "
        f"some of them: {waiting_sample(platform, tenant_id, WAITING)}"
    )


# The queue id Postfix's smtpd gives a message it takes, in the Received header it adds.
_POSTFIX_QUEUE_ID = re.compile(r"\(Postfix\) with \S+ id (\w+)")


def _copies(platform: LocalPlatform, addresses: list[str]) -> dict[tuple[str, str], list[str]]:
    """The Postfix queue id of every copy per (email id, recipient) in the mailboxes, read straight from
    the Maildirs. Two copies of one queue id are one SMTP transaction delivered twice by Postfix (killed
    mid-delivery by an outage, it delivers the queue file again); two queue ids are two transactions."""
    copies: dict[tuple[str, str], list[str]] = {}
    for address in addresses:
        local, domain = address.split("@")
        maildir = platform.mailu.mail_dir / domain / local / "Maildir"
        for sub in ("new", "cur"):
            for path in (maildir / sub).iterdir() if (maildir / sub).exists() else ():
                with Path(path).open("rb") as handle:
                    message = message_from_binary_file(handle)
                found = (_POSTFIX_QUEUE_ID.search(str(r)) for r in message.get_all("Received") or [])
                queue_id = next((m.group(1) for m in found if m), "")
                copies.setdefault((str(message["X-Petrel-Email-Id"]), address), []).append(queue_id)
    return copies


def _received(platform: LocalPlatform, addresses: list[str]) -> Counter[tuple[str, str]]:
    """Copies per (email id, recipient) in the mailboxes."""
    return Counter({key: len(ids) for key, ids in _copies(platform, addresses).items()})


def _wait_for_postfix(platform: LocalPlatform, expected: int, addresses: list[str], timeout: float = 120) -> None:
    """Postfix delivers into the Maildirs shortly after it answers 250."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(_received(platform, addresses).values()) >= expected and not platform.mailu.queue_ids():
            return
        time.sleep(1)


def test_soak_nothing_lost(platform: LocalPlatform, capsys: pytest.CaptureFixture[str]) -> None:
    mailu = platform.mailu
    domain = platform.config.recipient_domain  # outside recipients: relayed through Postfix
    tenant = make_tenant(platform, "Soak")
    api, sender = tenant.api, tenant.from_address
    run = uuid.uuid4().hex[:6]
    flaky_count = int(MESSAGES * FLAKY_SHARE)
    boxes = [f"soak{i}-{run}@{domain}" for i in range(MAILBOXES)]
    flaky = [f"flaky{i}-{run}@{domain}" for i in range(flaky_count)]
    gone = [f"gone{i}-{run}@{domain}" for i in range(GONE)]
    suppressed = [f"supp{i}-{run}@{domain}" for i in range(SUPPRESSED)]
    regular = MESSAGES - flaky_count - GONE - SUPPRESSED
    assert regular > 0
    mailu.add_users({address: uuid.uuid4().hex for address in boxes + flaky})
    mailu.set_recipient_rules(
        {a: "451 4.3.0 Soak: temporary failure, try again later" for a in flaky}
        | {a: f"550 5.1.1 <{a}>: Recipient address rejected: User unknown" for a in gone}
    )
    for address in suppressed:
        code, body = api.call("POST", "/v1/suppressions", {"email": address, "reason": "manual"})
        assert code == 201, body

    # Each email has PER_EMAIL distinct recipients: the special ones spread over the emails, the rest
    # regular mailboxes, each email taking a different run of them.
    special = flaky + gone + suppressed
    count = MESSAGES // PER_EMAIL
    assert count * PER_EMAIL == MESSAGES and len(special) <= count * (PER_EMAIL - 1)
    emails: list[dict[str, Any]] = []
    recipients: list[str] = []
    for n in range(count):
        mine = special[n::count]
        mine += [boxes[(n * PER_EMAIL + k) % MAILBOXES] for k in range(PER_EMAIL - len(mine))]
        recipients += mine
        emails.append({"from": sender, "to": mine, "subject": f"Soak {run} #{n}", "text": f"email {n} of the soak"})
    assert len(set(recipients) - set(boxes)) == len(special) and len(recipients) == MESSAGES
    phases = [int(len(emails) * share) for share in (0.45, 0.55)]
    chaos = Chaos(CHAOS, seed=int(run, 16))
    with api_sends(platform, chaos.send_jobs), worker_deps(platform, relay=chaos.relay, messages=chaos.messages):
        started = time.monotonic()
        _post(api, emails[: phases[0]])
        mailu.stop_smtp()  # first outage: sending continues, every attempt is refused
        _post(api, emails[phases[0] : phases[1]])
        time.sleep(3)
        mailu.start_smtp()
        _post(api, emails[phases[1] :])
        time.sleep(5)
        mailu.stop_smtp()  # second outage, with the backlog draining
        time.sleep(3)
        mailu.start_smtp()
        mailu.clear_recipient_rules(flaky)  # the 4xx ends; the flaky recipients' retries now go through
        posted = time.monotonic() - started
        waited = _wait_until_settled(platform, api, tenant.tenant_id)
    recipient_set = set(recipients)
    final = {s: _listing(api, s, recipient_set) for s in ("relayed", "bounced", "suppressed", "failed", "cancelled")}
    by_recipient = {status: Counter(m["email"] for m in found.values()) for status, found in final.items()}
    relayed = {(m["email_id"], m["email"]) for m in final["relayed"].values()}
    _wait_for_postfix(platform, len(relayed), boxes + flaky)
    queue_ids = _copies(platform, boxes + flaky)
    copies = Counter({key: len(ids) for key, ids in queue_ids.items()})
    duplicates = {key: n for key, n in copies.items() if n > 1}

    counts = {status: len(found) for status, found in final.items()}
    explained = sum(1 for m in final["relayed"].values() if m["id"] in chaos.after_data)
    with capsys.disabled():  # shown in every run, not only when the test fails
        print(
            f"\nsoak: {MESSAGES} messages posted in {posted:.0f} s, settled {waited:.0f} s later; "
            f"final {counts}; Postfix received {sum(copies.values())} copies of {len(copies)} messages, "
            f"{sum(n - 1 for n in duplicates.values())} duplicate(s); injected crashes {dict(chaos.counts)} "
            f"({len(chaos.lost_jobs)} jobs lost between store and enqueue, repaired by the sweeper; "
            f"{explained} relayed messages had a crash after DATA)"
        )

    assert sum(counts.values()) == MESSAGES, counts  # every message accounted for, once
    assert counts["relayed"] == regular + flaky_count
    assert set(by_recipient["bounced"]) == set(gone) and counts["bounced"] == GONE
    assert set(by_recipient["suppressed"]) == set(suppressed) and counts["suppressed"] == SUPPRESSED
    assert counts["failed"] == counts["cancelled"] == 0
    assert set(copies) == relayed  # Postfix holds exactly what Petrel marked relayed
    for address in gone:
        code, entry = api.call("GET", f"/v1/suppressions/{address}")
        assert code == 200 and entry["reason"] == "hard-bounce", entry
    # A duplicate is only allowed where a reply was lost after DATA (the server took the message,
    # Petrel could not know): at-least-once, with the same Message-ID on both copies.
    for email_id, address in duplicates:
        code, view = api.call("GET", f"/v1/emails/{email_id}")
        assert code == 200, view
        [message] = [m for m in view["recipients"] if m["email"] == address]
        lost = [a for a in message["attempt_log"] if a["reply"]["code"] == 0 and a["reply"]["stage"] == "data"]
        crashed = message["id"] in chaos.after_data
        # Postfix killed by an outage mid-delivery delivers the same queue file again: one transaction of
        # Petrel's (one queue id), two copies. Every queue id must still be a transaction Petrel made.
        ids = queue_ids[(email_id, address)]
        assert all(ids), f"a copy to {address} of {email_id} carries no Postfix queue id"
        redelivered_by_postfix = len(set(ids)) == 1
        assert lost or crashed or redelivered_by_postfix, (
            f"duplicate copy to {address} of {email_id} (Postfix queue ids {ids}) without a lost reply, "
            "a crash after DATA, or Postfix's own redelivery of one transaction"
        )
    if CHAOS > 0 and MESSAGES >= 1000:  # the chaos was real: every kind of crash happened
        assert set(chaos.counts) == {"before-smtp", "after-data", "after-record", "between-store-and-enqueue"}, chaos
