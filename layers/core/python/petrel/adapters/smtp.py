"""Relaying through a tenant's MailU with smtplib: TLS verified, AUTH, DSN, sessions reused, every
transaction bounded by an overall deadline."""

from __future__ import annotations

import contextlib
import hashlib
import math
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from petrel.adapters.net import timed_out
from petrel.mail.smtp_reply import ReplyCode, SmtpReply, Stage
from petrel.models.records import SmtpSecurity, SmtpServer
from petrel.ports import Envelope

DSN_NOTIFY = "NOTIFY=SUCCESS,FAILURE,DELAY"

# Everything smtplib, ssl and socket raise for a failed conversation: OSError covers socket and TLS
# errors and timeouts, ValueError text a command cannot carry (UnicodeEncodeError of a non-ASCII
# password, an invalid IDNA host name). Each becomes a reply, never an exception out of `relay`.
_FAILURES = (smtplib.SMTPException, OSError, ValueError)


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except '+' and '=' as is, everything else as +HH."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


class _Fuse:
    """The off switch of one connection: a duplicate descriptor of its socket.

    smtplib's timeout bounds each socket read, not a conversation, and gives no handle on a read in
    progress. Shutting the socket down through this duplicate ends whatever call is blocked on the
    connection (connect aside: it is bounded by the time left), a read, a write or a TLS handshake,
    whichever object wraps the socket by then (STARTTLS replaces it). Closed with its connection.
    """

    __slots__ = ("_blown", "_closed", "_connect_by", "_lock", "_sock")

    def __init__(self, connect_by: float) -> None:
        self._connect_by = connect_by
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._blown = False
        self._closed = False

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        left = self._connect_by - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left to connect")
        sock = socket.create_connection((host, port), min(timeout, left))
        sock.settimeout(timeout)  # each later read or write: the relay's per-operation timeout
        with self._lock:
            self._sock = sock.dup()
            if self._blown:
                self._shutdown(self._sock)
        return sock

    def blow(self) -> None:
        with self._lock:
            self._blown = True
            if self._sock is not None and not self._closed:
                self._shutdown(self._sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # not connected (any more): nothing is blocked on it
            sock.shutdown(socket.SHUT_RDWR)


class _Connection(smtplib.SMTP):
    """smtplib.SMTP whose socket comes from (and can be shut down through) a fuse."""

    def __init__(self, host: str, port: int, fuse: _Fuse, *, local_hostname: str | None, timeout: float) -> None:
        self.fuse = fuse
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.fuse.connect(host, port, timeout)


class _TlsConnection(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL (implicit TLS) whose socket comes from (and can be shut down through) a fuse."""

    def __init__(
        self,
        host: str,
        port: int,
        fuse: _Fuse,
        *,
        local_hostname: str | None,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        self.fuse = fuse
        self.server_hostname = host
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self.fuse.connect(host, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self.server_hostname)


class _Watch:
    """One relay call's deadline. The watchdog expires it (and blows the fuse of the connection it is
    on) when the deadline passes before the call releases it."""

    __slots__ = ("deadline", "expired", "fuse")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.fuse: _Fuse | None = None

    def arm(self, fuse: _Fuse) -> None:
        """The call now runs on the connection of `fuse`."""
        self.fuse = fuse
        if self.expired:
            fuse.blow()

    def expire(self) -> None:
        self.expired = True
        fuse = self.fuse
        if fuse is not None:
            fuse.blow()


class _Watchdog:
    """One thread per relay that expires calls at their deadlines; started on first use, idle (waiting
    on a condition) while nothing is due. A call costs a lock and a set insertion, not a thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._live: set[_Watch] = set()
        self._wake_at = math.inf  # never later than the earliest live deadline
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> _Watch:
        watch = _Watch(deadline)
        with self._cond:
            self._live.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smtp-deadlines", daemon=True)
                self._thread.start()
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._cond.notify()
        return watch

    def release(self, watch: _Watch) -> None:
        """The call ended: from now on its watch never expires (read `expired` after this)."""
        with self._cond:
            self._live.discard(watch)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._live if w.deadline <= now]:
                    self._live.discard(watch)
                    watch.expire()
                self._wake_at = min((w.deadline for w in self._live), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


@dataclass
class _Session:
    conn: smtplib.SMTP
    fuse: _Fuse
    fingerprint: tuple[object, ...]
    dsn: bool
    size: bool
    used: int = 0


class SmtplibRelay:
    """One open session per server, reused across a batch's messages; `close()` ends them all.

    Each call ends by the earlier of the caller's deadline and `transaction_seconds` from its start,
    whatever the server does (trickles its greeting or a reply, stalls mid-DATA, never answers): a
    watchdog thread shuts the connection down at the deadline, and the session is not reused.
    `timeout` still bounds each socket operation on its own.

    Sessions belong to the thread that opened them (Lambda runs one invocation at a time; the local
    stack runs several invocations of one function as threads, like concurrent execution environments).
    """

    def __init__(self, timeout: float, transaction_seconds: float, local_hostname: str | None = None) -> None:
        self._timeout = timeout
        self._transaction_seconds = transaction_seconds
        self._local_hostname = local_hostname
        self._thread = threading.local()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._watchdog = _Watchdog()

    @property
    def _sessions(self) -> dict[str, _Session]:
        sessions: dict[str, _Session] | None = getattr(self._thread, "sessions", None)
        if sessions is None:
            sessions = self._thread.sessions = {}
        return sessions

    def _context(self, ca_bundle: str | None) -> ssl.SSLContext:
        key = hashlib.sha256((ca_bundle or "").encode()).hexdigest()
        if key not in self._contexts:  # building a context costs ~45 ms: once per CA bundle
            context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._contexts[key] = context
        return self._contexts[key]

    @staticmethod
    def _fingerprint(server: SmtpServer, password: str) -> tuple[object, ...]:
        """What a session was opened with; a change (a rotated password) means a new session."""
        return (server.host, server.port, server.security, server.username, password, server.ca_bundle)

    def _open(self, server: SmtpServer, password: str, watch: _Watch) -> _Session | SmtpReply:
        stage = Stage.TLS  # a CA bundle that OpenSSL refuses
        fuse = _Fuse(connect_by=watch.deadline)
        watch.arm(fuse)
        conn: smtplib.SMTP | None = None
        try:
            context = self._context(server.ca_bundle)
            stage = Stage.CONNECT
            if server.security is SmtpSecurity.TLS:
                stage = Stage.TLS
                conn = _TlsConnection(
                    server.host,
                    server.port,
                    fuse,
                    local_hostname=self._local_hostname,
                    timeout=self._timeout,
                    context=context,
                )
                conn.ehlo()
            else:
                conn = _Connection(
                    server.host, server.port, fuse, local_hostname=self._local_hostname, timeout=self._timeout
                )
                conn.ehlo()
                stage = Stage.TLS
                if not conn.has_extn("starttls"):
                    _quietly_close(conn, fuse)
                    return SmtpReply.network(Stage.TLS, "the server does not offer STARTTLS")
                code, message = conn.starttls(context=context)
                if code != ReplyCode.SERVICE_READY:
                    _quietly_close(conn, fuse)
                    return SmtpReply.parse(code, message, Stage.TLS)
                conn.ehlo()
            stage = Stage.AUTH
            conn.login(server.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn, fuse)
            return SmtpReply.parse(exc.smtp_code, exc.smtp_error, Stage.AUTH)
        except smtplib.SMTPNotSupportedError:
            _quietly_close(conn, fuse)
            return SmtpReply.network(Stage.AUTH, "the server does not offer AUTH over TLS")
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn, fuse)
            return SmtpReply.parse(exc.smtp_code, exc.smtp_error, stage)
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn, fuse)
            return SmtpReply.network(Stage.TLS, f"TLS certificate not trusted: {exc.verify_message}")
        except _FAILURES as exc:
            _quietly_close(conn, fuse)
            return SmtpReply.network(stage, _describe(exc, stage))
        return _Session(
            conn=conn,
            fuse=fuse,
            fingerprint=self._fingerprint(server, password),
            dsn=conn.has_extn("dsn"),
            size=conn.has_extn("size"),
        )

    def relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        now = time.monotonic()
        limit = now + self._transaction_seconds
        deadline = limit if deadline is None else min(deadline, limit)
        if deadline <= now:
            return SmtpReply.deadline_exceeded(Stage.CONNECT)
        watch = self._watchdog.watch(deadline)
        try:
            reply = self._relay(server, password, envelope, data, watch)
        finally:
            self._watchdog.release(watch)
        if watch.expired:
            # The socket was shut down: the session is never reused, and what smtplib made of a reply cut
            # short is no reply ("250 2.0" read up to the shutdown parses as a 250, "2" as code 2).
            self._drop(server.server_id)
            return SmtpReply.deadline_exceeded(reply.stage)
        if reply.code == 0 and time.monotonic() >= deadline:  # a timeout or a refused connect at the deadline
            return SmtpReply.deadline_exceeded(reply.stage)
        return reply

    def _relay(self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, watch: _Watch) -> SmtpReply:
        session = self._sessions.get(server.server_id)
        if session is not None and session.fingerprint != self._fingerprint(server, password):
            self._drop(server.server_id)
            session = None
        for _ in range(2):  # a reused session may have timed out on the server: reconnect once
            reused = session is not None
            if session is None:
                opened = self._open(server, password, watch)
                if isinstance(opened, SmtpReply):
                    return opened
                session = self._sessions[server.server_id] = opened
            else:
                watch.arm(session.fuse)
            reply = self._transaction(session, envelope, data)
            if reply is not None:
                if reply.code in (0, ReplyCode.SERVICE_NOT_AVAILABLE):
                    self._drop(server.server_id)
                return reply
            self._drop(server.server_id)
            session = None
            if not reused or watch.expired:
                break
        return SmtpReply.network(Stage.MAIL, "the server closed the connection")

    def _transaction(self, session: _Session, envelope: Envelope, data: bytes) -> SmtpReply | None:
        """The reply that ends the transaction, or None if a reused session was found closed."""
        conn = session.conn
        mail_options: list[str] = []
        rcpt_options: list[str] = []
        if session.size:
            mail_options.append(f"SIZE={len(data)}")
        if session.dsn:
            mail_options += ["RET=HDRS", f"ENVID={xtext(envelope.envid)}"]
            rcpt_options += [DSN_NOTIFY, f"ORCPT=rfc822;{xtext(envelope.recipient)}"]
        stage = Stage.MAIL
        try:
            code, message = conn.mail(envelope.sender, mail_options)
        except smtplib.SMTPServerDisconnected:
            return None if session.used else SmtpReply.network(Stage.MAIL, "the server closed the connection")
        except _FAILURES as exc:
            return SmtpReply.network(Stage.MAIL, _describe(exc, stage))
        session.used += 1
        try:
            if code == ReplyCode.SERVICE_NOT_AVAILABLE and session.used > 1:
                return None  # the server is closing an idle session: reconnect once
            if code != ReplyCode.OK:
                _reset(conn)
                return SmtpReply.parse(code, message, Stage.MAIL)
            stage = Stage.RCPT
            code, message = conn.rcpt(envelope.recipient, rcpt_options)
            if code not in (ReplyCode.OK, 251):
                _reset(conn)
                return SmtpReply.parse(code, message, Stage.RCPT)
            stage = Stage.DATA
            code, message = conn.data(data)
            return SmtpReply.parse(code, message, Stage.DATA)
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            _reset(conn)
            return SmtpReply.parse(exc.smtp_code, exc.smtp_error, Stage.DATA)
        except _FAILURES as exc:
            return SmtpReply.network(stage, _describe(exc, stage))

    def _drop(self, server_id: str) -> None:
        session = self._sessions.pop(server_id, None)
        if session is not None:
            _quietly_close(session.conn, session.fuse, quit_first=True)

    def close(self) -> None:
        for server_id in list(self._sessions):
            self._drop(server_id)


def _reset(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(*_FAILURES):
        conn.rset()


def _quietly_close(conn: smtplib.SMTP | None, fuse: _Fuse, quit_first: bool = False) -> None:
    try:
        if conn is not None and quit_first:
            conn.quit()
    except _FAILURES:
        pass
    finally:
        if conn is not None:
            conn.close()
        fuse.close()  # the last descriptor of the socket: the connection really ends here


def _describe(exc: BaseException, stage: Stage) -> str:
    if isinstance(exc, UnicodeError):  # never the text itself: at AUTH it holds the password
        if stage is Stage.AUTH:
            return "the SMTP username or password is not ASCII: smtplib's AUTH cannot send it"
        return f"{type(exc).__name__}: the {stage} command cannot be sent as ASCII"
    if timed_out(exc):
        return "timed out waiting for the server"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    return f"{type(exc).__name__}: {exc}"[:300]
