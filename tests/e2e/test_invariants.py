"""The invariant end to end (README "Delivery guarantees"): at every moment each non-final message has
exactly one way forward (a job on a queue, a schedule, a live lease, or a DLQ entry an alarm reports),
so every accepted message ends in a known state, whatever crashes and however often.

Against the local stack (real Postfix + Dovecot, moto, the same handlers): the same job crashing 1, 2, 3
and 6 times at every step of the worker; a body deleted from S3; a tarpit SMTP server that trickles its
greeting; the API killed between storing and enqueuing (the sweeper repairs it); the largest scheduled
batch (accepted, its time printed beside API Gateway's 29 s, replayed byte for byte, cancelled completely).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.platform import LocalPlatform
from petrel.ports import MessageKey
from tests.e2e.support.api import Api
from tests.e2e.support.aws_state import aws_client, dead_letters, redrive
from tests.e2e.support.injection import api_sends, worker_deps
from tests.e2e.support.tenants import Mailboxes, big_text, make_tenant, unique_addresses
from tests.e2e.support.tracking import SENT, Tracker, wait_until
from tests.integration.tarpit import Tarpit

pytestmark = pytest.mark.e2e


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


# --------------------------------------------------------------------------- crashes at every step


class InjectedCrash(Exception):
    """An unexpected exception in one job's handling (a bug, an AWS error, a dependency down)."""


STEPS = ("lease", "before-smtp", "after-data", "after-record")


class StepCrashes:
    """Crashes the handling of chosen messages at chosen steps, one planned step per receive of their job.

    `plan[message id]` lists the steps at which successive handlings of that message's jobs crash:
    `lease` (before the lease is written), `before-smtp` (leased, nothing sent), `after-data` (the server
    took the message, its status is not written), `after-record` (the outcome is written, the job is not
    acknowledged). Wraps the worker's MessageStore and SmtpRelay; `crashed` counts what was raised.
    """

    def __init__(self, plan: dict[str, list[str]]) -> None:
        assert all(step in STEPS for steps in plan.values() for step in steps), plan
        self._plan = {message_id: list(steps) for message_id, steps in plan.items()}
        self._lock = threading.Lock()
        self.crashed: Counter[str] = Counter()  # message id -> crashes raised
        self.after_data: Counter[str] = Counter()  # message id -> crashes after the server took it

    def _take(self, message_id: str, step: str) -> bool:
        with self._lock:
            steps = self._plan.get(message_id)
            if not steps or steps[0] != step:
                return False
            steps.pop(0)
            self.crashed[message_id] += 1
            if step == "after-data":
                self.after_data[message_id] += 1
            return True

    def messages(self, inner: Any) -> Any:
        crashes = self

        class Store:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def lease(self, key: MessageKey, **kwargs: Any) -> Any:
                if crashes._take(key.message_id, "lease"):
                    raise InjectedCrash(f"crash before leasing {key.message_id}")
                return inner.lease(key, **kwargs)

            def transition(self, key: MessageKey, **kwargs: Any) -> None:
                inner.transition(key, **kwargs)  # raises when it did not apply
                if crashes._take(key.message_id, "after-record"):
                    raise InjectedCrash(f"crash after recording {key.message_id}")

        return Store()

    def relay(self, inner: Any) -> Any:
        crashes = self

        class Relay:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
                if crashes._take(envelope.envid, "before-smtp"):
                    raise InjectedCrash(f"crash before relaying {envelope.envid}")
                reply = inner.relay(server, password, envelope, data, **kwargs)
                if reply.is_positive and crashes._take(envelope.envid, "after-data"):
                    raise InjectedCrash(f"crash after DATA of {envelope.envid}")
                return reply

        return Relay()


def _delete_body(platform: LocalPlatform, tenant_id: str, email_id: str) -> dict[str, bytes]:
    """Delete an email's stored body from S3; returns what was deleted, to put back later."""
    s3 = aws_client(platform, "s3")
    bucket = platform.info["aws"]["bucket"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="bodies/").get("Contents", [])]
    mine = [k for k in keys if email_id in k and tenant_id in k]
    assert mine, f"no stored body for {email_id} among {len(keys)} objects"
    deleted = {}
    for key in mine:
        deleted[key] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.delete_object(Bucket=bucket, Key=key)
    return deleted


def _restore(platform: LocalPlatform, objects: dict[str, bytes]) -> None:
    s3 = aws_client(platform, "s3")
    for key, data in objects.items():
        s3.put_object(Bucket=platform.info["aws"]["bucket"], Key=key, Body=data)


def test_the_same_job_crashing_1_2_3_and_6_times_ends_known(platform: LocalPlatform, record_property: Any) -> None:
    """Each message's job crashes N times in a row, cycling through every step; one has its body deleted.

    Fewer crashes than the queue's receive count: the message is relayed (twice when a crash fell after
    DATA: at-least-once). More: the job lands in the DLQ and the message says so (`failed`,
    `worker-error`); redriven once the cause is gone, it is relayed. A body deleted from S3 never comes
    back: the message fails and says why. Nothing stays `sending` or `queued`.
    """
    tenant = make_tenant(platform, "Crashes")
    counts = {"once": 1, "twice": 2, "thrice": 3, "six": 6}
    addresses = dict(zip(counts, unique_addresses(platform, "crash", len(counts)), strict=True))
    [bodiless] = unique_addresses(platform, "bodiless", 1)
    boxes = Mailboxes(platform.mailu, [*addresses.values(), bodiless])
    dlq_before = dead_letters(platform)
    tracker = Tracker(tenant.api)
    # send_at a few seconds ahead: the plan is keyed by message id, known once the API answered.
    emails = [
        {"from": tenant.from_address, "to": a, "subject": f"crash {name} {_tag()}", "text": "x", "send_at": _soon(4)}
        for name, a in addresses.items()
    ]
    emails.append(
        {"from": tenant.from_address, "to": bodiless, "subject": f"bodiless {_tag()}", "text": big_text(200)}
        | {"send_at": _soon(4)}
    )
    status, body = tenant.api.call("POST", "/v1/emails/batch", {"emails": emails})
    assert status == 202, body
    sent = [r["email"] for r in body["results"]]
    tracker.add(*sent)
    ids = {r["email"]: r["id"] for e in sent for r in e["recipients"]}
    deleted = _delete_body(platform, tenant.tenant_id, sent[-1]["id"])
    plan = {ids[addresses[name]]: [STEPS[i % len(STEPS)] for i in range(n)] for name, n in counts.items()}
    # "after-record" ends a message: keep it last in a plan, where it still leaves the job unacknowledged.
    plan[ids[addresses["thrice"]]] = ["lease", "after-data", "after-record"]
    plan[ids[addresses["six"]]] = ["lease", "before-smtp", "after-data", "lease", "before-smtp", "after-data"]
    crashes = StepCrashes(plan)
    receive_limit = platform.config.max_receive_count
    with worker_deps(platform, messages=crashes.messages, relay=crashes.relay):
        visibility = platform.config.visibility_timeout
        tracker.wait_each(
            lambda r: r["status"] in (*SENT, "failed"), (receive_limit + 2) * visibility + 60, "every message final"
        )
        by = tracker.by_address()
        six = by[addresses["six"]]
        assert (six["status"], six["failure_reason"]) == ("failed", "worker-error"), six
        lost = by[bodiless]
        assert lost["status"] == "failed" and lost["failure_reason"] in ("worker-error", "body-missing"), lost
        for name in ("once", "twice", "thrice"):
            assert by[addresses[name]]["status"] in SENT, by[addresses[name]]

        # The jobs that failed more often than the receive count go to the DLQ (on the receive after the
        # last one, once their visibility timeout ends), where an alarm reports them.
        def dead_lettered() -> bool:
            after = dead_letters(platform)
            return after["send-transactional"] - dlq_before["send-transactional"] >= 2

        wait_until(dead_lettered, 2 * visibility + 10, "the two poison jobs in the DLQ")

        # Fix the causes (the sixth crash is the last one planned; the body is put back), then redrive:
        # both messages are reopened and relayed.
        _restore(platform, deleted)
        report = redrive(platform, "send-transactional")
        record_property("redriven", str(report))
        tracker.wait_all("relayed", timeout=3 * visibility + 30)
    assert crashes.crashed[ids[addresses["six"]]] == 6, crashes.crashed
    for name in counts:
        assert crashes.crashed[ids[addresses[name]]] == len(plan[ids[addresses[name]]]), (name, crashes.crashed)
    header = {r["email"]: tracker.header_id(e["id"]) for e in sent for r in e["recipients"]}
    copies = boxes.settle({a: {header[a]} for a in [*addresses.values(), bodiless]})
    for name, address in addresses.items():
        expected = 1 + crashes.after_data[ids[address]]
        assert copies[address][header[address]] == expected, (name, dict(copies[address]), expected)
    assert copies[bodiless][header[bodiless]] == 1, dict(copies[bodiless])
    for address in (addresses["six"], bodiless):
        events = [e["detail"] for e in tracker.views[_email_of(sent, address)]["events"] if e["type"] == "email.queued"]
        assert "redriven" in events, events
    tracker.assert_forward_only(redriven=[ids[addresses["six"]], ids[bodiless]])
    print(f"\ncrashes per message: {dict(crashes.crashed)}; after DATA (duplicates): {dict(crashes.after_data)}")


def _email_of(sent: list[dict[str, Any]], address: str) -> str:
    return next(e["id"] for e in sent if any(r["email"] == address for r in e["recipients"]))


# --------------------------------------------------------------------------- a tarpit server


def test_a_tarpit_server_holds_a_transaction_no_longer_than_its_deadline(platform: LocalPlatform, api: Api) -> None:
    """A tenant whose MailU trickles its greeting: its message is deferred once the transaction's deadline
    passes, and the other tenant's messages in the same batch are relayed, not held hostage."""
    deadline = platform.config.smtp_transaction_seconds
    # In front of the stand-in's real submission port: its greeting arrives one byte every 0.5 s.
    with Tarpit(platform.mailu.submission_port, interval=0.5) as tarpit:
        slow = make_tenant(platform, "Tarpit", host="127.0.0.1", port=tarpit.port)
        [stuck] = unique_addresses(platform, "tarpit", 1)
        others = unique_addresses(platform, "bystander", 4)
        boxes = Mailboxes(platform.mailu, others)
        slow_tracker, tracker = Tracker(slow.api), Tracker(api)
        dlq_before = dead_letters(platform)
        started = time.monotonic()
        status, first = slow.api.call(
            "POST", "/v1/emails", {"from": slow.from_address, "to": stuck, "subject": "t", "text": "x"}
        )
        assert status == 202, first
        slow_tracker.add(first)
        status, second = api.call(
            "POST",
            "/v1/emails",
            {"from": platform.info["from_address"], "to": others, "subject": f"by {_tag()}", "text": "x"},
        )
        assert status == 202, second
        tracker.add(second)
        tracker.wait_all("relayed", timeout=deadline + 20)
        relayed_after = time.monotonic() - started
        [deferred] = slow_tracker.wait_each(
            lambda r: r["status"] == "deferred", deadline + 20, "the tarpit's message deferred"
        ).values()
        attempt = deferred["attempt_log"][0]
        took = (
            datetime.fromisoformat(attempt["finished_at"]).timestamp()
            - datetime.fromisoformat(attempt["started_at"]).timestamp()
        )
        assert deferred["last_reply"]["code"] == 0 and "deadline" in deferred["last_reply"]["text"], deferred
        assert tarpit.connections >= 1
        assert dead_letters(platform) == dlq_before
        # Stop the retries: the tenant's message is cancelled while the tarpit still holds it up.
        slow.api.call("DELETE", f"/v1/emails/{first['id']}")
    header = tracker.header_id(second["id"])
    copies = boxes.settle({a: {header} for a in others})
    assert all(copies[a][header] == 1 for a in others), copies
    print(f"\ntarpit: deferred after {took:.1f} s (deadline {deadline} s); bystanders relayed in {relayed_after:.1f} s")


# --------------------------------------------------------------------------- the API killed mid-request


class ApiKilled(BaseException):
    """The API's process dies (not an exception a handler could map): the client gets no answer."""


@contextlib.contextmanager
def api_killed_before_enqueue(platform: LocalPlatform) -> Iterator[list[int]]:
    """The API function dies after storing an email and before any of its jobs reach the queue."""
    calls: list[int] = []

    def killing(send_jobs: Any) -> Any:
        def killed(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            raise ApiKilled("the API function was killed between store and enqueue")

        return killed

    with api_sends(platform, killing):
        yield calls


def _raw_call(api: Api, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(api.base + path, data=json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {api.key}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    return urllib.request.urlopen(request, timeout=60)


def test_api_killed_between_store_and_enqueue_is_repaired_by_the_sweeper(platform: LocalPlatform) -> None:
    tenant = make_tenant(platform, "Killed")
    addresses = unique_addresses(platform, "orphan", 3)
    boxes = Mailboxes(platform.mailu, addresses)
    subject = f"orphan {_tag()}"
    with api_killed_before_enqueue(platform) as calls:
        with pytest.raises((http.client.HTTPException, urllib.error.URLError, ConnectionError)):
            _raw_call(
                tenant.api,
                "POST",
                "/v1/emails",
                {"from": tenant.from_address, "to": addresses, "subject": subject, "text": "x"},
            )
    assert calls, "the API never reached the enqueue step"

    def orphans() -> list[dict[str, Any]]:
        status, page = tenant.api.call("GET", "/v1/emails?limit=100")
        assert status == 200, page
        return [m for m in page["data"] if m["email"] in addresses]

    stored = wait_until(lambda: len(orphans()) == 3 and orphans(), 10, "the stored messages")
    assert {m["status"] for m in stored} == {"queued"}, stored
    email_id = stored[0]["email_id"]
    tracker = Tracker(tenant.api).add({"id": email_id})
    grace = platform.config.sweep_grace_seconds + platform.config.sweep_interval_seconds
    tracker.wait_all("relayed", timeout=grace + 60)
    header = tracker.header_id(email_id)
    copies = boxes.settle({a: {header} for a in addresses})
    assert all(copies[a][header] == 1 for a in addresses), copies
    view = tracker.views[email_id]
    assert all(e["type"] != "email.failed" for e in view["events"]), view["events"]
    tracker.assert_forward_only()


# --------------------------------------------------------------------------- the largest scheduled batch


def test_largest_scheduled_batch_is_accepted_replays_identically_and_cancels_completely(
    platform: LocalPlatform, api: Api, record_property: Any
) -> None:
    from petrel.models.api import MAX_BATCH, MAX_RECIPIENTS

    tag = _tag()
    send_at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    emails = [
        {
            "from": platform.info["from_address"],
            "to": [f"big-{tag}-{n}-{k}@example.net" for k in range(MAX_RECIPIENTS)],
            "subject": f"Largest batch {tag} #{n}",
            "text": "scheduled two days ahead",
            "send_at": send_at,
        }
        for n in range(MAX_BATCH)
    ]
    key = f"largest-{tag}"
    started = time.monotonic()
    with _raw_call(api, "POST", "/v1/emails/batch", {"emails": emails}, {"Idempotency-Key": key}) as response:
        took = time.monotonic() - started
        first_status, first_body = response.status, response.read()
        assert response.headers.get("Idempotent-Replayed") in (None, "false")
    record_property("largest_scheduled_batch_seconds", f"{took:.1f}")
    print(f"\nlargest scheduled batch ({MAX_BATCH} x {MAX_RECIPIENTS}): accepted in {took:.1f} s")
    assert first_status == 202
    results = json.loads(first_body)["results"]
    assert [r["status"] for r in results] == [202] * MAX_BATCH
    assert all(r["status"] == "scheduled" for item in results for r in item["email"]["recipients"])

    # One schedule per email, not per recipient.
    scheduler = aws_client(platform, "scheduler")
    group = platform.info["aws"]["schedules"]["group"]
    email_ids = [item["email"]["id"] for item in results]
    names = _schedule_names(scheduler, group)
    mine = {n for n in names if any(n.startswith(e) for e in email_ids)}
    assert len(mine) == MAX_BATCH, f"{len(mine)} schedules for {MAX_BATCH} emails"

    with _raw_call(api, "POST", "/v1/emails/batch", {"emails": emails}, {"Idempotency-Key": key}) as replay:
        assert replay.status == first_status
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.read() == first_body, "the replay is not byte-identical"

    cancelled = 0
    for email_id in email_ids:
        status, body = api.call("DELETE", f"/v1/emails/{email_id}")
        assert status == 200, body
        assert body["not_cancelled"] == [], body
        cancelled += len(body["cancelled"])
    assert cancelled == MAX_BATCH * MAX_RECIPIENTS
    names = _schedule_names(scheduler, group)
    assert not {n for n in names if any(n.startswith(e) for e in email_ids)}, "schedules left after cancel"


def _schedule_names(scheduler: Any, group: str) -> set[str]:
    names: set[str] = set()
    kwargs: dict[str, Any] = {"GroupName": group, "MaxResults": 100}
    while True:
        page = scheduler.list_schedules(**kwargs)
        names |= {s["Name"] for s in page.get("Schedules", [])}
        if not page.get("NextToken"):
            return names
        kwargs["NextToken"] = page["NextToken"]
