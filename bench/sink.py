"""A local SMTP sink for benchmarks: aiosmtpd with STARTTLS and AUTH, discarding what it gets.

Optionally it offers PIPELINING (as Postfix does) and delays each reply by a stated round trip, as a
network would: a reply leaves `delay_ms` after the command it answers was read, and replies in flight
do not hold up reading the next command, so pipelined commands share one round trip, as on the wire.
`data_delay_ms` delays only each message's final reply (the server's queue write and a round trip),
as bench.worker's model of a transaction states it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from local.tls import make_tls_files

USER, PASSWORD = "bench@petrel.test", "bench-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Discard:
    def __init__(self, *, pipelining: bool = False, data_delay: float = 0.0) -> None:
        self.count = 0
        self.pipelining = pipelining
        self.data_delay = data_delay

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return "250 2.0.0 Ok: queued"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login.decode() == USER and data.password.decode() == PASSWORD
    return AuthResult(success=ok)


class _DelayedSmtp(SMTP):
    """aiosmtpd whose replies arrive `delay` seconds after their commands, without holding up the next
    command: each reply is written by a timer, in order. The replies before a change of transport
    (STARTTLS's 220) and before hanging up (QUIT's 221) are awaited instead, so they are not lost."""

    def __init__(self, handler: Any, *, delay: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._delay = delay
        self._last_due = 0.0

    async def push(self, status: Any) -> None:
        if not self._delay:
            await super().push(status)
            return
        text = status if isinstance(status, str) else status.decode()
        now = self.loop.time()
        due = max(now + self._delay, self._last_due + 1e-6)  # strictly later: timers keep the replies' order
        self._last_due = due
        if text.startswith(("220 Ready to start TLS", "221")):
            await asyncio.sleep(due - now)
            await super().push(status)
            return
        self.loop.call_at(due, self._write, text.encode() + b"\r\n")

    def _write(self, line: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(line)  # type: ignore[attr-defined]


class _Controller(Controller):
    def __init__(self, handler: Any, *, delay: float, **kwargs: Any) -> None:
        self._delay = delay
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return _DelayedSmtp(self.handler, delay=self._delay, **self.SMTP_kwargs)


class _InProcessSink:
    def __init__(self, *, delay: float, pipelining: bool, data_delay: float) -> None:
        tls = make_tls_files(Path(tempfile.mkdtemp(prefix="petrel-bench-")))
        self.ca_pem = tls.ca_pem
        context = tls.server_context()
        self.port = _free_port()
        self._controller = _Controller(
            _Discard(pipelining=pipelining, data_delay=data_delay),
            delay=delay,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=_authenticate,
            auth_require_tls=True,
            data_size_limit=None,
        )

    def serve_until_stdin_closes(self) -> None:
        self._controller.start()
        print(json.dumps({"port": self.port, "ca_pem": self.ca_pem}), flush=True)
        sys.stdin.read()
        self._controller.stop()


class Sink:
    """The sink in its own process, so the client's CPU time and GIL are its own. `delay_ms`: the round
    trip added to every reply; `data_delay_ms`: the time added to each message's final reply alone;
    `pipelining`: offer ESMTP PIPELINING."""

    def __init__(self, *, delay_ms: float = 0.0, pipelining: bool = False, data_delay_ms: float = 0.0) -> None:
        self.delay_ms = delay_ms
        self.pipelining = pipelining
        self.data_delay_ms = data_delay_ms

    def describe(self) -> str:
        offers = "PIPELINING offered" if self.pipelining else "no PIPELINING"
        data = f", {self.data_delay_ms:g} ms more per message's final reply" if self.data_delay_ms else ""
        return f"{self.delay_ms:g} ms injected per reply{data}, {offers}"

    def __enter__(self) -> Sink:
        command = [sys.executable, "-m", "bench.sink", "--delay-ms", str(self.delay_ms)]
        command += ["--data-delay-ms", str(self.data_delay_ms)]
        if self.pipelining:
            command.append("--pipelining")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        info = json.loads(self._process.stdout.readline())
        self.port: int = info["port"]
        self.ca_pem: str = info["ca_pem"]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a client left a session open: aiosmtpd waits for it
            self._process.kill()
            self._process.wait()

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)


if __name__ == "__main__":
    # aiosmtpd logs a deprecation warning of its own on every AUTH (its Session.login_data).
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the round trip added to every reply")
    parser.add_argument("--pipelining", action="store_true", help="offer ESMTP PIPELINING")
    parser.add_argument("--data-delay-ms", type=float, default=0.0, help="the time added to each final reply")
    args = parser.parse_args()
    _InProcessSink(
        delay=args.delay_ms / 1000, pipelining=args.pipelining, data_delay=args.data_delay_ms / 1000
    ).serve_until_stdin_closes()
