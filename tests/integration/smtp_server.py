"""A scripted submission server on 127.0.0.1 (aiosmtpd): STARTTLS or implicit TLS, AUTH, optional DSN
and PIPELINING.

Replies are scripted per recipient (at RCPT or at DATA); everything the server saw is recorded:
EHLOs, logins, connections (and the most open at once), each read from a client as it arrived (so a
test can tell pipelined commands, which arrive in one read), and each accepted message with its
envelope and options.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from local.tls import TlsFiles

USERNAME = "relay@example.com"
PASSWORD = "correct horse battery staple"
DSN_PARAMS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


@dataclass(frozen=True)
class Received:
    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_to: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    data: bytes


@dataclass
class ScriptedHandler:
    """`script[recipient] = ("rcpt" | "data", "451 4.3.0 ...")`; other recipients get 250.

    `("stall", "<seconds>")` takes the message and waits before answering; `("drop", "")` takes it and
    hangs up without answering (the client cannot know it was taken); `("trickle", "<seconds>")` takes
    it and answers with continuation lines (`250-...`), one byte every `<seconds>`, for as long as the
    client listens: every read succeeds, the reply never ends. `("lax", "550 ...")` refuses the RCPT
    but, like a server that breaks RFC 2920, still answers 354 to DATA (what then arrives is kept in
    `lax_bodies`, and refused).

    `gate = k`: the first messages' DATA waits until k sessions are in DATA at once (451 if that does
    not happen within 10 s), which proves k transactions ran concurrently.
    """

    dsn: bool = False
    pipelining: bool = False
    gate: int = 0
    password: str = PASSWORD
    script: dict[str, tuple[str, str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    ehlos: int = 0
    logins: list[tuple[str, bool]] = field(default_factory=list)
    protocols: list[SMTP] = field(default_factory=list)  # one per connection that said EHLO
    reads: list[tuple[int, bytes]] = field(default_factory=list)  # (connection's id, what one read got)
    open_now: int = 0
    most_open: int = 0  # the most connections open at once
    lax_bodies: list[bytes] = field(default_factory=list)
    _in_data: int = 0
    _gate_open: asyncio.Event | None = None

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == USERNAME
            and data.password.decode() == self.password
        )
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)

    @property
    def connections(self) -> int:
        return len(self.protocols)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.ehlos += 1
        if not any(p is server for p in self.protocols):
            self.protocols.append(server)
        if self.dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        stage, reply = self.script.get(address.lower(), ("", ""))
        if stage == "rcpt":
            return reply
        if stage == "rcpt-close":  # as Postfix does after a 421: the reply, then the connection closes
            server.transport.write(f"{reply}\r\n".encode())  # type: ignore[union-attr]
            server.transport.close()  # type: ignore[union-attr]
            return reply
        envelope.rcpt_tos.append(address)
        if stage == "lax":  # kept, so aiosmtpd answers DATA with 354
            return reply
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.gate:
            await self._pass_gate()
        for recipient in envelope.rcpt_tos:
            if self.script.get(recipient.lower(), ("", ""))[0] == "lax":
                self.lax_bodies.append(bytes(envelope.original_content or b""))
                return "554 5.5.1 Error: no valid recipients"
        for recipient in envelope.rcpt_tos:
            stage, reply = self.script.get(recipient.lower(), ("", ""))
            if stage == "data":
                return reply
            if stage == "stall":  # take the message, then say nothing for `reply` seconds
                await asyncio.sleep(float(reply))
            if stage == "trickle":
                self.received.append(self._received(envelope))
                await self._trickle(server, float(reply))
                return "250 2.0.0 too late"
            if stage == "drop":  # take the message, then hang up instead of answering
                self.received.append(self._received(envelope))
                server.transport.abort()  # type: ignore[union-attr]
                return "250 2.0.0 never sent"
        self.received.append(self._received(envelope))
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    async def _pass_gate(self) -> None:
        if self._gate_open is None:
            self._gate_open = asyncio.Event()
        self._in_data += 1
        if self._in_data >= self.gate:
            self._gate_open.set()
        try:
            await asyncio.wait_for(self._gate_open.wait(), timeout=10)
        finally:
            self._in_data -= 1

    @staticmethod
    async def _trickle(server: SMTP, interval: float) -> None:
        transport = server.transport
        assert isinstance(transport, asyncio.WriteTransport)
        while True:
            for byte in b"250-2.0.0 still working\r\n":
                if transport.is_closing():
                    return
                transport.write(bytes([byte]))
                await asyncio.sleep(interval)

    @staticmethod
    def _received(envelope: Envelope) -> Received:
        return Received(
            mail_from=str(envelope.mail_from),
            mail_options=tuple(envelope.mail_options),
            rcpt_to=tuple(envelope.rcpt_tos),
            rcpt_options=tuple(envelope.rcpt_options),
            data=bytes(envelope.original_content or b""),
        )


class _Smtp(SMTP):
    """aiosmtpd refuses every RCPT parameter and MAIL parameters it does not know; accept DSN's."""

    def __init__(self, handler: ScriptedHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._dsn = handler.dsn
        self._recorder = handler
        self._counted = False
        self.closed = threading.Event()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self._counted:  # once per connection (STARTTLS makes it again)
            self._counted = True
            self._recorder.open_now += 1
            self._recorder.most_open = max(self._recorder.most_open, self._recorder.open_now)

    def data_received(self, data: bytes) -> None:
        self._recorder.reads.append((id(self), bytes(data)))
        super().data_received(data)

    def _getparams(self, params: Any) -> Any:
        result = super()._getparams(params)
        if result is not None and self._dsn:
            result = {k: v for k, v in result.items() if k not in DSN_PARAMS}
        return result

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if not self.closed.is_set():
            self._recorder.open_now -= 1
        self.closed.set()


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _Smtp(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    controller: Controller
    handler: ScriptedHandler
    port: int
    security: str  # "starttls" or "tls"
    host: str = "127.0.0.1"

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Drop every open session from the server side (a restart, an idle timeout), and wait for it."""
        live = [p for p in self.handler.protocols if p.transport is not None]
        for protocol in live:
            self.controller.loop.call_soon_threadsafe(protocol.transport.abort)  # type: ignore[union-attr]
        for protocol in live:
            assert protocol.closed.wait(timeout), "the server did not close the session"  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop the server. Sessions a client still holds open (the relay keeps them for its next
        invocation) are aborted first: aiosmtpd would otherwise wait for them to end."""
        for protocol in self.handler.protocols:
            if protocol.transport is not None:
                self.controller.loop.call_soon_threadsafe(protocol.transport.abort)
        self.controller.stop()


def start_server(
    tls: TlsFiles, *, security: str = "starttls", dsn: bool = False, pipelining: bool = False
) -> RunningServer:
    handler = ScriptedHandler(dsn=dsn, pipelining=pipelining)
    port = free_port()
    common: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "server_hostname": "mail.test",
        "authenticator": handler.authenticate,
        "auth_required": True,
    }
    if security == "starttls":
        controller = _Controller(
            handler, tls_context=tls.server_context(), require_starttls=True, auth_require_tls=True, **common
        )
    else:  # implicit TLS: the whole connection is TLS, so AUTH needs no STARTTLS first
        controller = _Controller(handler, ssl_context=tls.server_context(), auth_require_tls=False, **common)
    controller.start()
    return RunningServer(controller, handler, port, security)
