"""In-memory MailboxStore with the DynamoDB adapter's rules: conditional create, cursors written only
from the state the poller last saw, and deleting a mailbox takes its cursors and health with it."""

from __future__ import annotations

from petrel.models.records import FolderCursor, Mailbox, MailboxHealth
from petrel.ports import AlreadyExists, RecordNotFound, WriteConflict


def _position(cursor: FolderCursor | None) -> tuple[int, int] | None:
    """What a cursor write is conditional on: (uidvalidity, last_uid), or None when there is none."""
    return None if cursor is None else (cursor.uidvalidity, cursor.last_uid)


class FakeMailboxStore:
    def __init__(self) -> None:
        self.mailboxes: dict[tuple[str, str], Mailbox] = {}
        self.cursors: dict[tuple[str, str, str], FolderCursor] = {}
        self.health: dict[tuple[str, str], MailboxHealth] = {}
        self.cursor_writes = 0  # successful save_cursor calls (what a poller costs in writes)

    def create_mailbox(self, mailbox: Mailbox) -> None:
        key = (mailbox.tenant_id, mailbox.mailbox_id)
        if key in self.mailboxes:
            raise AlreadyExists(f"tenant {mailbox.tenant_id} has a mailbox for mailbox {mailbox.mailbox_id} already")
        address = mailbox.address.lower()
        if any(t == mailbox.tenant_id and m.address.lower() == address for (t, _), m in self.mailboxes.items()):
            raise AlreadyExists(f"tenant {mailbox.tenant_id} has a mailbox for {mailbox.address} already")
        self.mailboxes[key] = mailbox

    def put_mailbox(self, mailbox: Mailbox) -> None:
        self.mailboxes[(mailbox.tenant_id, mailbox.mailbox_id)] = mailbox

    def get_mailbox(self, tenant_id: str, mailbox_id: str) -> Mailbox | None:
        return self.mailboxes.get((tenant_id, mailbox_id))

    def list_mailboxes(self, tenant_id: str) -> list[Mailbox]:
        return [m for (t, _), m in sorted(self.mailboxes.items()) if t == tenant_id]

    def list_all_mailboxes(self) -> list[Mailbox]:
        return [m for _, m in sorted(self.mailboxes.items())]

    def delete_mailbox(self, tenant_id: str, mailbox_id: str) -> None:
        if self.mailboxes.pop((tenant_id, mailbox_id), None) is None:
            raise RecordNotFound(f"no mailbox {mailbox_id}")
        for key in [k for k in self.cursors if k[:2] == (tenant_id, mailbox_id)]:
            del self.cursors[key]
        self.health.pop((tenant_id, mailbox_id), None)

    def get_cursor(self, tenant_id: str, mailbox_id: str, folder: str) -> FolderCursor | None:
        return self.cursors.get((tenant_id, mailbox_id, folder))

    def save_cursor(self, cursor: FolderCursor, *, expected: FolderCursor | None) -> None:
        key = (cursor.tenant_id, cursor.mailbox_id, cursor.folder)
        if _position(self.cursors.get(key)) != _position(expected):
            raise WriteConflict(f"the cursor of {cursor.mailbox_id}/{cursor.folder} moved meanwhile")
        self.cursors[key] = cursor
        self.cursor_writes += 1

    def put_health(self, health: MailboxHealth) -> None:
        self.health[(health.tenant_id, health.mailbox_id)] = health

    def get_health(self, tenant_id: str, mailbox_id: str) -> MailboxHealth | None:
        return self.health.get((tenant_id, mailbox_id))
