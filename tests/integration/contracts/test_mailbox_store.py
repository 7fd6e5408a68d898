"""MailboxStore contract: conditional create, per-tenant and global listing, a delete that takes the
mailbox's cursors and health with it, and cursors that move only from the state their writer read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from petrel.models.records import FolderCursor, Mailbox, MailboxAfter, MailboxHealth
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict
from tests.fakes.clock import DEFAULT_START
from tests.integration.contracts.backends import Backend


def _mailbox(tenant_id: str = "tn_a", mailbox_id: str = "mb_1", **fields: object) -> Mailbox:
    values: dict[str, object] = {
        "address": f"{mailbox_id}@{tenant_id}.example.com",
        "host": "imap.example.com",
        "port": 993,
        "username": f"{mailbox_id}@{tenant_id}.example.com",
        "secret_name": f"petrel-test/tenants/{tenant_id}/imap/{mailbox_id}",
        "folders": ("INBOX", "Junk"),
        "created_at": DEFAULT_START,
    }
    values.update(fields)
    return Mailbox.model_validate({"tenant_id": tenant_id, "mailbox_id": mailbox_id, **values})


def _cursor(uidvalidity: int, last_uid: int, *, folder: str = "INBOX", mailbox_id: str = "mb_1") -> FolderCursor:
    return FolderCursor(
        tenant_id="tn_a",
        mailbox_id=mailbox_id,
        folder=folder,
        uidvalidity=uidvalidity,
        last_uid=last_uid,
        updated_at=DEFAULT_START + timedelta(seconds=last_uid),
    )


def test_create_read_and_list_a_tenants_mailboxes(backend: Backend) -> None:
    first = _mailbox(mailbox_id="mb_1", ca_bundle="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    second = _mailbox(mailbox_id="mb_2", after=MailboxAfter.MOVE, move_to="Processed", enabled=False)
    backend.mailboxes.create_mailbox(second)
    backend.mailboxes.create_mailbox(first)
    backend.mailboxes.create_mailbox(_mailbox("tn_b", "mb_1"))

    assert backend.mailboxes.get_mailbox("tn_a", "mb_1") == first
    assert backend.mailboxes.get_mailbox("tn_a", "mb_2") == second
    assert backend.mailboxes.list_mailboxes("tn_a") == [first, second]
    assert backend.mailboxes.get_mailbox("tn_c", "mb_1") is None
    assert backend.mailboxes.list_mailboxes("tn_c") == []


def test_creating_a_mailbox_twice_changes_nothing(backend: Backend) -> None:
    original = _mailbox()
    backend.mailboxes.create_mailbox(original)

    with pytest.raises(AlreadyExists):
        backend.mailboxes.create_mailbox(_mailbox(host="other.example.com"))
    assert backend.mailboxes.get_mailbox("tn_a", "mb_1") == original


def test_one_mailbox_per_address_until_it_is_deleted(backend: Backend) -> None:
    first = _mailbox(mailbox_id="mb_1", address="Bounces@a.example.com")
    backend.mailboxes.create_mailbox(first)
    backend.mailboxes.create_mailbox(_mailbox("tn_b", "mb_9", address="bounces@a.example.com"))  # another tenant

    with pytest.raises(AlreadyExists):  # the same address, whatever its case, under another id
        backend.mailboxes.create_mailbox(_mailbox(mailbox_id="mb_2", address="bounces@A.example.com"))
    assert backend.mailboxes.list_mailboxes("tn_a") == [first]

    backend.mailboxes.delete_mailbox("tn_a", "mb_1")
    again = _mailbox(mailbox_id="mb_2", address="bounces@a.example.com")
    backend.mailboxes.create_mailbox(again)
    assert backend.mailboxes.list_mailboxes("tn_a") == [again]


def test_put_replaces_a_mailbox(backend: Backend) -> None:
    backend.mailboxes.create_mailbox(_mailbox())
    changed = _mailbox(port=143, security="starttls", folders=("INBOX",))
    backend.mailboxes.put_mailbox(changed)

    assert backend.mailboxes.get_mailbox("tn_a", "mb_1") == changed
    assert backend.mailboxes.list_mailboxes("tn_a") == [changed]


def test_every_tenants_mailboxes_are_the_pollers_work_list(backend: Backend) -> None:
    """Each mailbox once, whatever else the tenants' partitions hold, across Scan pages: the 40 CA
    bundles of 40 KB make more than DynamoDB's 1 MB of a Scan page."""
    bundle = "-----BEGIN CERTIFICATE-----\n" + "A" * 40_000 + "\n-----END CERTIFICATE-----\n"
    made = [
        _mailbox(tenant, f"mb_{n}", ca_bundle=bundle) for tenant in ("tn_a", "tn_b", "tn_c", "tn_d") for n in range(10)
    ]
    for mailbox in reversed(made):
        backend.mailboxes.create_mailbox(mailbox)
        backend.mailboxes.save_cursor(
            FolderCursor(
                tenant_id=mailbox.tenant_id,
                mailbox_id=mailbox.mailbox_id,
                folder="INBOX",
                uidvalidity=7,
                last_uid=3,
                updated_at=DEFAULT_START,
            ),
            expected=None,
        )
        backend.mailboxes.put_health(
            MailboxHealth(tenant_id=mailbox.tenant_id, mailbox_id=mailbox.mailbox_id, polled_at=DEFAULT_START)
        )

    found = backend.mailboxes.list_all_mailboxes()

    assert sorted(found, key=lambda m: (m.tenant_id, m.mailbox_id)) == sorted(
        made, key=lambda m: (m.tenant_id, m.mailbox_id)
    )


def test_no_mailboxes_anywhere(backend: Backend) -> None:
    assert backend.mailboxes.list_all_mailboxes() == []


def test_deleting_a_mailbox_takes_its_cursors_and_health(backend: Backend) -> None:
    backend.mailboxes.create_mailbox(_mailbox(mailbox_id="mb_1"))
    backend.mailboxes.create_mailbox(_mailbox(mailbox_id="mb_10"))  # its keys start like mb_1's
    for mailbox_id in ("mb_1", "mb_10"):
        for folder in ("INBOX", "Junk", "Archive/2026"):
            backend.mailboxes.save_cursor(_cursor(7, 12, folder=folder, mailbox_id=mailbox_id), expected=None)
        backend.mailboxes.put_health(
            MailboxHealth(tenant_id="tn_a", mailbox_id=mailbox_id, polled_at=DEFAULT_START, error="login failed")
        )

    backend.mailboxes.delete_mailbox("tn_a", "mb_1")

    assert backend.mailboxes.get_mailbox("tn_a", "mb_1") is None
    assert backend.mailboxes.get_health("tn_a", "mb_1") is None
    for folder in ("INBOX", "Junk", "Archive/2026"):
        assert backend.mailboxes.get_cursor("tn_a", "mb_1", folder) is None
        assert backend.mailboxes.get_cursor("tn_a", "mb_10", folder) == _cursor(
            7, 12, folder=folder, mailbox_id="mb_10"
        )
    assert backend.mailboxes.get_health("tn_a", "mb_10") is not None
    assert [m.mailbox_id for m in backend.mailboxes.list_mailboxes("tn_a")] == ["mb_10"]

    # Made again under the same id, it starts from no cursor: it reads the folder from the start.
    backend.mailboxes.create_mailbox(_mailbox(mailbox_id="mb_1"))
    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") is None
    backend.mailboxes.save_cursor(_cursor(8, 1), expected=None)


def test_deleting_a_missing_mailbox_fails_and_changes_nothing(backend: Backend) -> None:
    backend.mailboxes.create_mailbox(_mailbox("tn_b", "mb_1"))
    with pytest.raises(RecordNotFound):
        backend.mailboxes.delete_mailbox("tn_a", "mb_1")
    backend.mailboxes.delete_mailbox("tn_b", "mb_1")
    with pytest.raises(RecordNotFound):
        backend.mailboxes.delete_mailbox("tn_b", "mb_1")  # twice: the second finds nothing


def test_a_cursor_moves_only_from_what_its_writer_read(backend: Backend) -> None:
    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") is None
    backend.mailboxes.save_cursor(_cursor(7, 10), expected=None)
    with pytest.raises(WriteConflict):
        backend.mailboxes.save_cursor(_cursor(7, 99), expected=None)  # one exists now

    backend.mailboxes.save_cursor(_cursor(7, 20), expected=_cursor(7, 10))
    with pytest.raises(WriteConflict):
        backend.mailboxes.save_cursor(_cursor(7, 30), expected=_cursor(7, 10))  # stale
    with pytest.raises(WriteConflict):
        backend.mailboxes.save_cursor(_cursor(7, 30), expected=_cursor(6, 20))  # same UID, other validity

    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") == _cursor(7, 20)
    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "Junk") is None  # folders are apart


def test_two_pollers_saving_from_the_same_cursor_one_wins(backend: Backend) -> None:
    """Both read (7, 20) and fetched on; the first to write moves the cursor, the second loses and
    must not move it back or past what it did not hand over."""
    seen = _cursor(7, 20)
    backend.mailboxes.save_cursor(seen, expected=None)
    read_by_first = backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX")
    read_by_second = backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX")
    assert read_by_first == read_by_second == seen

    backend.mailboxes.save_cursor(_cursor(7, 25), expected=read_by_first)
    with pytest.raises(WriteConflict):
        backend.mailboxes.save_cursor(_cursor(7, 40), expected=read_by_second)

    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") == _cursor(7, 25)


def test_a_new_uidvalidity_restarts_the_cursor(backend: Backend) -> None:
    """The server renumbered the folder: the poller saves (new validity, 0) from the old cursor, and
    a poller still on the old validity can no longer move it."""
    backend.mailboxes.save_cursor(_cursor(7, 50), expected=None)

    backend.mailboxes.save_cursor(_cursor(9, 0), expected=_cursor(7, 50))
    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") == _cursor(9, 0)
    with pytest.raises(WriteConflict):
        backend.mailboxes.save_cursor(_cursor(7, 51), expected=_cursor(7, 50))

    backend.mailboxes.save_cursor(_cursor(9, 4), expected=_cursor(9, 0))
    assert backend.mailboxes.get_cursor("tn_a", "mb_1", "INBOX") == _cursor(9, 4)


def test_health_is_the_last_poll(backend: Backend) -> None:
    assert backend.mailboxes.get_health("tn_a", "mb_1") is None
    failed_at = DEFAULT_START + timedelta(minutes=1)
    failed = MailboxHealth(
        tenant_id="tn_a", mailbox_id="mb_1", polled_at=failed_at, error="LOGIN failed", error_at=failed_at
    )
    backend.mailboxes.put_health(failed)
    assert backend.mailboxes.get_health("tn_a", "mb_1") == failed

    later = DEFAULT_START + timedelta(minutes=2)
    recovered = MailboxHealth(
        tenant_id="tn_a", mailbox_id="mb_1", polled_at=later, error_at=failed_at, last_success_at=later
    )
    backend.mailboxes.put_health(recovered)
    assert backend.mailboxes.get_health("tn_a", "mb_1") == recovered
    assert backend.mailboxes.get_health("tn_b", "mb_1") is None
