"""A scripted SmtpRelay: replies per recipient (250 unless told otherwise), and a record of each call.

Held to SmtplibRelay's contract (tests/integration/contracts/test_smtp_relay_contract.py): one
session per server (the fake is sequential: one is all a caller at a time needs), reused until
`close()`, a changed password, an idle expiry or a failure that ends it; a server
that refuses the password answers at AUTH and opens no session; an unreachable one is a network
failure at CONNECT, a value like every other outcome, never an exception.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from petrel.mail.smtp_reply import ReplyCode, SmtpReply, Stage
from petrel.models.records import SmtpServer
from petrel.ports import Envelope

OK = SmtpReply.parse(250, "2.0.0 Ok: queued as 4Xq1", Stage.DATA)
AUTH_REFUSED = SmtpReply.parse(535, "5.7.8 Error: authentication failed", Stage.AUTH)
REFUSED_CONNECTION = SmtpReply.network(Stage.CONNECT, "connection refused")


def reply(code: int, text: str, stage: Stage = Stage.RCPT) -> SmtpReply:
    """A reply as the server would send it, e.g. reply(550, "5.1.1 <x@y>: user unknown")."""
    return SmtpReply.parse(code, text, stage)


@dataclass(frozen=True)
class RelayCall:
    server: SmtpServer
    password: str
    envelope: Envelope
    data: bytes
    reply: SmtpReply


class FakeSmtpRelay:
    """`script[recipient]` is a reply, or a list of replies used in turn (the last one repeats).

    `passwords[server_id]` is the only password that server accepts (a server not listed accepts
    any); a server in `unreachable` refuses connections. `sessions_opened` counts the sessions that
    got past AUTH, as the real server would count logins.
    """

    def __init__(self, script: dict[str, SmtpReply | Sequence[SmtpReply]] | None = None) -> None:
        self.script: dict[str, SmtpReply | Sequence[SmtpReply]] = dict(script or {})
        self.default = OK
        self.calls: list[RelayCall] = []
        self.close_calls = 0
        self.close_idle_calls = 0
        self._lock = threading.Lock()
        self._expired: set[str] = set()  # server ids whose session has been idle past the limit
        self.deadlines: list[float | None] = []  # the deadline each call was given
        self.passwords: dict[str, str] = {}
        self.unreachable: set[str] = set()
        self.sessions_opened = 0
        self._sessions: dict[str, tuple[object, ...]] = {}  # server id -> what its session was opened with

    @property
    def relayed(self) -> list[RelayCall]:
        """The calls the server accepted."""
        return [call for call in self.calls if call.reply.is_positive]

    @property
    def closed(self) -> bool:
        return self.close_calls > 0

    def _next_reply(self, recipient: str) -> SmtpReply:
        scripted = self.script.get(recipient, self.default)
        if isinstance(scripted, SmtpReply):
            return scripted
        turn = sum(1 for call in self.calls if call.envelope.recipient == recipient)
        return scripted[min(turn, len(scripted) - 1)]

    def _session(self, server: SmtpServer, password: str) -> SmtpReply | None:
        """Reuse the server's session, or open one (connect, AUTH); the reply that refused it if not."""
        fingerprint = (server.host, server.port, server.security, server.username, password, server.ca_bundle)
        if server.server_id in self._expired:  # idle too long: closed when taken, and replaced
            self._expired.discard(server.server_id)
            self._sessions.pop(server.server_id, None)
        if self._sessions.get(server.server_id) == fingerprint:
            return None
        self._sessions.pop(server.server_id, None)
        if server.server_id in self.unreachable:
            return REFUSED_CONNECTION
        if self.passwords.get(server.server_id, password) != password:
            return AUTH_REFUSED
        self._sessions[server.server_id] = fingerprint
        self.sessions_opened += 1
        return None

    def relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        with self._lock:  # threads may relay at once, as with the real relay; the record stays consistent
            return self._relay(server, password, envelope, data, deadline)

    def _relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, deadline: float | None
    ) -> SmtpReply:
        self.deadlines.append(deadline)
        answer = self._session(server, password) or self._next_reply(envelope.recipient)
        if answer.code in (0, ReplyCode.SERVICE_NOT_AVAILABLE):  # the session did not survive it
            self._sessions.pop(server.server_id, None)
        self.calls.append(RelayCall(server, password, envelope, bytes(data), answer))
        return answer

    def close_idle(self) -> None:
        """Sessions idle past the limit are closed: `expire_idle()` says which have aged past it."""
        self.close_idle_calls += 1
        for server_id in self._expired:
            self._sessions.pop(server_id, None)
        self._expired.clear()

    def expire_idle(self) -> None:
        """Every open session has now been idle past the relay's limit (as an injected clock would say):
        the next call replaces it, or `close_idle()` closes it."""
        self._expired.update(self._sessions)

    def close(self) -> None:
        self.close_calls += 1
        self._sessions.clear()
