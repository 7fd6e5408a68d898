"""Sending through the API and watching what becomes of each message: every status a poll saw, and the
invariant that statuses only move forward (README "Delivery guarantees").

`relayed` ends the send path, but not the message's life: the delivery report Postfix sends back (read by
the poller, applied by the ingest worker) moves it on to `delivered` or `bounced`. Waiting for `relayed`
therefore accepts a message that has moved on to `delivered` since, and the forward-only check allows
exactly that step (and the report's events after `email.sent`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.support.api import Api

FINAL_STATUSES = frozenset({"relayed", "delivered", "bounced", "failed", "suppressed", "cancelled"})
FINAL_EVENTS = frozenset(
    {"email.sent", "email.delivered", "email.bounced", "email.failed", "email.suppressed", "email.cancelled"}
)
# Where a relayed message may still go: the outcome a delivery report tells (DESIGN §2, "async DSN").
AFTER_RELAYED = frozenset({"delivered", "bounced"})
# Relayed, or delivered since: what a wait for "relayed" accepts.
SENT = ("relayed", "delivered")
# Events that may follow `email.sent`: what the recipient does later.
AFTER_SENT_EVENTS = frozenset({"email.opened", "email.clicked", "email.unsubscribed"})


def from_incoming_mail(event: dict[str, Any]) -> bool:
    """Whether the ingest worker added `event` (a delivery report, reply or complaint): its detail names
    the incoming message (`inbound in_...`), and its time is when that message was received, which may
    come before the send path's own `email.sent`: after a crash between Postfix's 250 and the status write,
    Postfix's report of the first copy arrives while the message is sent again."""
    return str(event.get("detail") or "").startswith("inbound ")


def reached(status: str) -> frozenset[str]:
    """The statuses that mean a message has reached `status`: itself, and for `relayed` also `delivered`."""
    return frozenset(SENT) if status == "relayed" else frozenset({status})


def final_history_ok(history: list[str]) -> bool:
    """Statuses seen from the first final one on: that one alone, or `relayed` then `delivered`/`bounced`."""
    finals = [i for i, s in enumerate(history) if s in FINAL_STATUSES]
    if not finals:
        return True
    after = history[finals[0] :]
    return len(after) == 1 or (len(after) == 2 and after[0] == "relayed" and after[1] in AFTER_RELAYED)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def send_batch(api: Api, emails: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = api.call("POST", "/v1/emails/batch", {"emails": emails})
    assert status == 202, body
    assert [r["status"] for r in body["results"]] == [202] * len(emails), body
    return [r["email"] for r in body["results"]]


def send(api: Api, email: dict[str, Any]) -> dict[str, Any]:
    status, body = api.call("POST", "/v1/emails", email)
    assert status == 202, body
    return body  # type: ignore[no-any-return]


@dataclass
class Tracker:
    """The emails one test sent, polled through the API; every status seen per message is kept."""

    api: Api
    email_ids: list[str] = field(default_factory=list)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # email id -> last view
    seen: dict[str, list[str]] = field(default_factory=dict)  # message id -> statuses in order seen
    glitches: list[tuple[int, Any]] = field(default_factory=list)  # failed GETs that a retry got past

    def add(self, *sent: dict[str, Any]) -> Tracker:
        self.email_ids += [s["id"] for s in sent]
        return self

    def _get(self, email_id: str) -> dict[str, Any]:
        """One email's view. A failed GET is tried twice more (and kept in `glitches`): a test that
        polls for a minute should not fail on one hiccup of the local stack, but must on a real error."""
        for attempt in range(3):
            status, view = self.api.call("GET", f"/v1/emails/{email_id}")
            if status == 200:
                return view  # type: ignore[no-any-return]
            self.glitches.append((status, view))
            if attempt < 2:
                time.sleep(0.3)
        raise AssertionError(f"GET /v1/emails/{email_id} failed 3 times: {self.glitches[-3:]}")

    def refresh(self) -> None:
        for email_id in self.email_ids:
            view = self._get(email_id)
            self.views[email_id] = view
            for r in view["recipients"]:
                history = self.seen.setdefault(r["id"], [])
                if not history or history[-1] != r["status"]:
                    history.append(r["status"])

    def recipients(self) -> list[dict[str, Any]]:
        return [r for e in self.email_ids for r in self.views[e]["recipients"]]

    def by_address(self) -> dict[str, dict[str, Any]]:
        return {r["email"]: r for r in self.recipients()}

    def header_id(self, email_id: str) -> str:
        return str(self.views[email_id]["message_id_header"])

    def wait_each(self, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, dict[str, Any]]:
        """Poll until every message has satisfied `done` at some poll (not necessarily the same one);
        the recipient views at the moment each first did, by message id."""
        hits: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            for r in self.recipients():
                if r["id"] not in hits and done(r):
                    hits[r["id"]] = r
            if len(hits) == len(self.recipients()):
                return hits
            if time.monotonic() > deadline:
                missing = [r for r in self.recipients() if r["id"] not in hits]
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}: {len(missing)} messages not there, e.g.\n"
                    + json.dumps(missing[:2], indent=1)
                )
            time.sleep(0.25)

    def wait_all(self, status: str, timeout: float = 40.0) -> None:
        """Poll until every message has reached `status` (see `reached`) at the same time."""
        wanted = reached(status)
        self.wait_each(lambda r: r["status"] in wanted, timeout, f"every message {status}")

        def all_at_once() -> bool:
            self.refresh()
            return all(r["status"] in wanted for r in self.recipients())

        wait_until(all_at_once, timeout, f"every message {status} at once")

    def assert_forward_only(self, redriven: Iterable[str] = ()) -> None:
        """No status moved backwards: once final, a message stayed so (in what the polls saw), except
        `relayed` moving on to `delivered` or `bounced` (its delivery report); and the send path's events
        are `email.queued` (or `email.scheduled`), then non-final ones, then exactly one final event, last
        (after `email.sent` only AFTER_SENT_EVENTS). Events from incoming mail (`from_incoming_mail`) are
        checked apart: they are about a relayed copy, so only a message with `email.sent` has them.

        A message in `redriven` (ids) was reopened by `petrel dlq redrive` after the worker ended it
        `failed`/`worker-error`: its life restarts at an `email.queued` event with detail `redriven`,
        and each life before that ended `email.failed`."""
        self.refresh()
        reopened = set(redriven)
        if self.glitches:
            print(f"\n(GET /v1/emails failed and was retried: {self.glitches})")
        for message_id, history in self.seen.items():
            if message_id in reopened:
                assert history[-1] in FINAL_STATUSES, f"{message_id} did not end final: {history}"
                continue
            assert final_history_ok(history), f"{message_id} went back from final: {history}"
        for email_id in self.email_ids:
            view = self.views[email_id]
            for r in view["recipients"]:
                events = [e for e in view["events"] if e["message_id"] == r["id"]]
                starts = [
                    i
                    for i, e in enumerate(events)
                    if i == 0 or (e["type"] == "email.queued" and e.get("detail") == "redriven")
                ]
                assert len(starts) == 1 or r["id"] in reopened, f"{r['email']} reopened without a redrive: {events}"
                lives = [events[a:b] for a, b in zip(starts, [*starts[1:], len(events)], strict=True)]
                kinds_all = [e["type"] for e in events]
                reported = [e for e in events if from_incoming_mail(e)]
                assert not reported or "email.sent" in kinds_all, (
                    f"{r['email']}: mail about an unsent copy: {kinds_all}"
                )
                for number, whole_life in enumerate(lives):
                    life = [e for e in whole_life if not from_incoming_mail(e)]
                    kinds = [e["type"] for e in life]
                    assert kinds and kinds[0] in ("email.queued", "email.scheduled"), (r["email"], kinds)
                    ends = [i for i, k in enumerate(kinds) if k in FINAL_EVENTS]
                    assert ends, f"{r['email']}: no final event: {kinds}"
                    late = kinds[ends[0] + 1 :]
                    allowed_late = AFTER_SENT_EVENTS if kinds[ends[0]] == "email.sent" else frozenset()
                    assert set(late) <= allowed_late, f"{r['email']}: one final event, last: {kinds}"
                    kinds = kinds[: ends[0] + 1]  # the send path's own events
                    if number < len(lives) - 1:
                        assert life[-1]["type"] == "email.failed", f"{r['email']}: a redrive reopens a failure: {kinds}"
                    if "email.sent" in kinds and "email.deferred" in kinds:
                        last_deferral = max(i for i, k in enumerate(kinds) if k == "email.deferred")
                        assert kinds.index("email.sent") > last_deferral
