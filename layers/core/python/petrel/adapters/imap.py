"""Reading a tenant's MailU mailbox over IMAP with `imapclient`: TLS verified (implicit or STARTTLS, the
mailbox's own CA bundle when it has one), login, UIDVALIDITY, UIDs after a cursor, BODY.PEEK[] in
batches, and the after-actions (\\Seen, or a move to another folder).

Every failure of the library, the network, TLS or the login becomes one `MailboxError` at this
boundary (petrel.ports), with a message fit for the mailbox's health record: it never carries the
password. Each socket operation is bounded by `timeout`; a whole session by the `deadline` the caller
gives, at which a timer shuts the socket down under whatever call is blocked on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from imapclient import DELETED, SEEN, IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from petrel.adapters.net import timed_out
from petrel.models.records import Mailbox, SmtpSecurity
from petrel.ports import FetchedMessage, MailboxError

# What imapclient, imaplib, ssl and socket raise for a failed conversation: IMAPClientError is
# imaplib's `error` (a NO or BAD reply) and its `abort` (the connection is unusable); OSError covers
# socket and TLS errors and timeouts; ValueError a command that cannot be sent (UnicodeEncodeError of a
# non-ASCII password, an invalid IDNA host name, a read on a socket the deadline shut down).
_FAILURES = (IMAPClientError, OSError, ValueError)

_BODY = b"BODY[]"
_BYTES_REPR = re.compile(r"b'([^']*)'")


class ImapClientReader:
    """Opens one `ImapClientSession` per call; safe to share between threads (one session each)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def _context(self, ca_bundle: str | None) -> ssl.SSLContext:
        """A verifying client context (built once per CA bundle: building one costs ~45 ms)."""
        key = hashlib.sha256((ca_bundle or "").encode()).hexdigest()
        with self._lock:
            if key not in self._contexts:
                context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                self._contexts[key] = context
            return self._contexts[key]

    def open(self, mailbox: Mailbox, password: str, *, deadline: float | None = None) -> ImapClientSession:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise MailboxError("no time left to connect", stage="connect")
        try:
            context = self._context(mailbox.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise MailboxError(
                f"the mailbox's CA bundle is not usable PEM: {type(exc).__name__}", stage="tls"
            ) from None
        connect_timeout = self._timeout if left is None else min(self._timeout, left)
        implicit = mailbox.security is SmtpSecurity.TLS
        stage = "tls" if implicit else "connect"
        client: IMAPClient | None = None
        session: ImapClientSession | None = None
        try:
            client = IMAPClient(
                mailbox.host,
                port=mailbox.port,
                ssl=implicit,
                ssl_context=context if implicit else None,
                timeout=SocketTimeout(connect=connect_timeout, read=self._timeout),
            )
            session = ImapClientSession(client, deadline)
            if not implicit:
                stage = "tls"
                client.starttls(context)
            stage = "login"
            client.login(mailbox.username, password)
        except LoginError as exc:
            _abandon(client, session)
            raise MailboxError(f"login refused: {_scrub(_plain(exc), password)}"[:300], stage="login") from None
        except CapabilityError:
            _abandon(client, session)
            raise MailboxError("the server does not offer STARTTLS", stage="tls") from None
        except ssl.SSLCertVerificationError as exc:
            _abandon(client, session)
            raise MailboxError(f"TLS certificate not trusted: {exc.verify_message}", stage="tls") from None
        except _FAILURES as exc:
            _abandon(client, session)
            raise MailboxError(_scrub(_describe(exc, stage), password), stage=stage) from None
        return session


class ImapClientSession:
    """One logged-in connection (petrel.ports.MailboxSession); `close()` logs out."""

    def __init__(self, client: IMAPClient, deadline: float | None) -> None:
        self._client = client
        self._cut = threading.Event()
        self._created: set[str] = set()
        self._timer: threading.Timer | None = None
        if deadline is not None:
            self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._cut_connection)
            self._timer.daemon = True
            self._timer.start()

    def _cut_connection(self) -> None:
        """The deadline: shut the socket down (through the plain socket's method, which leaves a TLS
        socket's state alone for the thread reading it), so a blocked read or write returns at once."""
        self._cut.set()
        with contextlib.suppress(OSError, AttributeError):
            socket.socket.shutdown(self._client.socket(), socket.SHUT_RDWR)

    def _fail(self, exc: BaseException, stage: str) -> NoReturn:
        """A failure of one step as a MailboxError: a NO or BAD reply leaves the session usable, the
        rest (a broken connection, a timeout, the deadline) does not."""
        if self._cut.is_set():
            raise MailboxError(f"deadline reached during {stage}: connection cut", stage=stage) from None
        lost = isinstance(exc, IMAPClientAbortError | OSError | ValueError)
        raise MailboxError(_describe(exc, stage), stage=stage, connection_lost=lost) from None

    def select(self, folder: str, *, writable: bool) -> int:
        try:
            info: dict[bytes, Any] = self._client.select_folder(folder, readonly=not writable)
        except _FAILURES as exc:
            self._fail(exc, "select")
        value = info.get(b"UIDVALIDITY")
        if value is None:
            raise MailboxError(f"the server gave no UIDVALIDITY for {folder}", stage="select", connection_lost=False)
        return int(value)

    def uids_after(self, last_uid: int) -> list[int]:
        try:
            # `UID n:*` always matches the folder's last message, even when its UID is below n: filter.
            found: list[int] = self._client.search(["UID", f"{last_uid + 1}:*"])
        except _FAILURES as exc:
            self._fail(exc, "search")
        return sorted(int(uid) for uid in found if int(uid) > last_uid)

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        if not uids:
            return []
        wanted = set(uids)
        try:
            response: dict[int, dict[bytes, Any]] = self._client.fetch(list(uids), [b"BODY.PEEK[]"])
        except _FAILURES as exc:
            self._fail(exc, "fetch")
        return [
            FetchedMessage(uid=int(uid), raw=bytes(data[_BODY]))
            for uid, data in sorted(response.items())
            if int(uid) in wanted and data.get(_BODY) is not None  # unsolicited FETCH (flags) aside
        ]

    def mark_seen(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        try:
            self._client.add_flags(list(uids), [SEEN], silent=True)
        except _FAILURES as exc:
            self._fail(exc, "store")

    def move(self, uids: Sequence[int], folder: str) -> None:
        """MOVE (RFC 6851) where the server has it, else COPY + \\Deleted + UID EXPUNGE (RFC 4315; a
        plain EXPUNGE, which also removes what others marked \\Deleted, where UIDPLUS is missing)."""
        if not uids:
            return
        try:
            self._move(list(uids), folder)
        except _FAILURES as exc:
            self._fail(exc, "move")

    def _move(self, uids: list[int], folder: str) -> None:
        if folder not in self._created:
            if not self._client.folder_exists(folder):
                self._client.create_folder(folder)
            self._created.add(folder)
        if self._client.has_capability("MOVE"):
            self._client.move(uids, folder)
            return
        self._client.copy(uids, folder)
        self._client.add_flags(uids, [DELETED], silent=True)
        if self._client.has_capability("UIDPLUS"):
            self._client.uid_expunge(uids)
        else:
            self._client.expunge()

    def cancel_deadline(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def close(self) -> None:
        self.cancel_deadline()
        try:
            if not self._cut.is_set():
                self._client.logout()
                return
        except _FAILURES:
            pass
        _shutdown(self._client)


def _abandon(client: IMAPClient | None, session: ImapClientSession | None) -> None:
    """Drop a connection that never became a usable session (its deadline timer with it)."""
    if session is not None:
        session.cancel_deadline()
    _shutdown(client)


def _shutdown(client: IMAPClient | None) -> None:
    if client is not None:
        with contextlib.suppress(*_FAILURES):
            client.shutdown()


def _scrub(text: str, password: str) -> str:
    """Belt and braces: whatever a server or library echoed, the password never leaves in a message."""
    return text.replace(password, "***") if password else text


def _plain(exc: BaseException) -> str:
    """The server's words as text: imaplib quotes them as Python bytes (`b'[AUTHENTICATIONFAILED] ...'`)."""
    return _BYTES_REPR.sub(lambda match: match.group(1), str(exc))


def _describe(exc: BaseException, stage: str) -> str:
    """A short, password-free account of a failure at `stage`."""
    if isinstance(exc, UnicodeError):  # never the text itself: at login it holds the password
        if stage == "login":
            return "the IMAP username or password is not ASCII: LOGIN cannot send it"
        return f"{type(exc).__name__}: the {stage} command cannot be sent as ASCII"
    if timed_out(exc):
        return f"timed out waiting for the server ({stage})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by the server ({stage})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure ({stage}): {exc.reason or exc}"[:300]
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"the connection broke during {stage}: {_plain(exc)}"[:300]
    if isinstance(exc, imaplib.IMAP4.error):
        return f"the server refused {stage}: {_plain(exc)}"[:300]
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    return f"{type(exc).__name__} during {stage}: {exc}"[:300]
