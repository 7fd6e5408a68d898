"""The IMAP poller: reads every enabled mailbox of every tenant incrementally by UID and hands each new
message to the ingest queue (raw bytes in the bodies bucket, a reference on the queue).

Invariant: every message of a folder whose UID is above the folder cursor's `last_uid` (under the same
UIDVALIDITY) is eventually queued, and the cursor never moves past a UID whose job is not on the ingest
queue. So, per batch of UIDs, strictly in this order:

1. FETCH the batch (BODY.PEEK[]: reading sets no flag);
2. for each message: its inbound id (`models.inbound.inbound_id` of the tenant, `mail.raw.raw_message_id`
   and the raw bytes, as the push route derives it), the raw bytes to the bucket at
   `resources.inbound_raw_key`, an `IngestJob` on the ingest queue;
3. the after-action (\\Seen, or the move to another folder);
4. the cursor, written only if it is still the one read (`MailboxStore.save_cursor(expected=...)`).

A crash at any step leaves the cursor where it was: the next run reads the batch again and queues it a
second time. That is the only way a message is queued twice, and it is harmless: the same bytes give
the same inbound id, and the ingest side stores one record per id. A cursor write that loses
(`WriteConflict`) means another poller got there first: this one stops that folder.

A UIDVALIDITY other than the cursor's means the server renumbered the folder: it is read again from
UID 0 under the new value (what was queued before dedups downstream). A folder without a cursor is read
from UID 0 too: everything in it is ingested.

Mailboxes are polled in parallel (one connection each); one that fails (connection refused, TLS, login,
a folder the server refuses) records its error in its health record and stops nobody else. No batch
starts after the run's `deadline`; the connection itself is cut at `cutoff`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from petrel import resources
from petrel.mail.raw import raw_message_id
from petrel.models.inbound import IngestJob, inbound_id
from petrel.models.records import FolderCursor, Mailbox, MailboxAfter, MailboxHealth
from petrel.ports import (
    BlobStore,
    Clock,
    FetchedMessage,
    IngestQueue,
    MailboxError,
    MailboxReader,
    MailboxSession,
    MailboxStore,
    RecordNotFound,
    SecretStore,
    WriteConflict,
)

RAW_CONTENT_TYPE = "message/rfc822"
_ERROR_LENGTH = 300


@dataclass(frozen=True)
class PollDeps:
    mailboxes: MailboxStore
    reader: MailboxReader
    secrets: SecretStore
    blobs: BlobStore
    queue: IngestQueue
    clock: Clock
    batch: int = 50  # UIDs per FETCH; the cursor is saved after each batch
    concurrency: int = 8  # mailboxes read at once
    monotonic: Callable[[], float] = time.monotonic


@dataclass
class FolderReport:
    folder: str
    fetched: int = 0
    queued: int = 0
    last_uid: int = 0  # the cursor as this run left it
    uidvalidity: int | None = None
    reset: bool = False  # UIDVALIDITY changed: read again from UID 0
    conflict: bool = False  # another poller moved the cursor: this one stopped the folder
    error: str | None = None


@dataclass
class MailboxReport:
    tenant_id: str
    mailbox_id: str
    folders: list[FolderReport] = field(default_factory=list)
    error: str | None = None
    truncated: bool = False  # the deadline came before every new message was read
    started: bool = True  # False: the deadline came before this mailbox's turn (nothing recorded)
    exception: BaseException | None = None  # an unexpected failure (a bug, the bucket or queue down)

    @property
    def fetched(self) -> int:
        return sum(f.fetched for f in self.folders)

    @property
    def queued(self) -> int:
        return sum(f.queued for f in self.folders)

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class PollReport:
    mailboxes: list[MailboxReport] = field(default_factory=list)
    disabled: int = 0

    @property
    def fetched(self) -> int:
        return sum(m.fetched for m in self.mailboxes)

    @property
    def queued(self) -> int:
        return sum(m.queued for m in self.mailboxes)

    @property
    def failed(self) -> int:
        return sum(1 for m in self.mailboxes if m.failed)

    @property
    def not_started(self) -> int:
        return sum(1 for m in self.mailboxes if not m.started)


class Passwords:
    """Mailbox passwords read once per run (several mailboxes may share a secret), thread-safe."""

    def __init__(self, secrets: SecretStore) -> None:
        self._secrets = secrets
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        with self._lock:
            if name not in self._known:
                self._known[name] = self._secrets.get_secret(name)
            return self._known[name]

    def scrub(self, text: str) -> str:
        """`text` without any password read in this run (what a server or library echoed back)."""
        with self._lock:
            known = [value for value in self._known.values() if value]
        for value in known:
            text = text.replace(value, "***")
        return text


def chunks(uids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def queue_message(deps: PollDeps, mailbox: Mailbox, folder: str, message: FetchedMessage, now: datetime) -> None:
    """Step 2 for one message: raw bytes to the bucket, then its job on the ingest queue."""
    found = inbound_id(mailbox.tenant_id, raw_message_id(message.raw), message.raw)
    key = resources.inbound_raw_key(mailbox.tenant_id, found)
    deps.blobs.put(key, message.raw, RAW_CONTENT_TYPE)
    deps.queue.send_ingest(
        IngestJob(
            tenant_id=mailbox.tenant_id,
            inbound_id=found,
            raw_key=key,
            received_at=now,
            source="imap",
            mailbox_id=mailbox.mailbox_id,
            folder=folder,
            uid=message.uid,
        )
    )


def after_action(session: MailboxSession, mailbox: Mailbox, uids: Sequence[int]) -> None:
    """Step 3: what the mailbox asks done with what was queued."""
    if mailbox.after is MailboxAfter.SEEN:
        session.mark_seen(uids)
    elif mailbox.after is MailboxAfter.MOVE and mailbox.move_to:
        session.move(uids, mailbox.move_to)


def poll_folder(
    deps: PollDeps, session: MailboxSession, mailbox: Mailbox, report: FolderReport, deadline: float
) -> bool:
    """Queue the folder's new messages batch by batch, counting them in `report` (so that what was
    queued before a failure is still counted); returns whether the deadline cut it short. MailboxError
    propagates (the caller records it)."""
    folder = report.folder
    writable = mailbox.after is not MailboxAfter.LEAVE
    uidvalidity = session.select(folder, writable=writable)
    stored = deps.mailboxes.get_cursor(mailbox.tenant_id, mailbox.mailbox_id, folder)
    report.uidvalidity = uidvalidity
    report.reset = stored is not None and stored.uidvalidity != uidvalidity
    last_uid = stored.last_uid if stored is not None and not report.reset else 0
    report.last_uid = last_uid
    expected = stored
    uids = session.uids_after(last_uid)
    if not uids and (stored is None or report.reset):
        # Remember the UIDVALIDITY of an empty folder, so that its first messages are not "renumbered".
        _save(deps, mailbox, folder, uidvalidity=uidvalidity, last_uid=0, expected=expected, report=report)
        return False
    for batch in chunks(uids, deps.batch):
        if deps.monotonic() >= deadline:
            return True
        messages = session.fetch(batch)  # 1
        report.fetched += len(messages)
        now = deps.clock.now()
        for message in messages:  # 2
            queue_message(deps, mailbox, folder, message, now)
            report.queued += 1
        after_action(session, mailbox, [m.uid for m in messages])  # 3
        saved = _save(  # 4
            deps, mailbox, folder, uidvalidity=uidvalidity, last_uid=batch[-1], expected=expected, report=report
        )
        if saved is None:
            return False
        expected = saved
    return False


def _save(
    deps: PollDeps,
    mailbox: Mailbox,
    folder: str,
    *,
    uidvalidity: int,
    last_uid: int,
    expected: FolderCursor | None,
    report: FolderReport,
) -> FolderCursor | None:
    """Step 4: the cursor, if nobody moved it; None (and `report.conflict`) when another poller did."""
    cursor = FolderCursor(
        tenant_id=mailbox.tenant_id,
        mailbox_id=mailbox.mailbox_id,
        folder=folder,
        uidvalidity=uidvalidity,
        last_uid=last_uid,
        updated_at=deps.clock.now(),
    )
    try:
        deps.mailboxes.save_cursor(cursor, expected=expected)
    except WriteConflict:
        report.conflict = True
        return None
    report.last_uid = last_uid
    return cursor


def poll_mailbox(
    deps: PollDeps,
    mailbox: Mailbox,
    deadline: float,
    *,
    cutoff: float | None = None,
    passwords: Passwords | None = None,
) -> MailboxReport:
    """Poll every folder of one mailbox, then record its health. A MailboxError (server, TLS, login, a
    refused folder) is the report's `error`; anything else is recorded in the health too, then raised."""
    report = MailboxReport(tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id)
    passwords = passwords or Passwords(deps.secrets)
    try:
        password = passwords.get(mailbox.secret_name)
    except RecordNotFound:
        report.error = "the mailbox's password secret does not exist"
        record_health(deps, mailbox, report.error)
        return report
    try:
        _poll_folders(deps, mailbox, password, deadline=deadline, cutoff=cutoff, report=report)
    except MailboxError as exc:
        report.error = str(exc)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        report.exception = exc
        _scrub_report(report, passwords)
        record_health(deps, mailbox, report.error)
        raise
    _scrub_report(report, passwords)
    record_health(deps, mailbox, report.error)
    return report


def _scrub_report(report: MailboxReport, passwords: Passwords) -> None:
    """Errors as recorded and logged: short, and without any password a server or library echoed."""
    for folder in report.folders:
        if folder.error is not None:
            folder.error = passwords.scrub(folder.error)[:_ERROR_LENGTH]
    if report.error is not None:
        report.error = passwords.scrub(report.error)[:_ERROR_LENGTH]


def _poll_folders(
    deps: PollDeps, mailbox: Mailbox, password: str, *, deadline: float, cutoff: float | None, report: MailboxReport
) -> None:
    session = deps.reader.open(mailbox, password, deadline=cutoff)
    errors: list[str] = []
    try:
        for folder in mailbox.folders:
            if deps.monotonic() >= deadline:
                report.truncated = True
                break
            folder_report = FolderReport(folder=folder)
            report.folders.append(folder_report)
            try:
                cut_short = poll_folder(deps, session, mailbox, folder_report, deadline)
            except MailboxError as exc:
                folder_report.error = f"{folder}: {exc}"
                errors.append(folder_report.error)
                if exc.connection_lost:
                    break
                continue
            if cut_short:
                report.truncated = True
                break
    finally:
        session.close()
    if errors:
        report.error = "; ".join(errors)[:_ERROR_LENGTH]


def record_health(deps: PollDeps, mailbox: Mailbox, error: str | None) -> None:
    """The mailbox's last poll: its error and when (kept after a later success), or its last success."""
    now = deps.clock.now()
    previous = deps.mailboxes.get_health(mailbox.tenant_id, mailbox.mailbox_id)
    deps.mailboxes.put_health(
        MailboxHealth(
            tenant_id=mailbox.tenant_id,
            mailbox_id=mailbox.mailbox_id,
            polled_at=now,
            error=error,
            error_at=now if error else (previous.error_at if previous else None),
            last_success_at=(previous.last_success_at if previous else None) if error else now,
        )
    )


def poll_all(deps: PollDeps, deadline: float, *, cutoff: float | None = None) -> PollReport:
    """Poll every enabled mailbox of every tenant, `deps.concurrency` at once; mailboxes whose turn comes
    after the deadline are left for the next run (`started=False`)."""
    every = deps.mailboxes.list_all_mailboxes()
    enabled = [m for m in every if m.enabled]
    report = PollReport(disabled=len(every) - len(enabled))
    if not enabled:
        return report
    passwords = Passwords(deps.secrets)

    def one(mailbox: Mailbox) -> MailboxReport:
        if deps.monotonic() >= deadline:
            return MailboxReport(tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id, started=False)
        try:
            return poll_mailbox(deps, mailbox, deadline, cutoff=cutoff, passwords=passwords)
        except Exception as exc:  # recorded in its health already; the others go on
            return MailboxReport(
                tenant_id=mailbox.tenant_id,
                mailbox_id=mailbox.mailbox_id,
                error=passwords.scrub(f"{type(exc).__name__}: {exc}")[:_ERROR_LENGTH],
                exception=exc,
            )

    with ThreadPoolExecutor(max_workers=min(deps.concurrency, len(enabled)), thread_name_prefix="poll") as pool:
        report.mailboxes = list(pool.map(one, enabled))
    return report
