"""Faults end to end: the real Postfix down, slow, dropping sessions or refusing; DynamoDB throttling;
a worker crashing mid-batch; a message expiring. Every message a test sends must end in the state its
faults call for (README "Delivery guarantees"), nothing lost, statuses only forward, and every copy
Postfix took is counted by its Message-ID (relaying is at-least-once: duplicates are reported).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from local.platform import LocalPlatform
from local.tls import issue_server_certificate
from tests.e2e.support.api import Api
from tests.e2e.support.aws_state import backdate_message, dead_letters
from tests.e2e.support.injection import CrashingRelay, RecordingRelay, ThrottlingMessages, worker_deps
from tests.e2e.support.proxy import FaultProxy, wait_refused
from tests.e2e.support.tenants import Mailboxes, TestTenant, big_text, make_tenant, unique_addresses
from tests.e2e.support.tracking import SENT, Tracker, send, send_batch

pytestmark = pytest.mark.e2e


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _email(sender: str, to: str | list[str], subject: str, text: str = "x") -> dict[str, Any]:
    return {"from": sender, "to": to, "subject": subject, "text": text}


def _expect_once(tracker: Tracker, boxes: Mailboxes) -> dict[str, Any]:
    """Every recipient's mailbox holds exactly one copy of its email (by Message-ID), and nothing else."""
    expected: dict[str, set[str]] = {}
    for email_id in tracker.email_ids:
        for r in tracker.views[email_id]["recipients"]:
            expected.setdefault(r["email"], set()).add(tracker.header_id(email_id))
    counts = boxes.settle(expected)
    for address, ids in expected.items():
        assert counts[address] == dict.fromkeys(ids, 1), f"{address}: copies by Message-ID {dict(counts[address])}"
    return counts


# --------------------------------------------------------------------------- the server down, then back


def test_server_down_defers_everything_then_relays_each_once(platform: LocalPlatform, api: Api) -> None:
    addresses = unique_addresses(platform, "down", 5)
    boxes = Mailboxes(platform.mailu, addresses)
    tag = _tag()
    emails = [_email(platform.info["from_address"], addresses[i % 5], f"down {tag} #{i}") for i in range(20)]
    tracker = Tracker(api)
    platform.mailu.stop_smtp()
    try:
        wait_refused(platform.mailu.host, platform.mailu.submission_port)
        tracker.add(*send_batch(api, emails))
        deferred = tracker.wait_each(
            lambda r: r["status"] == "deferred" and r["attempts"] >= 1, 30, "every message deferred"
        )
    finally:
        platform.mailu.start_smtp()
    for r in deferred.values():
        reply = r["last_reply"]
        assert (reply["code"], reply["stage"]) == (0, "connect") and "refused" in reply["text"], r
        assert r["next_attempt_at"], r
        assert len(r["attempt_log"]) == r["attempts"], r
        assert all(a["reply"] == reply for a in r["attempt_log"]), r["attempt_log"]

    tracker.wait_all("relayed", timeout=45)
    for r in tracker.recipients():
        log = r["attempt_log"]
        assert len(log) >= 2 and log[-1]["reply"]["code"] == 250, log
        assert all((a["reply"]["code"], a["reply"]["stage"]) == (0, "connect") for a in log[:-1]), log
        assert r["next_attempt_at"] is None
    _expect_once(tracker, boxes)
    tracker.assert_forward_only()


# --------------------------------------------------------------------------- temporary refusals


def test_4xx_replies_defer_with_the_reply_then_relay_once(platform: LocalPlatform, api: Api) -> None:
    a451, a450, a452 = unique_addresses(platform, "temp", 3)
    expected = {a451: (451, "4.3.0"), a450: (450, "4.7.1"), a452: (452, "4.2.2")}
    boxes = Mailboxes(platform.mailu, expected)
    tag = _tag()
    tracker = Tracker(api)
    platform.mailu.set_recipient_rules(
        {a451: "451 4.3.0 Try again later", a450: "DEFER", a452: "452 4.2.2 Mailbox full"}
    )
    try:
        tracker.add(*send_batch(api, [_email(platform.info["from_address"], a, f"temp {tag} {a}") for a in expected]))

        def deferred_with_its_reply(r: dict[str, Any]) -> bool:
            reply = r["last_reply"] or {}
            return r["status"] == "deferred" and (reply.get("code"), reply.get("enhanced")) == expected[r["email"]]

        seen = tracker.wait_each(deferred_with_its_reply, 20, "each message deferred with its rule's reply")
    finally:
        platform.mailu.clear_recipient_rules(expected)
    for r in seen.values():
        assert r["last_reply"]["stage"] == "rcpt" and r["next_attempt_at"], r
        assert r["attempt_log"][-1]["reply"] == r["last_reply"], r

    tracker.wait_all("relayed", timeout=30)
    for r in tracker.recipients():
        codes = [(a["reply"]["code"], a["reply"]["enhanced"]) for a in r["attempt_log"]]
        assert expected[r["email"]] in codes and codes[-1][0] == 250, (r["email"], codes)
    _expect_once(tracker, boxes)
    tracker.assert_forward_only()


def test_421_mid_batch_keeps_accepted_relayed_and_defers_the_rest(platform: LocalPlatform, api: Api) -> None:
    addresses = unique_addresses(platform, "closing", 6)
    closing = addresses[2]
    boxes = Mailboxes(platform.mailu, addresses)
    tracker = Tracker(api)
    platform.mailu.set_recipient_rule(closing, "421 4.3.2 Service shutting down")
    with worker_deps(platform, relay=lambda relay: RecordingRelay(relay, addresses)) as deps:
        spy: RecordingRelay = deps.relay
        try:
            # One email: its six jobs go onto the queue together, so the worker gets them in one batch.
            tracker.add(send(api, _email(platform.info["from_address"], addresses, f"closing {_tag()}")))

            def tried(r: dict[str, Any]) -> bool:
                if r["email"] == closing:
                    return r["status"] == "deferred" and (r["last_reply"] or {}).get("code") == 421
                return r["status"] in (*SENT, "deferred") and r["attempts"] >= 1

            first = tracker.wait_each(tried, 20, "the first attempt of every recipient")
        finally:
            platform.mailu.clear_recipient_rule(closing)
        tracker.wait_all("relayed", timeout=30)
    closing_reply = next(r for r in first.values() if r["email"] == closing)["last_reply"]
    assert closing_reply["stage"] == "rcpt", closing_reply
    first_codes = {r["email"]: r["attempt_log"][0]["reply"]["code"] for r in first.values()}
    relayed_first = {a for a, code in first_codes.items() if code == 250}
    deferred_first = {a for a, code in first_codes.items() if code == 421}
    assert relayed_first | deferred_first == set(addresses), first_codes
    assert set(addresses[:2]) <= relayed_first, f"the recipients before the 421 were not relayed: {relayed_first}"
    # The server is not tried again in the batch that got the 421: the relays already under way on its
    # other sessions end as they may, no new one starts, and the batch's messages not yet relayed are
    # deferred with that reply, without an SMTP transaction of their own.
    refused = next(r for r in spy.relays if (r.recipient, r.code) == (closing, 421))
    for address in relayed_first:
        (relay,) = [r for r in spy.relays if r.recipient == address]
        assert relay.started <= refused.ended, f"{address} was first tried after the 421, in its batch"
    calls = {a: [r.code for r in spy.relays if r.recipient == a] for a in addresses}
    for address in deferred_first - {closing}:
        assert calls[address] == [250], f"{address} was tried while the server was closing: {calls[address]}"
    print(f"\n421 mid-batch: relayed before it {sorted(relayed_first)}, deferred by it {sorted(deferred_first)}")

    for r in tracker.recipients():
        codes = [a["reply"]["code"] for a in r["attempt_log"]]
        if r["email"] in relayed_first:
            assert codes == [250] and r["attempts"] == 1, (r["email"], codes)  # stayed relayed, sent once
        else:
            assert 421 in codes and codes[-1] == 250, (r["email"], codes)
        assert calls[r["email"]].count(250) == 1, (r["email"], calls[r["email"]])
    _expect_once(tracker, boxes)
    tracker.assert_forward_only()


# --------------------------------------------------------------------------- sessions that break mid-DATA


@pytest.fixture(scope="module")
def proxied(platform: LocalPlatform) -> Iterator[tuple[FaultProxy, TestTenant]]:
    """A tenant whose only SMTP server is a fault proxy in front of the stand-in's submission port."""
    with FaultProxy(platform.mailu.host, platform.mailu.submission_port) as proxy:
        yield proxy, make_tenant(platform, "Proxied", host=proxy.host, port=proxy.port)


def test_session_dropped_after_data_is_retried_and_may_duplicate(
    platform: LocalPlatform, proxied: tuple[FaultProxy, TestTenant], record_property: Any
) -> None:
    proxy, tenant = proxied
    [address] = unique_addresses(platform, "dropped", 1)
    boxes = Mailboxes(platform.mailu, [address])
    tracker = Tracker(tenant.api)
    proxy.set_mode(FaultProxy.DROP_AFTER_DATA, times=1)
    try:
        tracker.add(send(tenant.api, _email(tenant.from_address, address, f"dropped {_tag()}", big_text(40))))
        [deferred] = tracker.wait_each(lambda r: r["status"] == "deferred", 20, "the message deferred").values()
    finally:
        proxy.set_mode(FaultProxy.PASS)
    assert proxy.stats["dropped"] == 1
    reply = deferred["last_reply"]
    assert (reply["code"], reply["stage"]) == (0, "data"), reply

    tracker.wait_all("relayed", timeout=30)
    header = tracker.header_id(tracker.email_ids[0])
    counts = boxes.settle({address: {header}})
    copies = counts[address][header]
    record_property("dropped_session_copies", copies)
    print(f"\ndropped after DATA: Postfix delivered {copies} copies (at-least-once)")
    assert set(counts[address]) == {header}, "every copy carries the same Message-ID"
    assert 1 <= copies <= 2, counts
    tracker.assert_forward_only()


def test_server_stalling_mid_data_times_out_and_is_retried(
    platform: LocalPlatform, proxied: tuple[FaultProxy, TestTenant]
) -> None:
    proxy, tenant = proxied
    [address] = unique_addresses(platform, "stalled", 1)
    boxes = Mailboxes(platform.mailu, [address])
    tracker = Tracker(tenant.api)
    proxy.set_mode(FaultProxy.STALL)
    try:
        tracker.add(send(tenant.api, _email(tenant.from_address, address, f"stalled {_tag()}", big_text(40))))
        timeout = platform.config.smtp_timeout_seconds
        [deferred] = tracker.wait_each(lambda r: r["status"] == "deferred", 2 * timeout + 15, "deferral").values()
    finally:
        proxy.set_mode(FaultProxy.PASS)  # also closes the held session: Postfix never completes that DATA
    assert proxy.stats["stalled"] >= 1
    reply = deferred["last_reply"]
    assert (reply["code"], reply["stage"]) == (0, "data"), reply
    attempt = deferred["attempt_log"][-1]
    took = _seconds(attempt["finished_at"]) - _seconds(attempt["started_at"])
    print(f"\nstall mid-DATA: the attempt gave up after {took:.1f} s (SMTP timeout {timeout} s)")

    tracker.wait_all("relayed", timeout=30)
    _expect_once(tracker, boxes)  # the stalled DATA was never completed: exactly one copy
    tracker.assert_forward_only()
    assert "timed out" in reply["text"], f"a stall past the SMTP timeout is recorded as {reply['text']!r}"


def _postfix_log(platform: LocalPlatform) -> str:
    return platform.mailu.postfix_log.read_text(errors="replace")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _refusal(r: dict[str, Any]) -> tuple[str | None, int, str | None]:
    return r["bounce_class"], r["last_reply"]["code"], r["last_reply"]["enhanced"]


# --------------------------------------------------------------------------- permanent refusals


def test_550_bounces_hard_and_suppresses_554_bounces_block_only(platform: LocalPlatform, api: Api) -> None:
    gone, blocked = unique_addresses(platform, "perm", 2)
    tracker = Tracker(api)
    platform.mailu.set_recipient_rules({gone: "550 5.1.1 User unknown in virtual mailbox table", blocked: "REJECT"})
    try:
        tracker.add(
            *send_batch(api, [_email(platform.info["from_address"], a, f"perm {_tag()}") for a in (gone, blocked)])
        )
        tracker.wait_all("bounced", timeout=20)
    finally:
        platform.mailu.clear_recipient_rules([gone, blocked])
    try:
        by = tracker.by_address()
        assert _refusal(by[gone]) == ("hard", 550, "5.1.1"), by[gone]
        assert _refusal(by[blocked]) == ("block", 554, "5.7.1"), by[blocked]
        status, suppression = api.call("GET", f"/v1/suppressions/{gone}")
        assert status == 200 and suppression["reason"] == "hard-bounce", suppression
        assert suppression["message_id"] == by[gone]["id"], suppression
        status, body = api.call("GET", f"/v1/suppressions/{blocked}")
        assert status == 404, body
        tracker.assert_forward_only()

        # The address would now be accepted and delivered: a new email to it must not be sent at all.
        boxes = Mailboxes(platform.mailu, [gone])
        logged_before = _postfix_log(platform).count(f"<{gone}>")
        again = Tracker(api).add(send(api, _email(platform.info["from_address"], gone, f"again {_tag()}")))
        again.wait_all("suppressed", timeout=20)
        [r] = again.recipients()
        assert r["attempt_log"] == [] and r["last_reply"] is None, r  # (`attempts` counts the lease: 1)
        assert [e["type"] for e in again.views[again.email_ids[0]]["events"]] == ["email.queued", "email.suppressed"]
        assert boxes.copies(gone) == {}
        assert _postfix_log(platform).count(f"<{gone}>") == logged_before, "Postfix saw the suppressed address"
        again.assert_forward_only()
    finally:
        api.call("DELETE", f"/v1/suppressions/{gone}")


def test_552_too_big_bounces_as_message(platform: LocalPlatform, api: Api) -> None:
    [address] = unique_addresses(platform, "big", 1)
    boxes = Mailboxes(platform.mailu, [address])
    tracker = Tracker(api)
    old_limit = platform.mailu.message_size_limit
    platform.mailu.set_message_size_limit(20_000)
    try:
        tracker.add(send(api, _email(platform.info["from_address"], address, f"big {_tag()}", big_text(40))))
        tracker.wait_each(lambda r: r["status"] in ("bounced", "failed"), 20, "a final refusal")
    finally:
        platform.mailu.set_message_size_limit(old_limit)
    [r] = tracker.recipients()
    reply = r["last_reply"]
    assert (reply["code"], reply["enhanced"]) == (552, "5.3.4"), reply
    assert r["attempts"] == 1, r
    assert boxes.copies(address) == {}
    status, body = api.call("GET", f"/v1/suppressions/{address}")
    assert status == 404, body
    tracker.assert_forward_only()
    # Postfix refuses it at MAIL FROM (the relay declares SIZE): the enhanced code decides, not the stage.
    assert (r["status"], r["bounce_class"]) == ("bounced", "message"), r


# --------------------------------------------------------------------------- TLS that does not verify


def test_untrusted_certificate_defers_until_the_ca_bundle_is_fixed(platform: LocalPlatform) -> None:
    other_ca = issue_server_certificate(ca_common_name="Not the stand-in's CA").ca_pem
    tenant = make_tenant(platform, "Untrusted", ca_bundle=other_ca)
    [address] = unique_addresses(platform, "tls", 1)
    boxes = Mailboxes(platform.mailu, [address])
    tracker = Tracker(tenant.api)
    tracker.add(send(tenant.api, _email(tenant.from_address, address, f"tls {_tag()}")))
    [deferred] = tracker.wait_each(lambda r: r["status"] == "deferred", 20, "the message deferred").values()
    reply = deferred["last_reply"]
    assert (reply["code"], reply["stage"]) == (0, "tls") and "not trusted" in reply["text"], reply
    assert deferred["next_attempt_at"], deferred

    tenant.replace_server(ca_bundle=platform.mailu.ca_pem)
    tracker.wait_all("relayed", timeout=30)
    [r] = tracker.recipients()
    stages = [(a["reply"]["code"], a["reply"]["stage"]) for a in r["attempt_log"]]
    assert stages[0] == (0, "tls") and stages[-1] == (250, "data"), stages
    _expect_once(tracker, boxes)
    tracker.assert_forward_only()


# --------------------------------------------------------------------------- DynamoDB throttling, a crash


def test_dynamodb_throttling_loses_nothing(platform: LocalPlatform, record_property: Any) -> None:
    tenant = make_tenant(platform, "Throttled")
    addresses = unique_addresses(platform, "throttled", 12)
    boxes = Mailboxes(platform.mailu, addresses)
    tracker = Tracker(tenant.api)
    dlq_before = dead_letters(platform)
    with worker_deps(platform, messages=lambda store: ThrottlingMessages(store, tenant.tenant_id)) as deps:
        throttle: ThrottlingMessages = deps.messages
        tracker.add(*send_batch(tenant.api, [_email(tenant.from_address, a, f"throttled {_tag()}") for a in addresses]))
        tracker.wait_all("relayed", timeout=60)
    assert throttle.raised["transition"] >= 2 and throttle.raised["lease"] >= 1, throttle.raised
    assert dead_letters(platform) == dlq_before, "a job went to a dead-letter queue"

    expected = {a: {tracker.header_id(e)} for a, e in zip(addresses, tracker.email_ids, strict=True)}
    counts = boxes.settle(expected)
    duplicates = {}
    for address, email_id in zip(addresses, tracker.email_ids, strict=True):
        [r] = tracker.views[email_id]["recipients"]
        header = tracker.header_id(email_id)
        assert set(counts[address]) == {header}, f"{address}: every copy carries the same Message-ID"
        lost = throttle.lost_outcomes[r["id"]]
        # A throttled write of a `relayed` outcome is lost: the message is relayed again once its lease ends.
        assert counts[address][header] == 1 + lost, (address, dict(counts[address]), lost)
        if lost:
            duplicates[address] = counts[address][header]
    record_property("throttling_duplicates", len(duplicates))
    print(f"\nthrottling: raised {dict(throttle.raised)}; duplicates (lost status writes) {duplicates}")
    tracker.assert_forward_only()


def test_worker_crash_mid_batch_loses_nothing(platform: LocalPlatform, api: Api, record_property: Any) -> None:
    addresses = unique_addresses(platform, "crash", 10)
    boxes = Mailboxes(platform.mailu, addresses)
    tracker = Tracker(api)
    dlq_before = dead_letters(platform)
    with worker_deps(platform, relay=lambda relay: CrashingRelay(relay, addresses, after=2)) as deps:
        crash: CrashingRelay = deps.relay
        # One email with ten recipients: its ten jobs go onto the queue in one call and arrive as one batch.
        tracker.add(send(api, _email(platform.info["from_address"], addresses, f"crash {_tag()}")))
        tracker.wait_all("relayed", timeout=60)
    assert crash.crashes_left == 0, "the invocation never crashed (no batch held two of these messages)"
    assert dead_letters(platform) == dlq_before, "a job went to a dead-letter queue"
    [crashed] = crash.crashed_after

    header = tracker.header_id(tracker.email_ids[0])
    counts = boxes.settle({a: {header} for a in addresses})
    for address in addresses:
        assert set(counts[address]) == {header}, f"{address}: every copy carries the same Message-ID"
        # The crash came after Postfix took `crashed` and before its status was written: it is sent again.
        assert counts[address][header] == (2 if address == crashed else 1), (address, dict(counts[address]))
    record_property("crash_duplicates", 1)
    print(f"\ncrash mid-batch: {crashed} relayed twice (its status write was lost), the rest once")
    tracker.assert_forward_only()


# --------------------------------------------------------------------------- expiry


def test_deferred_message_past_its_maximum_age_fails_expired(platform: LocalPlatform, api: Api) -> None:
    [address] = unique_addresses(platform, "expiring", 1)
    tracker = Tracker(api)
    platform.mailu.set_recipient_rule(address, "451 4.3.0 Try again later")
    try:
        tracker.add(send(api, _email(platform.info["from_address"], address, f"expiring {_tag()}")))
        [deferred] = tracker.wait_each(lambda r: r["status"] == "deferred", 20, "the message deferred").values()
        # The tenant's maximum age is 24 h: make the message 25 h old, and let its next attempt come.
        backdate_message(platform, platform.info["tenant_id"], tracker.email_ids[0], deferred["id"], hours=25)
        tracker.wait_all("failed", timeout=30)
    finally:
        platform.mailu.clear_recipient_rule(address)
    [r] = tracker.recipients()
    assert r["failure_reason"] == "expired", r
    assert r["last_reply"]["code"] == 451, r
    events = tracker.views[tracker.email_ids[0]]["events"]
    assert events[-1]["type"] == "email.failed" and events[-1]["detail"] == "expired", events
    assert "email.deferred" in [e["type"] for e in events]
    tracker.assert_forward_only()
