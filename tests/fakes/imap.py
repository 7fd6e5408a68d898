"""An in-memory IMAP server behind the MailboxReader port: accounts with folders of messages by UID,
UIDVALIDITY that a test can change, \\Seen flags, MOVE, servers that are down, wrong passwords, and a
hook (`after`) called after each step so a test can crash the poller right there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from petrel.models.records import Mailbox
from petrel.ports import FetchedMessage, MailboxError


@dataclass
class FakeFolder:
    uidvalidity: int = 1
    next_uid: int = 1
    messages: dict[int, bytes] = field(default_factory=dict)
    flags: dict[int, set[str]] = field(default_factory=dict)

    def append(self, raw: bytes) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = raw
        self.flags[uid] = set()
        return uid

    def renumber(self, uidvalidity: int) -> None:
        """What a server does when it loses its UID list: new UIDVALIDITY, UIDs from 1 again."""
        raws = [self.messages[uid] for uid in sorted(self.messages)]
        self.uidvalidity = uidvalidity
        self.next_uid = 1
        self.messages.clear()
        self.flags.clear()
        for raw in raws:
            self.append(raw)


@dataclass
class FakeAccount:
    password: str
    folders: dict[str, FakeFolder] = field(default_factory=lambda: {"INBOX": FakeFolder()})


class FakeImapServer:
    """Accounts by (host, username). `down` hosts refuse connections; `refuse_folders` answer NO to
    SELECT. `after(step)` runs after each step: open, select, search, fetch, store, move."""

    def __init__(self) -> None:
        self.accounts: dict[tuple[str, str], FakeAccount] = {}
        self.down: set[str] = set()
        self.refuse_folders: set[str] = set()
        self.login_error: str | None = None  # the text a refused login carries (default below)
        self.after: Callable[[str], None] = lambda step: None
        self.opened = 0
        self.closed = 0
        self.selected: list[tuple[str, bool]] = []  # (folder, writable) per SELECT
        self.fetches: list[int] = []  # UIDs per FETCH

    def account(self, host: str, username: str, password: str) -> FakeAccount:
        return self.accounts.setdefault((host, username), FakeAccount(password))

    def folder(self, host: str, username: str, name: str = "INBOX") -> FakeFolder:
        return self.accounts[(host, username)].folders.setdefault(name, FakeFolder())

    def open(self, mailbox: Mailbox, password: str, *, deadline: float | None = None) -> FakeSession:
        if mailbox.host in self.down:
            raise MailboxError("connection refused", stage="connect")
        account = self.accounts.get((mailbox.host, mailbox.username))
        if account is None or account.password != password:
            raise MailboxError(self.login_error or "login refused: [AUTHENTICATIONFAILED]", stage="login")
        self.opened += 1
        self.after("open")
        return FakeSession(self, account)


class FakeSession:
    def __init__(self, server: FakeImapServer, account: FakeAccount) -> None:
        self._server = server
        self._account = account
        self._folder: FakeFolder | None = None
        self._writable = False

    @property
    def folder(self) -> FakeFolder:
        if self._folder is None:
            raise MailboxError("no folder selected", stage="select", connection_lost=False)
        return self._folder

    def select(self, folder: str, *, writable: bool) -> int:
        if folder in self._server.refuse_folders or folder not in self._account.folders:
            raise MailboxError(
                f"the server refused select: NO {folder} does not exist", stage="select", connection_lost=False
            )
        self._folder = self._account.folders[folder]
        self._writable = writable
        self._server.selected.append((folder, writable))
        self._server.after("select")
        return self._folder.uidvalidity

    def uids_after(self, last_uid: int) -> list[int]:
        found = sorted(uid for uid in self.folder.messages if uid > last_uid)
        self._server.after("search")
        return found

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        folder = self.folder
        self._server.fetches.append(len(uids))
        found = [FetchedMessage(uid, folder.messages[uid]) for uid in sorted(uids) if uid in folder.messages]
        self._server.after("fetch")
        return found

    def _need_write(self, stage: str) -> None:
        if not self._writable:
            raise MailboxError(f"the server refused {stage}: mailbox is read-only", stage=stage, connection_lost=False)

    def mark_seen(self, uids: Sequence[int]) -> None:
        self._need_write("store")
        for uid in uids:
            self.folder.flags[uid].add("\\Seen")
        self._server.after("store")

    def move(self, uids: Sequence[int], folder: str) -> None:
        self._need_write("move")
        target = self._account.folders.setdefault(folder, FakeFolder())
        source = self.folder
        for uid in uids:
            target.append(source.messages.pop(uid))
            source.flags.pop(uid, None)
        self._server.after("move")

    def close(self) -> None:
        self._server.closed += 1
