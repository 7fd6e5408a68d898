"""A local SMTP sink for benchmarks: aiosmtpd with STARTTLS and AUTH, discarding what it gets."""

from __future__ import annotations

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
from aiosmtpd.smtp import AuthResult, LoginPassword

from local.tls import make_tls_files

USER, PASSWORD = "bench@petrel.test", "bench-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Discard:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 2.0.0 Ok: queued"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login.decode() == USER and data.password.decode() == PASSWORD
    return AuthResult(success=ok)


class _InProcessSink:
    def __init__(self) -> None:
        tls = make_tls_files(Path(tempfile.mkdtemp(prefix="petrel-bench-")))
        self.ca_pem = tls.ca_pem
        context = tls.server_context()
        self.port = _free_port()
        self._controller = Controller(
            _Discard(),
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
    """The sink in its own process, so the client's CPU time and GIL are its own."""

    def __enter__(self) -> Sink:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.sink"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        info = json.loads(self._process.stdout.readline())
        self.port: int = info["port"]
        self.ca_pem: str = info["ca_pem"]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)


if __name__ == "__main__":
    # aiosmtpd logs a deprecation warning of its own on every AUTH (its Session.login_data).
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    _InProcessSink().serve_until_stdin_closes()
