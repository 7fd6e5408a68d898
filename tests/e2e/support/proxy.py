"""A TCP proxy in front of the stand-in's submission port, with switchable faults (a session dropped
after DATA, a stall mid-DATA). TLS (STARTTLS) passes through it opaque: it only counts bytes."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections import Counter

from tests.e2e.support.tracking import wait_until


def wait_refused(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until connecting to `host:port` is refused: a server that was just stopped may still have
    a process holding its listening socket for a moment, and would take (and drop) a connection."""

    def refused() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False

    wait_until(refused, timeout, f"{host}:{port} to refuse connections", interval=0.05)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream` with switchable faults.

    Modes (`set_mode`), applied to every connection as its bytes flow:

    * ``pass``: forward both ways.
    * ``drop-after-data``: forward both ways, but when the server speaks after the client has sent more
      than `threshold` bytes since the server last spoke (the body of a DATA), close both sockets instead
      of forwarding the server's bytes: the server took the message, the client never hears its reply.
      ``times=n`` reverts to ``pass`` after n drops.
    * ``stall``: once the client has sent more than `threshold` bytes since the server last spoke,
      forward exactly `threshold` of them and then nothing more in either direction, holding both
      sockets open. When the mode is changed again, stalled connections are closed (their held bytes are
      never delivered, so the server never completes that DATA).

    The message body must be well over `threshold` (SMTP commands and TLS handshakes are far smaller).
    """

    PASS = "pass"
    DROP_AFTER_DATA = "drop-after-data"
    STALL = "stall"
    MODES = (PASS, DROP_AFTER_DATA, STALL)

    def __init__(self, upstream_host: str, upstream_port: int, *, threshold: int = 16 * 1024) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()
        self._lock = threading.Lock()
        self._mode = self.PASS
        self._threshold = threshold
        self._drops_left: int | None = None
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.stats: Counter[str] = Counter()  # connections, dropped, stalled
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def set_mode(self, mode: str, *, threshold: int | None = None, times: int | None = None) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if times is not None and mode != self.DROP_AFTER_DATA:
            raise ValueError("times= applies to drop-after-data only")
        with self._lock:
            self._mode = mode
            self._drops_left = times
            if threshold is not None:
                self._threshold = threshold

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join(timeout=2)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _settings(self) -> tuple[str, int]:
        with self._lock:
            return self._mode, self._threshold

    def _take_drop(self) -> bool:
        with self._lock:
            if self._mode != self.DROP_AFTER_DATA:
                return False
            if self._drops_left is not None:
                self._drops_left -= 1
                if self._drops_left <= 0:
                    self._mode, self._drops_left = self.PASS, None
            self.stats["dropped"] += 1
            return True

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(client)  # as if the server refused: the client sees its connection closed
            return
        for sock in (client, upstream):
            sock.settimeout(30)  # only sendall can block; recv runs when select says readable
        with self._lock:
            self._sockets |= {client, upstream}
            self.stats["connections"] += 1
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, "client")
        selector.register(upstream, selectors.EVENT_READ, "server")
        since_server = 0  # bytes the client sent since the server last spoke
        stalled = False
        try:
            while not self._closed.is_set():
                if stalled:  # hold: read nothing, forward nothing, until the mode changes
                    if self.mode != self.STALL:
                        return
                    self._closed.wait(0.05)
                    continue
                for key, _ in selector.select(timeout=0.1):
                    data = key.fileobj.recv(16 * 1024)  # type: ignore[union-attr]
                    if not data:
                        return
                    mode, threshold = self._settings()
                    if key.data == "client":
                        if mode == self.STALL and since_server + len(data) > threshold:
                            upstream.sendall(data[: max(threshold - since_server, 0)])
                            stalled = True
                            with self._lock:
                                self.stats["stalled"] += 1
                            break
                        upstream.sendall(data)
                        since_server += len(data)
                    else:
                        if since_server > threshold and mode == self.DROP_AFTER_DATA and self._take_drop():
                            return
                        client.sendall(data)
                        since_server = 0
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                _close(sock)
            with self._lock:
                self._sockets -= {client, upstream}


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
