"""A tarpit on 127.0.0.1: a TCP proxy in front of a real SMTP server that slows or stalls it.

The client's bytes pass at once; the server's bytes pass one every `interval` seconds (its greeting,
its TLS handshake, every reply), so each socket read of the client succeeds and smtplib's per-read
timeout never fires. With `stall_after`, the proxy stops reading from the client once it has passed
that many of the client's bytes: a client writing a large DATA payload blocks mid-DATA. With
`hang_up_after`, the tarpit gives up on a connection that lasted that long and closes it itself (and
counts it in `hung_up`): a client whose own deadline failed then ends, and the test can tell who
ended the session, the client or the server.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType


class Tarpit:
    def __init__(
        self,
        upstream_port: int,
        *,
        interval: float = 0.5,
        stall_after: int | None = None,
        hang_up_after: float | None = None,
    ) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._interval = interval
        self._stall_after = stall_after
        self._hang_up_after = hang_up_after
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if stall_after is not None:  # a small receive buffer: the client's writes block soon after the stall
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.held: list[float] = []  # seconds each client connection lasted, as the client closed it
        self.hung_up = 0  # connections the tarpit closed itself, after `hang_up_after`

    def __enter__(self) -> Tarpit:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopped.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def wait_released(self, count: int, timeout: float) -> bool:
        """Wait until `count` client connections have ended."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.held) >= count:
                    return True
            time.sleep(0.05)
        return False

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            upstream = socket.create_connection(self._upstream, timeout=5)
            client.settimeout(0.1)
            upstream.settimeout(0.1)
            self._spawn(self._to_client, client, upstream, time.monotonic())
            self._spawn(self._to_server, client, upstream)

    def _to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        passed = 0
        while not self._stopped.is_set():
            if self._stall_after is not None and passed >= self._stall_after:
                self._stopped.wait(0.1)  # read nothing more: the client's writes fill the buffers and block
                continue
            try:
                chunk = client.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            passed += len(chunk)
            with contextlib.suppress(OSError):
                upstream.sendall(chunk)

    def _to_client(self, client: socket.socket, upstream: socket.socket, started: float) -> None:
        """Trickle the server's bytes, one per interval, until the client hangs up (or the server does)."""
        try:
            while not self._stopped.is_set():
                if self._gives_up(started):
                    return
                try:
                    chunk = upstream.recv(4096)
                except TimeoutError:
                    if self._client_gone(client):
                        return
                    continue
                if not chunk:
                    return
                for byte in chunk:
                    if self._gives_up(started):
                        return
                    client.sendall(bytes([byte]))  # fails once the client has hung up
                    if self._stopped.wait(self._interval):
                        return
        except OSError:
            return  # the client hung up
        finally:
            with self._lock:
                self.held.append(time.monotonic() - started)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _gives_up(self, started: float) -> bool:
        """Whether the connection has lasted `hang_up_after` (then it counts as hung up by the tarpit)."""
        if self._hang_up_after is None or time.monotonic() - started < self._hang_up_after:
            return False
        with self._lock:
            self.hung_up += 1
        return True

    @staticmethod
    def _client_gone(client: socket.socket) -> bool:
        """The client closed or shut down its side (a read sees the end of the stream, or an error)."""
        try:
            readable, _, _ = select.select([client], [], [], 0)
            return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
