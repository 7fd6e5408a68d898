"""The IMAP poller (petrel.services.poll and its handler) on in-memory fakes.

The invariant under test: every message of a folder with a UID above the cursor (same UIDVALIDITY) is
eventually queued, and the cursor never moves past a UID whose job is not on the ingest queue, however
often and wherever a run crashes. A message may be queued twice, always under the same inbound id.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from local.lambda_runtime import LocalContext
from petrel import resources
from petrel.entrypoints.imap_poller import MESSAGES_POLLED_METRIC, create_poller
from petrel.mail.raw import raw_message_id
from petrel.models.inbound import IngestJob, inbound_id
from petrel.models.records import FolderCursor, Mailbox, MailboxAfter, MailboxHealth
from petrel.observability import Telemetry, telemetry
from petrel.ports import FetchedMessage, MailboxError
from petrel.services.poll import PollDeps, poll_all, poll_mailbox
from petrel.settings import PollerSettings
from tests.fakes.clock import DEFAULT_START, FixedClock
from tests.fakes.imap import FakeFolder, FakeImapServer, FakeSession
from tests.fakes.inbound import FakeIngestQueue
from tests.fakes.infra import FakeBlobStore, FakeSecretStore
from tests.fakes.mailboxes import FakeMailboxStore

TENANT = "tn_poll"
HOST = "imap.example.com"
FAR = 1e12  # a deadline that never comes


class Crash(Exception):
    """What the tests inject: the process dies right after a step."""


class Crasher:
    """Raises Crash at the `nth` time `step` completes in the current run (armed per run)."""

    def __init__(self) -> None:
        self.step: str | None = None
        self.nth = 0
        self.hits: Counter[str] = Counter()

    def arm(self, step: str | None, nth: int = 1) -> None:
        self.step, self.nth = step, nth
        self.hits.clear()

    def __call__(self, step: str) -> None:
        self.hits[step] += 1
        if step == self.step and self.hits[step] == self.nth:
            raise Crash(f"crashed after {step} #{self.nth}")


class HookedBlobs(FakeBlobStore):
    def __init__(self, hook: Crasher) -> None:
        super().__init__()
        self.hook = hook

    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None:
        super().put(key, data, content_type)
        self.hook("put")


class HookedQueue(FakeIngestQueue):
    def __init__(self, hook: Crasher) -> None:
        super().__init__()
        self.hook = hook

    def send_ingest(self, job: IngestJob) -> None:
        super().send_ingest(job)
        self.hook("send")


class HookedMailboxes(FakeMailboxStore):
    def __init__(self, hook: Crasher) -> None:
        super().__init__()
        self.hook = hook

    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        super().save_cursor(cursor, expected=expected)
        self.hook("save")


class Ticker:
    """A monotonic clock a test moves (deadlines are measured on it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    server: FakeImapServer
    mailboxes: HookedMailboxes
    secrets: FakeSecretStore
    blobs: HookedBlobs
    queue: HookedQueue
    clock: FixedClock
    ticker: Ticker
    crash: Crasher
    batch: int = 3

    @property
    def deps(self) -> PollDeps:
        return PollDeps(
            mailboxes=self.mailboxes,
            reader=self.server,
            secrets=self.secrets,
            blobs=self.blobs,
            queue=self.queue,
            clock=self.clock,
            batch=self.batch,
            concurrency=4,
            monotonic=self.ticker,
        )

    def add_mailbox(
        self,
        mailbox_id: str = "mb_1",
        *,
        username: str = "bounces@example.com",
        password: str = "s3cret-pw",
        **fields: Any,
    ) -> Mailbox:
        values: dict[str, Any] = {"host": HOST, "port": 993, "address": username, "folders": ("INBOX",)}
        values.update(fields)
        mailbox = Mailbox(
            tenant_id=TENANT,
            mailbox_id=mailbox_id,
            username=username,
            secret_name=f"petrel/tenants/{TENANT}/imap/{mailbox_id}",
            created_at=DEFAULT_START,
            **values,
        )
        self.mailboxes.create_mailbox(mailbox)
        self.secrets.put_secret(mailbox.secret_name, password)
        account = self.server.account(mailbox.host, username, password)
        for folder in mailbox.folders:
            account.folders.setdefault(folder, FakeFolder())
        return mailbox

    def deliver(self, mailbox: Mailbox, count: int, folder: str = "INBOX") -> list[int]:
        target = self.server.folder(mailbox.host, mailbox.username, folder)
        return [target.append(message(f"{mailbox.mailbox_id} {folder} {i} {uuid.uuid4().hex}")) for i in range(count)]

    def cursor(self, mailbox: Mailbox, folder: str = "INBOX") -> FolderCursor | None:
        return self.mailboxes.get_cursor(mailbox.tenant_id, mailbox.mailbox_id, folder)

    def health(self, mailbox: Mailbox) -> MailboxHealth | None:
        return self.mailboxes.get_health(mailbox.tenant_id, mailbox.mailbox_id)

    def jobs(self, mailbox: Mailbox, folder: str = "INBOX") -> list[IngestJob]:
        return [j for j in self.queue.jobs if j.mailbox_id == mailbox.mailbox_id and j.folder == folder]


def message(subject: str, message_id: str | None = None) -> bytes:
    mid = message_id or f"<{uuid.uuid4().hex}@sender.example>"
    return (
        f"From: someone@sender.example\r\nTo: bounces@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\n\r\nbody of {subject}\r\n"
    ).encode()


@pytest.fixture
def world() -> World:
    crash = Crasher()
    server = FakeImapServer()
    server.after = crash
    return World(
        server=server,
        mailboxes=HookedMailboxes(crash),
        secrets=FakeSecretStore(),
        blobs=HookedBlobs(crash),
        queue=HookedQueue(crash),
        clock=FixedClock(),
        ticker=Ticker(),
        crash=crash,
    )


def assert_invariant(world: World, mailbox: Mailbox, folder: str = "INBOX") -> None:
    """The cursor never passes a UID whose job is not on the queue; every job's raw bytes are stored
    under the id those bytes give; a UID queued twice was queued under one id."""
    stored = world.server.folder(mailbox.host, mailbox.username, folder)
    cursor = world.cursor(mailbox, folder)
    jobs = world.jobs(mailbox, folder)
    queued = {job.uid for job in jobs}
    if cursor is not None:
        assert cursor.uidvalidity == stored.uidvalidity
        missing = [uid for uid in stored.messages if uid <= cursor.last_uid and uid not in queued]
        assert not missing, f"cursor at {cursor.last_uid} passed unqueued UIDs {missing}"
    ids_by_uid: dict[int | None, set[str]] = {}
    for job in jobs:
        ids_by_uid.setdefault(job.uid, set()).add(job.inbound_id)
        raw = world.blobs.blobs[job.raw_key]
        assert job.raw_key == resources.inbound_raw_key(TENANT, job.inbound_id)
        assert job.inbound_id == inbound_id(TENANT, raw_message_id(raw), raw)
        assert world.blobs.content_types[job.raw_key] == "message/rfc822"
        assert job.source == "imap" and job.tenant_id == TENANT
    assert all(len(ids) == 1 for ids in ids_by_uid.values())


def assert_complete(world: World, mailbox: Mailbox, folder: str = "INBOX") -> None:
    """After a clean run: every message queued at least once, the cursor at the highest UID."""
    stored = world.server.folder(mailbox.host, mailbox.username, folder)
    assert_invariant(world, mailbox, folder)
    queued = {job.uid: job for job in world.jobs(mailbox, folder)}
    for uid, raw in stored.messages.items():
        assert uid in queued, f"UID {uid} never queued"
        assert world.blobs.blobs[queued[uid].raw_key] == raw
    cursor = world.cursor(mailbox, folder)
    assert cursor is not None and cursor.last_uid == max(stored.messages, default=0)


# ------------------------------------------------------------------------------------------- basics


def test_first_poll_queues_everything_then_only_new_uids(world: World) -> None:
    mailbox = world.add_mailbox()
    world.deliver(mailbox, 7)

    first = poll_mailbox(world.deps, mailbox, FAR)
    assert (first.fetched, first.queued, first.error) == (7, 7, None)
    assert world.server.fetches == [3, 3, 1]  # in batches; the cursor saved after each
    assert world.mailboxes.cursor_writes == 3
    assert_complete(world, mailbox)

    new = world.deliver(mailbox, 2)
    second = poll_mailbox(world.deps, mailbox, FAR)
    assert second.queued == 2
    assert [job.uid for job in world.queue.jobs[-2:]] == new
    assert len(world.queue.jobs) == 9  # nothing read twice
    assert poll_mailbox(world.deps, mailbox, FAR).queued == 0
    assert_complete(world, mailbox)


def test_a_job_names_its_mailbox_folder_uid_and_time(world: World) -> None:
    mailbox = world.add_mailbox()
    raw = message("hello", "<abc@sender.example>")
    uid = world.server.folder(HOST, mailbox.username).append(raw)

    poll_mailbox(world.deps, mailbox, FAR)

    [job] = world.queue.jobs
    expected_id = inbound_id(TENANT, "<abc@sender.example>", raw)
    assert job == IngestJob(
        tenant_id=TENANT,
        inbound_id=expected_id,
        raw_key=resources.inbound_raw_key(TENANT, expected_id),
        received_at=world.clock.now(),
        source="imap",
        mailbox_id=mailbox.mailbox_id,
        folder="INBOX",
        uid=uid,
    )


def test_the_id_comes_from_the_header_block_only() -> None:
    """The poller derives ids with the push route's function (petrel.mail.raw): a Message-ID in the body
    is not the message's."""
    assert raw_message_id(b"Message-ID:  <a.b@c>\r\nSubject: x\r\n\r\nMessage-ID: <body@x>\r\n") == "<a.b@c>"
    assert raw_message_id(b"Subject: none\r\n\r\nbody") is None
    assert raw_message_id(b"\xff\xfe garbage without headers") is None


def test_an_empty_folder_remembers_its_uidvalidity(world: World) -> None:
    mailbox = world.add_mailbox()
    poll_mailbox(world.deps, mailbox, FAR)
    cursor = world.cursor(mailbox)
    assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (1, 0)
    writes = world.mailboxes.cursor_writes
    poll_mailbox(world.deps, mailbox, FAR)
    assert world.mailboxes.cursor_writes == writes  # nothing new: no write


def test_uidvalidity_change_reads_the_folder_again_from_zero(world: World) -> None:
    mailbox = world.add_mailbox()
    world.deliver(mailbox, 4)
    poll_mailbox(world.deps, mailbox, FAR)
    folder = world.server.folder(HOST, mailbox.username)
    folder.renumber(uidvalidity=777)
    world.deliver(mailbox, 1)  # UID 5 under the new value

    report = poll_mailbox(world.deps, mailbox, FAR)

    [folder_report] = report.folders
    assert folder_report.reset and folder_report.queued == 5
    cursor = world.cursor(mailbox)
    assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (777, 5)
    # the four renumbered messages were queued again under the ids they had: the ingest side dedups
    ids = Counter(job.inbound_id for job in world.queue.jobs)
    assert sorted(ids.values()) == [1, 2, 2, 2, 2]


def test_a_cursor_moved_by_another_poller_stops_the_folder(world: World) -> None:
    mailbox = world.add_mailbox()
    world.deliver(mailbox, 6)

    def race(step: str) -> None:
        if step == "fetch" and world.server.fetches == [3]:  # another poller saves first
            world.mailboxes.cursors[(TENANT, mailbox.mailbox_id, "INBOX")] = FolderCursor(
                tenant_id=TENANT,
                mailbox_id=mailbox.mailbox_id,
                folder="INBOX",
                uidvalidity=1,
                last_uid=6,
                updated_at=DEFAULT_START,
            )

    world.server.after = race
    report = poll_mailbox(world.deps, mailbox, FAR)

    [folder_report] = report.folders
    assert folder_report.conflict and folder_report.queued == 3
    assert world.server.fetches == [3]  # no second batch after losing the cursor
    assert report.error is None
    cursor = world.cursor(mailbox)
    assert cursor is not None and cursor.last_uid == 6  # the other poller's, untouched


# ------------------------------------------------------------------------------------------- after-actions


def test_leave_reads_read_only_and_sets_no_flag(world: World) -> None:
    mailbox = world.add_mailbox()
    world.deliver(mailbox, 2)
    poll_mailbox(world.deps, mailbox, FAR)
    assert world.server.selected == [("INBOX", False)]
    assert all(not flags for flags in world.server.folder(HOST, mailbox.username).flags.values())


def test_seen_marks_what_was_queued(world: World) -> None:
    mailbox = world.add_mailbox(after=MailboxAfter.SEEN)
    world.deliver(mailbox, 4)
    poll_mailbox(world.deps, mailbox, FAR)
    assert world.server.selected == [("INBOX", True)]
    assert all(flags == {"\\Seen"} for flags in world.server.folder(HOST, mailbox.username).flags.values())


def test_move_empties_the_folder_into_the_target(world: World) -> None:
    mailbox = world.add_mailbox(after=MailboxAfter.MOVE, move_to="Processed")
    world.deliver(mailbox, 5)
    poll_mailbox(world.deps, mailbox, FAR)
    assert world.server.folder(HOST, mailbox.username).messages == {}
    assert len(world.server.folder(HOST, mailbox.username, "Processed").messages) == 5
    assert len(world.queue.jobs) == 5
    cursor = world.cursor(mailbox)
    assert cursor is not None and cursor.last_uid == 5


# ------------------------------------------------------------------------------------------- crashes

STEPS = ("fetch", "put", "send", "store", "save")


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("step", STEPS)
def test_crashes_at_every_step_lose_nothing(world: World, step: str, nth: int) -> None:
    mailbox = world.add_mailbox(after=MailboxAfter.SEEN)
    world.deliver(mailbox, 20)  # 7 batches: three crashed runs never get through them all

    for _ in range(3):  # the same step crashes three runs in a row
        world.crash.arm(step, nth)
        with pytest.raises(Crash):
            poll_mailbox(world.deps, mailbox, FAR)
        assert_invariant(world, mailbox)
        health = world.health(mailbox)
        assert health is not None and health.error is not None and "Crash" in health.error

    world.crash.arm(None)
    report = poll_mailbox(world.deps, mailbox, FAR)

    assert report.error is None
    assert_complete(world, mailbox)
    assert all(flags == {"\\Seen"} for flags in world.server.folder(HOST, mailbox.username).flags.values())
    health = world.health(mailbox)
    assert health is not None and health.error is None and health.last_success_at == world.clock.now()
    assert health.error_at is not None  # the crashes' time is kept


@pytest.mark.parametrize("step", STEPS)
def test_crashes_with_a_move_lose_nothing(world: World, step: str) -> None:
    mailbox = world.add_mailbox(after=MailboxAfter.MOVE, move_to="Done")
    world.deliver(mailbox, 20)
    raws = set(world.server.folder(HOST, mailbox.username).messages.values())

    for _ in range(2):
        world.crash.arm("move" if step == "store" else step, 2)
        with pytest.raises(Crash):
            poll_mailbox(world.deps, mailbox, FAR)
        assert_invariant(world, mailbox)
    world.crash.arm(None)
    poll_mailbox(world.deps, mailbox, FAR)

    assert world.server.folder(HOST, mailbox.username).messages == {}
    assert set(world.server.folder(HOST, mailbox.username, "Done").messages.values()) == raws
    queued = {world.blobs.blobs[job.raw_key] for job in world.queue.jobs}
    assert queued == raws


def test_random_crashes_while_mail_keeps_arriving(world: World) -> None:
    rng = random.Random(9)
    inbox = world.add_mailbox(after=MailboxAfter.SEEN, folders=("INBOX", "Bounces"))
    for _ in range(60):
        world.deliver(inbox, rng.randint(0, 4), rng.choice(["INBOX", "Bounces"]))
        world.crash.arm(rng.choice([None, *STEPS, "open", "select", "search"]), rng.randint(1, 4))
        with contextlib.suppress(Crash):
            poll_mailbox(world.deps, inbox, FAR)
        for folder in inbox.folders:
            assert_invariant(world, inbox, folder)
    world.crash.arm(None)
    poll_mailbox(world.deps, inbox, FAR)
    for folder in inbox.folders:
        assert_complete(world, inbox, folder)


# ------------------------------------------------------------------------------------------- failures, health


def test_a_wrong_password_is_recorded_and_the_other_mailbox_is_polled(world: World) -> None:
    bad = world.add_mailbox("mb_bad", username="bad@example.com", password="right-password")
    world.secrets.put_secret(bad.secret_name, "wrong-password")
    good = world.add_mailbox("mb_good", username="good@example.com")
    world.deliver(good, 3)
    world.deliver(bad, 3)

    report = poll_all(world.deps, FAR)

    by_id = {m.mailbox_id: m for m in report.mailboxes}
    assert by_id["mb_good"].queued == 3 and by_id["mb_good"].error is None
    assert by_id["mb_bad"].error is not None and "login" in by_id["mb_bad"].error
    assert report.failed == 1
    bad_health = world.health(bad)
    assert bad_health is not None and bad_health.error is not None and bad_health.error_at == world.clock.now()
    assert bad_health.last_success_at is None
    good_health = world.health(good)
    assert good_health is not None and good_health.error is None and good_health.last_success_at == world.clock.now()
    assert world.cursor(bad) is None


def test_a_server_that_is_down_does_not_stop_the_others(world: World) -> None:
    down = world.add_mailbox("mb_down", username="x@example.com", host="down.example.com")
    up = world.add_mailbox("mb_up", username="y@example.com")
    world.deliver(up, 2)
    world.server.down.add("down.example.com")

    report = poll_all(world.deps, FAR)

    assert {m.mailbox_id: m.error for m in report.mailboxes} == {"mb_down": "connection refused", "mb_up": None}
    health = world.health(down)
    assert health is not None and health.error == "connection refused"


def test_health_keeps_the_last_error_time_and_the_last_success(world: World) -> None:
    mailbox = world.add_mailbox()
    poll_mailbox(world.deps, mailbox, FAR)
    succeeded = world.clock.now()
    world.clock.advance(60)
    world.server.down.add(HOST)
    poll_mailbox(world.deps, mailbox, FAR)
    failed = world.clock.now()
    health = world.health(mailbox)
    assert health == MailboxHealth(
        tenant_id=TENANT,
        mailbox_id=mailbox.mailbox_id,
        polled_at=failed,
        error="connection refused",
        error_at=failed,
        last_success_at=succeeded,
    )
    world.clock.advance(60)
    world.server.down.clear()
    poll_mailbox(world.deps, mailbox, FAR)
    health = world.health(mailbox)
    assert health is not None and health.error is None and health.error_at == failed
    assert health.last_success_at == world.clock.now()


def test_the_password_never_reaches_the_health_record(world: World) -> None:
    mailbox = world.add_mailbox(password="hunter2-secret")
    world.secrets.put_secret(mailbox.secret_name, "hunter2-wrong")
    world.server.login_error = "login refused: LOGIN bounces@example.com hunter2-wrong rejected"  # a careless server
    report = poll_all(world.deps, FAR)
    health = world.health(mailbox)
    assert health is not None and health.error is not None
    assert "hunter2" not in health.error and "hunter2" not in (report.mailboxes[0].error or "")


def test_an_unexpected_error_echoing_the_password_is_scrubbed(world: World) -> None:
    mailbox = world.add_mailbox(password="hunter2-secret")
    world.deliver(mailbox, 1)

    def boom(step: str) -> None:
        if step == "fetch":
            raise RuntimeError("library bug while holding hunter2-secret")

    world.server.after = boom
    report = poll_all(world.deps, FAR)
    [result] = report.mailboxes
    assert isinstance(result.exception, RuntimeError)
    assert result.error is not None and "hunter2" not in result.error
    health = world.health(mailbox)
    assert health is not None and health.error is not None and "hunter2" not in health.error


def test_a_missing_secret_is_an_error_of_that_mailbox(world: World) -> None:
    mailbox = world.add_mailbox()
    world.secrets.delete_secret(mailbox.secret_name)
    report = poll_all(world.deps, FAR)
    assert report.mailboxes[0].error == "the mailbox's password secret does not exist"


def test_a_refused_folder_does_not_stop_the_next_one(world: World) -> None:
    mailbox = world.add_mailbox(folders=("Missing", "INBOX"))
    world.server.accounts[(HOST, mailbox.username)].folders.pop("Missing")
    world.deliver(mailbox, 2)
    report = poll_mailbox(world.deps, mailbox, FAR)
    assert report.error is not None and report.error.startswith("Missing: ")
    assert report.queued == 2
    assert_complete(world, mailbox)


def test_disabled_mailboxes_are_skipped_and_a_shared_secret_is_read_once(world: World) -> None:
    first = world.add_mailbox("mb_1", username="a@example.com")
    world.add_mailbox("mb_2", username="b@example.com", enabled=False)
    third = world.add_mailbox("mb_3", username="a@example.com", address="c@example.com", folders=("Bounces",))
    world.mailboxes.put_mailbox(third.model_copy(update={"secret_name": first.secret_name}))
    world.secrets.reads = 0

    report = poll_all(world.deps, FAR)

    assert [m.mailbox_id for m in report.mailboxes] == ["mb_1", "mb_3"] and report.disabled == 1
    assert world.secrets.reads == 1


# ------------------------------------------------------------------------------------------- deadline


def test_no_batch_starts_after_the_deadline(world: World) -> None:
    mailbox = world.add_mailbox()
    world.deliver(mailbox, 9)

    def slow(step: str) -> None:
        if step == "fetch":
            world.ticker.now += 10

    world.server.after = slow
    report = poll_mailbox(world.deps, mailbox, deadline=15)

    assert report.truncated and report.queued == 6 and report.error is None
    cursor = world.cursor(mailbox)
    assert cursor is not None and cursor.last_uid == 6
    world.ticker.now = 0
    poll_mailbox(world.deps, mailbox, FAR)
    assert_complete(world, mailbox)
    assert len(world.queue.jobs) == 9


def test_mailboxes_whose_turn_comes_after_the_deadline_wait_for_the_next_run(world: World) -> None:
    mailbox = world.add_mailbox()
    world.ticker.now = 100
    report = poll_all(world.deps, deadline=50)
    assert [m.started for m in report.mailboxes] == [False]
    assert world.health(mailbox) is None and world.server.opened == 0


# ------------------------------------------------------------------------------------------- the handler


class Captured:
    """The poller's telemetry with its log lines in a buffer and its EMF lines in a file."""

    def __init__(self, directory: Path) -> None:
        self.stream = io.StringIO()
        self.emf = directory / "poller.emf.jsonl"
        made = telemetry("imap-poller", metrics_file=self.emf)
        logger = Logger(service=f"{made.logger.service}-{uuid.uuid4().hex[:8]}", stream=self.stream)
        self.telemetry = Telemetry(function="imap-poller", logger=logger, metrics=made.metrics)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def metrics(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for document in (json.loads(line) for line in self.emf.read_text().splitlines()):
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    values[metric["Name"]] = document[metric["Name"]]
        return values


@dataclass
class PollerParts:
    telemetry: Telemetry
    settings: PollerSettings
    poll: PollDeps


def test_the_handler_logs_one_line_per_mailbox_and_counts_failures(world: World, tmp_path: Path) -> None:
    good = world.add_mailbox("mb_good", username="good@example.com", password="pw-good-123")
    world.add_mailbox("mb_down", username="x@example.com", host="down.example.com", password="pw-down-456")
    world.server.down.add("down.example.com")
    world.deliver(good, 4)
    captured = Captured(tmp_path)
    settings = PollerSettings(tenants_table="t", bodies_bucket="b", ingest_queue_url="https://sqs.example/ingest")
    handler = create_poller(PollerParts(captured.telemetry, settings, world.deps))

    counts = handler({"source": "aws.events"}, LocalContext("petrel-dev-imap-poller"))

    assert counts == {"mailboxes": 2, "disabled": 0, "not_started": 0, "fetched": 4, "queued": 4, "failed": 1}
    lines = {line["mailbox_id"]: line for line in captured.lines()}
    assert lines["mb_good"]["level"] == "INFO" and lines["mb_good"]["queued"] == 4
    assert lines["mb_good"]["folders"][0]["folder"] == "INBOX" and lines["mb_good"]["tenant_id"] == TENANT
    assert lines["mb_down"]["level"] == "WARNING" and lines["mb_down"]["error"] == "connection refused"
    assert "pw-good" not in captured.stream.getvalue() and "pw-down" not in captured.stream.getvalue()
    metrics = captured.metrics()
    assert metrics[MESSAGES_POLLED_METRIC] == [4.0] and metrics[resources.POLL_ERRORS_METRIC] == [1.0]


def test_fake_session_refuses_writes_on_a_read_only_select(world: World) -> None:
    """The fake holds the poller to IMAP's rule: flags and moves need a read-write SELECT."""
    mailbox = world.add_mailbox()
    session = world.server.open(mailbox, "s3cret-pw")
    assert isinstance(session, FakeSession)
    session.select("INBOX", writable=False)
    world.deliver(mailbox, 1)
    with pytest.raises(MailboxError):
        session.mark_seen([1])
    assert session.fetch([1]) == [FetchedMessage(1, world.server.folder(HOST, mailbox.username).messages[1])]


def test_a_failed_after_action_keeps_the_cursor_and_counts_what_was_queued(world: World) -> None:
    mailbox = world.add_mailbox(after=MailboxAfter.SEEN)
    world.deliver(mailbox, 2)

    def refuse(step: str) -> None:
        if step == "store":
            raise MailboxError("the server refused store: NO [SERVERBUG]", stage="store", connection_lost=False)

    world.server.after = refuse
    report = poll_mailbox(world.deps, mailbox, FAR)

    assert report.queued == 2 and report.error == "INBOX: the server refused store: NO [SERVERBUG]"
    assert world.cursor(mailbox) is None  # read again (and flagged) next time
    assert_invariant(world, mailbox)
    world.server.after = world.crash
    poll_mailbox(world.deps, mailbox, FAR)
    assert_complete(world, mailbox)
    assert all(flags == {"\\Seen"} for flags in world.server.folder(HOST, mailbox.username).flags.values())
