"""The IMAP poller against a REAL Dovecot (the MailU stand-in, local/mailu): the imapclient adapter, the
poll service and the handler built by its container on moto (DynamoDB, S3, SQS, Secrets Manager).

Each test reads its own account, so they share one stand-in. Mail is put in with IMAP APPEND, or, for
the 1,000-message folder, written straight into the account's Maildir (what Postfix's virtual(8) does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from imapclient import IMAPClient
from moto import mock_aws

from local.lambda_runtime import LocalContext
from local.mailu import MailuStandIn
from local.mailu.config import MailIds
from local.provision import provision
from petrel import resources
from petrel.adapters.imap import ImapClientReader
from petrel.container.base import AwsClients
from petrel.container.poller import PollerContainer
from petrel.entrypoints.imap_poller import create_poller
from petrel.mail.raw import raw_message_id
from petrel.models.inbound import IngestJob, inbound_id
from petrel.models.records import FolderCursor, Mailbox, MailboxAfter, MailboxHealth, SmtpSecurity
from petrel.ports import MailboxError
from petrel.services.poll import PollDeps, poll_mailbox
from petrel.settings import PollerSettings
from tests.fakes.clock import FixedClock
from tests.fakes.inbound import FakeIngestQueue
from tests.fakes.infra import FakeBlobStore, FakeSecretStore
from tests.fakes.mailboxes import FakeMailboxStore
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.standin import running_standin

pytestmark = pytest.mark.integration

DOMAIN = "petrel.test"
TENANT = "tn_imap"
USERS = [f"{name}@{DOMAIN}" for name in ("incr", "crash", "renumber", "bulk", "wrong", "twin", "seen", "move", "tls")]
FAR = 1e12


def password_of(address: str) -> str:
    return f"pw-{address.split('@', maxsplit=1)[0]}-7f3a"


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    with running_standin("petrel-imap-poller-", {user: password_of(user) for user in USERS}, DOMAIN) as standin:
        yield standin


def raw_message(subject: str) -> bytes:
    return (
        f"From: someone@sender.example\r\nTo: box@{DOMAIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@sender.example>\r\n\r\nbody of {subject}\r\n"
    ).encode()


def imap(mailu: MailuStandIn, user: str) -> IMAPClient:
    client = IMAPClient(mailu.host, port=mailu.imaps_port, ssl_context=mailu.ssl_context(), timeout=10)
    client.login(user, password_of(user))
    return client


def append(mailu: MailuStandIn, user: str, count: int, folder: str = "INBOX") -> list[bytes]:
    raws = [raw_message(f"{folder} {i} {uuid.uuid4().hex}") for i in range(count)]
    with imap(mailu, user) as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in raws:
            client.append(folder, raw)
    return raws


def write_maildir(mailu: MailuStandIn, user: str, count: int) -> list[bytes]:
    """Deliver like virtual(8): one file per message in Maildir/new, owned by the mail user."""
    local, domain = user.split("@")
    new = mailu.mail_dir / domain / local / "Maildir" / "new"
    mail = MailIds.lookup()
    raws = [raw_message(f"bulk {i}") for i in range(count)]
    stamp = int(time.time())
    for i, raw in enumerate(raws):
        path = new / f"{stamp}.M{i}P{os.getpid()}.petrel-test"
        path.write_bytes(raw)
        os.chown(path, mail.uid, mail.gid)
    return raws


def mailbox(mailu: MailuStandIn, user: str, **fields: Any) -> Mailbox:
    values: dict[str, Any] = {
        "host": mailu.host,
        "port": mailu.imaps_port,
        "security": SmtpSecurity.TLS,
        "ca_bundle": mailu.ca_pem,
        "folders": ("INBOX",),
    }
    values.update(fields)
    return Mailbox(
        tenant_id=TENANT,
        mailbox_id=f"mb_{user.split('@', maxsplit=1)[0]}",
        address=user,
        username=user,
        secret_name=f"petrel-test/tenants/{TENANT}/imap/{user.split('@', maxsplit=1)[0]}",
        created_at=FixedClock().now(),
        **values,
    )


# ----------------------------------------------------------------------------- the container on moto


@dataclass
class Poller:
    container: PollerContainer
    sqs: Any
    queue_url: str

    @property
    def deps(self) -> PollDeps:
        return self.container.poll

    def register(self, box: Mailbox, password: str) -> Mailbox:
        self.deps.mailboxes.create_mailbox(box)
        self.deps.secrets.put_secret(box.secret_name, password)
        return box

    def run(self) -> dict[str, Any]:
        handler = create_poller(self.container)
        result: dict[str, Any] = handler({"source": "aws.events"}, LocalContext("petrel-test-imap-poller"))
        return result

    def jobs(self) -> list[IngestJob]:
        """Every job on the ingest queue, taken off it."""
        jobs: list[IngestJob] = []
        while True:
            out = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = out.get("Messages", [])
            if not messages:
                return jobs
            for item in messages:
                jobs.append(IngestJob.model_validate(json.loads(item["Body"])))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=item["ReceiptHandle"])

    def raw(self, job: IngestJob) -> bytes:
        return self.deps.blobs.get(job.raw_key)

    def cursor(self, box: Mailbox, folder: str = "INBOX") -> FolderCursor | None:
        return self.deps.mailboxes.get_cursor(box.tenant_id, box.mailbox_id, folder)

    def health(self, box: Mailbox) -> MailboxHealth | None:
        return self.deps.mailboxes.get_health(box.tenant_id, box.mailbox_id)


@pytest.fixture
def poller(monkeypatch: pytest.MonkeyPatch, boto_session: boto3.session.Session) -> Iterator[Poller]:
    clean_aws_environment(monkeypatch)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        aws = {name: boto_session.client(name) for name in ("dynamodb", "sqs", "s3", "scheduler", "iam")}
        made = provision(
            aws["dynamodb"],
            aws["sqs"],
            aws["s3"],
            prefix="petrel-poll",
            visibility_timeout=30,
            max_receive_count=3,
            scheduler=aws["scheduler"],
            iam=aws["iam"],
        )
        settings = PollerSettings.model_validate({**made.environment(), resources.IMAP_TIMEOUT_ENV: "10"})
        container = PollerContainer(settings, clients=AwsClients(boto_session))
        yield Poller(container, aws["sqs"], made.queue_urls[resources.INGEST.name])


def test_incremental_polls_queue_only_new_uids(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"incr@{DOMAIN}"
    box = poller.register(mailbox(mailu, user), password_of(user))
    first = append(mailu, user, 3)

    assert poller.run()["queued"] == 3
    jobs = poller.jobs()
    assert sorted(poller.raw(job) for job in jobs) == sorted(first)
    for job in jobs:
        raw = poller.raw(job)
        assert job.inbound_id == inbound_id(TENANT, raw_message_id(raw), raw)
        assert (job.source, job.mailbox_id, job.folder) == ("imap", box.mailbox_id, "INBOX")
    cursor = poller.cursor(box)
    assert cursor is not None and cursor.last_uid == max(job.uid or 0 for job in jobs)

    # Nothing new: Dovecot answers `UID 4:*` with the last message (UID 3); it must not be queued again.
    assert poller.run()["queued"] == 0
    assert poller.jobs() == []

    second = append(mailu, user, 2)
    assert poller.run()["queued"] == 2
    assert sorted(poller.raw(job) for job in poller.jobs()) == sorted(second)
    health = poller.health(box)
    assert health is not None and health.error is None and health.last_success_at is not None


class Crash(Exception):
    pass


class CrashBeforeCommit:
    """The mailbox store of a poller that dies after queueing a batch, before its cursor is saved."""

    def __init__(self, real: Any, crashes: int) -> None:
        self._real = real
        self.crashes = crashes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        if self.crashes:
            self.crashes -= 1
            raise Crash("died before committing the UID")
        self._real.save_cursor(cursor, expected=expected)


def test_a_crash_before_the_cursor_is_saved_loses_nothing(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"crash@{DOMAIN}"
    box = poller.register(mailbox(mailu, user, after=MailboxAfter.SEEN), password_of(user))
    raws = append(mailu, user, 5)
    crashing = dataclasses.replace(poller.deps, mailboxes=CrashBeforeCommit(poller.deps.mailboxes, crashes=2))

    for _ in range(2):
        with pytest.raises(Crash):
            poll_mailbox(crashing, box, FAR)
        assert poller.cursor(box) is None  # never moved past what is queued
    report = poll_mailbox(crashing, box, FAR)

    assert report.error is None and report.queued == 5
    jobs = poller.jobs()
    assert len(jobs) == 15  # each message three times: two crashed runs and the clean one
    by_uid: dict[int | None, set[str]] = {}
    for job in jobs:
        by_uid.setdefault(job.uid, set()).add(job.inbound_id)
    assert all(len(ids) == 1 for ids in by_uid.values())  # duplicates carry the same inbound id
    assert {poller.raw(job) for job in jobs} == set(raws)
    cursor = poller.cursor(box)
    assert cursor is not None and cursor.last_uid == max(uid for uid in by_uid if uid is not None)
    health = poller.health(box)
    assert health is not None and health.error is None and health.error_at is not None  # the crashes, kept


def test_a_new_uidvalidity_reads_the_folder_again(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"renumber@{DOMAIN}"
    box = poller.register(mailbox(mailu, user, folders=("Reports",)), password_of(user))
    append(mailu, user, 2, "Reports")
    assert poller.run()["queued"] == 2
    before = poller.cursor(box, "Reports")
    poller.jobs()

    with imap(mailu, user) as client:  # the folder is deleted and made again: Dovecot gives a new UIDVALIDITY
        client.delete_folder("Reports")
        client.create_folder("Reports")
    again = append(mailu, user, 3, "Reports")

    assert poller.run()["queued"] == 3
    after = poller.cursor(box, "Reports")
    assert before is not None and after is not None
    assert after.uidvalidity != before.uidvalidity and after.last_uid == 3
    assert sorted(poller.raw(job) for job in poller.jobs()) == sorted(again)


def test_a_thousand_messages_are_queued_once_in_batches(mailu: MailuStandIn) -> None:
    user = f"bulk@{DOMAIN}"
    raws = write_maildir(mailu, user, 1000)
    box = mailbox(mailu, user)
    store, secrets, blobs, queue = FakeMailboxStore(), FakeSecretStore(), FakeBlobStore(), FakeIngestQueue()
    store.create_mailbox(box)
    secrets.put_secret(box.secret_name, password_of(user))
    deps = PollDeps(
        mailboxes=store,
        reader=ImapClientReader(timeout=10),
        secrets=secrets,
        blobs=blobs,
        queue=queue,
        clock=FixedClock(),
        batch=50,
    )

    started = time.perf_counter()
    report = poll_mailbox(deps, box, FAR)
    seconds = time.perf_counter() - started

    assert report.error is None and report.queued == 1000
    assert Counter(job.uid for job in queue.jobs) == Counter(range(1, 1001))
    assert {blobs.blobs[job.raw_key] for job in queue.jobs} == set(raws)
    assert store.cursor_writes == 20  # one per batch of 50
    cursor = store.get_cursor(TENANT, box.mailbox_id, "INBOX")
    assert cursor is not None and cursor.last_uid == 1000
    print(f"\n1,000 messages polled from Dovecot in {seconds:.2f} s")
    assert poll_mailbox(deps, box, FAR).queued == 0


def test_a_wrong_password_is_recorded_and_nothing_escapes(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"wrong@{DOMAIN}"
    box = poller.register(mailbox(mailu, user), "not-the-password-9q")
    append(mailu, user, 1)

    result = poller.run()

    assert result["failed"] == 1 and result["queued"] == 0
    health = poller.health(box)
    assert health is not None and health.error is not None and health.error.startswith("login refused")
    assert health.error == "login refused: [AUTHENTICATIONFAILED] Authentication failed."
    assert "not-the-password" not in health.error and health.last_success_at is None


def test_two_mailboxes_one_down_the_other_is_polled(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"twin@{DOMAIN}"
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = poller.register(
        mailbox(mailu, user, port=closed_port).model_copy(
            update={"mailbox_id": "mb_down", "address": f"twin-down@{DOMAIN}"}
        ),
        password_of(user),
    )
    up = poller.register(mailbox(mailu, user), password_of(user))
    append(mailu, user, 2)

    result = poller.run()

    assert result["failed"] == 1 and result["queued"] == 2
    down_health, up_health = poller.health(down), poller.health(up)
    assert down_health is not None and down_health.error == "connection refused"
    assert up_health is not None and up_health.error is None


def test_seen_sets_the_flag_on_the_server(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"seen@{DOMAIN}"
    poller.register(mailbox(mailu, user, after=MailboxAfter.SEEN), password_of(user))
    append(mailu, user, 3)
    with imap(mailu, user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["UNSEEN"]) != []

    assert poller.run()["queued"] == 3

    with imap(mailu, user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["UNSEEN"]) == []
        assert len(client.search(["SEEN"])) == 3


def test_move_takes_the_messages_to_the_folder_on_the_server(mailu: MailuStandIn, poller: Poller) -> None:
    user = f"move@{DOMAIN}"
    poller.register(mailbox(mailu, user, after=MailboxAfter.MOVE, move_to="Done"), password_of(user))
    raws = append(mailu, user, 4)

    assert poller.run()["queued"] == 4
    assert poller.run()["queued"] == 0  # moved away: nothing left to read

    with imap(mailu, user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == []
        client.select_folder("Done", readonly=True)
        moved = client.fetch(client.search(["ALL"]), [b"BODY.PEEK[]"])
    assert sorted(data[b"BODY[]"] for data in moved.values()) == sorted(raws)
    assert len(poller.jobs()) == 4


def test_starttls_and_certificate_verification(mailu: MailuStandIn) -> None:
    user = f"tls@{DOMAIN}"
    reader = ImapClientReader(timeout=10)
    starttls = mailbox(mailu, user, port=mailu.imap_port, security=SmtpSecurity.STARTTLS)
    session = reader.open(starttls, password_of(user))
    try:
        assert session.select("INBOX", writable=False) > 0
        assert session.uids_after(0) == []
        with pytest.raises(MailboxError) as refused:
            session.select("No such folder", writable=False)
        assert not refused.value.connection_lost  # a NO: the session goes on
        assert session.select("INBOX", writable=False) > 0
    finally:
        session.close()

    untrusted = mailbox(mailu, user, ca_bundle=None)  # the system's CAs do not know the stand-in's
    with pytest.raises(MailboxError) as caught:
        reader.open(untrusted, password_of(user))
    assert caught.value.stage == "tls" and "certificate" in str(caught.value)

    with pytest.raises(MailboxError) as plain:  # implicit TLS spoken to the plain port: a TLS failure
        reader.open(mailbox(mailu, user, port=mailu.imap_port), password_of(user))
    assert plain.value.stage == "tls"


def test_a_server_that_never_greets_gets_only_the_time_left() -> None:
    """A server that accepts and then says nothing: the greeting is awaited only until the deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        box = Mailbox(
            tenant_id=TENANT,
            mailbox_id="mb_hang",
            address=f"hang@{DOMAIN}",
            host="127.0.0.1",
            port=listener.getsockname()[1],
            security=SmtpSecurity.STARTTLS,
            username="hang",
            secret_name="hang",
            created_at=FixedClock().now(),
        )
        reader = ImapClientReader(timeout=30)
        with pytest.raises(MailboxError) as caught:
            reader.open(box, "pw", deadline=time.monotonic() + 0.5)
    assert caught.value.stage == "connect"


def test_a_session_past_its_deadline_is_cut(mailu: MailuStandIn) -> None:
    user = f"tls@{DOMAIN}"
    session = ImapClientReader(timeout=10).open(
        mailbox(mailu, user), password_of(user), deadline=time.monotonic() + 0.2
    )
    try:
        time.sleep(0.4)
        with pytest.raises(MailboxError) as caught:
            session.select("INBOX", writable=False)
    finally:
        session.close()
    assert caught.value.connection_lost and "deadline" in str(caught.value)
