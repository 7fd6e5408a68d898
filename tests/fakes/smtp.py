"""A scripted SmtpRelay: replies per recipient (250 unless told otherwise), and a record of each call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from petrel.mail.smtp_reply import SmtpReply, Stage
from petrel.models.records import SmtpServer
from petrel.ports import Envelope

OK = SmtpReply.parse(250, "2.0.0 Ok: queued as 4Xq1", Stage.DATA)


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
    """`script[recipient]` is a reply, or a list of replies used in turn (the last one repeats)."""

    def __init__(self, script: dict[str, SmtpReply | Sequence[SmtpReply]] | None = None) -> None:
        self.script: dict[str, SmtpReply | Sequence[SmtpReply]] = dict(script or {})
        self.default = OK
        self.calls: list[RelayCall] = []
        self.close_calls = 0
        self.deadlines: list[float | None] = []  # the deadline each call was given

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

    def relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        self.deadlines.append(deadline)
        answer = self._next_reply(envelope.recipient)
        self.calls.append(RelayCall(server, password, envelope, bytes(data), answer))
        return answer

    def close(self) -> None:
        self.close_calls += 1
