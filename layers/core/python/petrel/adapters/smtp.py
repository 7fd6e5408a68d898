"""Relaying through a tenant's MailU with smtplib: TLS verified, AUTH, DSN, a pool of sessions per
server shared by threads and kept across invocations, ESMTP PIPELINING where offered, every
transaction bounded by an overall deadline."""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
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


@dataclass(eq=False)
class _Session:
    """One authenticated SMTP session, used by one thread at a time (it is out of its pool meanwhile)."""

    conn: smtplib.SMTP
    fuse: _Fuse
    pool: _Pool
    dsn: bool
    size: bool
    pipelining: bool
    used: int = 0  # transactions begun on it (a MAIL FROM the server answered)
    last_used: float = 0.0  # wall clock (time.time()) when it was last given back
    broken: bool = False  # 421 or a failed read or write: closed when given back, never reused


class _Pool:
    """The sessions to one server opened with one set of credentials: the idle ones, and how many exist
    (idle, in use or being opened), which never passes the server's concurrency. Guarded by the relay's
    condition. A retired pool (`close()`, a rotated password) takes nothing back: its sessions in use
    are closed when their threads give them back."""

    __slots__ = ("count", "idle", "retired")

    def __init__(self) -> None:
        self.idle: list[_Session] = []  # most recently used last: taken first, so surplus sessions age out
        self.count = 0
        self.retired = False


@dataclass(frozen=True)
class _Slot:
    """What `_take` gives a thread: an idle session to reuse, or (session None) the right to open one."""

    pool: _Pool
    session: _Session | None


class SmtplibRelay:
    """A pool of SMTP sessions per server, shared by threads and kept across invocations.

    Up to `server.shaping.concurrency` sessions per server (and credentials), each used by one thread
    at a time: a thread takes an idle session, opens one while under the limit, or waits for one to be
    given back (never past its deadline). Sessions outlive an invocation: a warm container reuses them,
    unless one has been idle longer than `idle_seconds` by the wall clock (a frozen container's monotonic
    clock stops; the server's does not), which is closed when found and replaced. `close_idle()` closes
    those at the end of an invocation; `close()` closes every session.

    When the server offers PIPELINING (RFC 2920), MAIL FROM, RCPT TO and DATA go in one write and their
    three replies are read after; the body follows only if all three accepted. Without it, one command
    at a time.

    Each call ends by the earlier of the caller's deadline and `transaction_seconds` from its start,
    whatever the server does (trickles its greeting or a reply, stalls mid-DATA, never answers): a
    watchdog thread shuts the connection down at the deadline, and the session is not reused. A 421 or
    any connection error also closes the session. `timeout` still bounds each socket operation.
    """

    def __init__(
        self,
        timeout: float,
        transaction_seconds: float,
        local_hostname: str | None = None,
        *,
        idle_seconds: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = timeout
        self._transaction_seconds = transaction_seconds
        self._local_hostname = local_hostname
        self._idle_seconds = idle_seconds
        self._wall_clock = wall_clock
        self._cond = threading.Condition(threading.Lock())
        self._pools: dict[str, _Pool] = {}  # by `_key`
        self._keys: dict[str, str] = {}  # server id -> the key of the credentials it was last relayed with
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._contexts_lock = threading.Lock()
        self._watchdog = _Watchdog()

    def _context(self, ca_bundle: str | None) -> ssl.SSLContext:
        key = hashlib.sha256((ca_bundle or "").encode()).hexdigest()
        with self._contexts_lock:
            if key not in self._contexts:  # building a context costs ~45 ms: once per CA bundle
                context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                self._contexts[key] = context
            return self._contexts[key]

    @staticmethod
    def _key(server: SmtpServer, password: str) -> str:
        """What a session was opened with, as a digest (never the password itself): a change (a rotated
        password, another CA bundle) means a new pool."""
        parts = (server.host, server.port, str(server.security), server.username, password, server.ca_bundle)
        return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()

    # ------------------------------------------------------------------ the pool

    def _take(self, server: SmtpServer, password: str, watch: _Watch, *, fresh: bool) -> _Slot | SmtpReply:
        """A session to use, or the right to open one; deadline exceeded if none frees up in time.

        `fresh`: the session just reused was found dropped by the server, which has likely dropped its
        idle siblings too (an idle timeout, a restart): close them all and open a new session, so the
        retry is on a live one, never on another dead one."""
        key = self._key(server, password)
        limit = server.shaping.concurrency
        stale: list[_Session] = []
        taken: _Slot | SmtpReply
        with self._cond:
            previous = self._keys.get(server.server_id)
            if previous is not None and previous != key:
                stale += self._retire(previous)
            self._keys[server.server_id] = key
            while True:
                pool = self._pools.setdefault(key, _Pool())
                if fresh:
                    pool.count -= len(pool.idle)
                    stale += pool.idle
                    pool.idle = []
                    fresh = False  # those given back while this thread waits are live
                now = self._wall_clock()
                session = None
                while pool.idle:
                    candidate = pool.idle.pop()
                    if now - candidate.last_used > self._idle_seconds:
                        pool.count -= 1
                        stale.append(candidate)
                        continue
                    session = candidate
                    break
                if session is not None:
                    taken = _Slot(pool, session)
                    break
                if pool.count < limit:
                    pool.count += 1
                    taken = _Slot(pool, None)
                    break
                left = watch.deadline - time.monotonic()
                if left <= 0 or watch.expired:
                    taken = SmtpReply.deadline_exceeded(Stage.CONNECT)
                    break
                self._cond.wait(left)
        for session in stale:  # idle too long or dropped: the server may be gone, so no QUIT to wait on
            _quietly_close(session.conn, session.fuse)
        return taken

    def _give_back(self, session: _Session, *, healthy: bool) -> None:
        """Back to its pool for the next thread, or closed (and its slot freed) if it cannot be reused."""
        keep = healthy and not session.broken
        with self._cond:
            if keep and not session.pool.retired:
                session.last_used = self._wall_clock()
                session.pool.idle.append(session)
                closing = False
            else:
                session.pool.count -= 1
                closing = True
            self._cond.notify_all()
        if closing:
            _quietly_close(session.conn, session.fuse, quit_first=keep)

    def _free_slot(self, pool: _Pool) -> None:
        """A slot taken to open a session that did not open."""
        with self._cond:
            pool.count -= 1
            self._cond.notify_all()

    def _retire(self, key: str) -> list[_Session]:
        """Retire a pool (the caller holds the condition): its idle sessions, to be closed by the caller."""
        pool = self._pools.pop(key, None)
        if pool is None:
            return []
        pool.retired = True
        idle, pool.idle = pool.idle, []
        pool.count -= len(idle)
        self._cond.notify_all()
        return idle

    def close_idle(self) -> None:
        """Close the sessions idle longer than `idle_seconds`; the others stay for the next invocation."""
        stale: list[_Session] = []
        with self._cond:
            now = self._wall_clock()
            for pool in self._pools.values():
                expired = [s for s in pool.idle if now - s.last_used > self._idle_seconds]
                if expired:
                    pool.idle = [s for s in pool.idle if s not in expired]
                    pool.count -= len(expired)
                    stale += expired
            self._cond.notify_all()
        for session in stale:
            _quietly_close(session.conn, session.fuse)

    def close(self) -> None:
        """Close every session: idle ones now (with QUIT), those in use when their threads give them back."""
        with self._cond:
            idle = [session for key in list(self._pools) for session in self._retire(key)]
            self._keys.clear()
        for session in idle:
            _quietly_close(session.conn, session.fuse, quit_first=True)

    # ------------------------------------------------------------------ sessions and transactions

    def _open(self, server: SmtpServer, password: str, watch: _Watch, pool: _Pool) -> _Session | SmtpReply:
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
            pool=pool,
            dsn=conn.has_extn("dsn"),
            size=conn.has_extn("size"),
            pipelining=conn.has_extn("pipelining"),
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
        session: _Session | None = None
        try:
            reply, session = self._relay(server, password, envelope, data, watch)
        finally:
            self._watchdog.release(watch)
            if session is not None:
                # A session whose socket the deadline shut down is never reused, nor one that got a 421 or
                # lost its connection.
                healthy = not watch.expired and reply.code not in (0, ReplyCode.SERVICE_NOT_AVAILABLE)
                self._give_back(session, healthy=healthy)
        if watch.expired:
            # What smtplib made of a reply cut short is no reply ("250 2.0" read up to the shutdown parses
            # as a 250, "2" as code 2).
            return SmtpReply.deadline_exceeded(reply.stage)
        if reply.code == 0 and time.monotonic() >= deadline:  # a timeout or a refused connect at the deadline
            return SmtpReply.deadline_exceeded(reply.stage)
        return reply

    def _relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, watch: _Watch
    ) -> tuple[SmtpReply, _Session | None]:
        """The reply, and the session it came on (to give back), if any."""
        fresh = False
        for _ in range(2):  # a reused session may have been dropped by the server: once more on another
            slot = self._take(server, password, watch, fresh=fresh)
            if isinstance(slot, SmtpReply):
                return slot, None
            session = slot.session
            if session is None:
                try:
                    opened = self._open(server, password, watch, slot.pool)
                except BaseException:  # a bug: the slot must not leak, or the server's pool shrinks for good
                    self._free_slot(slot.pool)
                    raise
                if isinstance(opened, SmtpReply):
                    self._free_slot(slot.pool)
                    return opened, None
                session = opened
            else:
                watch.arm(session.fuse)
            reused = session.used > 0
            try:
                reply = self._transaction(session, envelope, data)
            except BaseException:  # a bug: close the session (in an unknown state) and free its slot
                session.broken = True
                self._give_back(session, healthy=False)
                raise
            if reply is not None:
                return reply, session
            session.broken = True  # found closed before the server accepted anything: nothing was sent
            self._give_back(session, healthy=False)
            if not reused or watch.expired:
                break
            fresh = True
        return SmtpReply.network(Stage.MAIL, "the server closed the connection"), None

    def _transaction(self, session: _Session, envelope: Envelope, data: bytes) -> SmtpReply | None:
        """The reply that ends the transaction, or None if a reused session was found closed."""
        mail_options: list[str] = []
        rcpt_options: list[str] = []
        if session.size:
            mail_options.append(f"SIZE={len(data)}")
        if session.dsn:
            mail_options += ["RET=HDRS", f"ENVID={xtext(envelope.envid)}"]
            rcpt_options += [DSN_NOTIFY, f"ORCPT=rfc822;{xtext(envelope.recipient)}"]
        if session.pipelining:
            return _pipelined(session, envelope, data, mail_options, rcpt_options)
        return _one_by_one(session, envelope, data, mail_options, rcpt_options)


def _one_by_one(
    session: _Session, envelope: Envelope, data: bytes, mail_options: list[str], rcpt_options: list[str]
) -> SmtpReply | None:
    """MAIL FROM, RCPT TO and DATA, each after the reply to the one before (the commands written as
    `_pipelined` writes them, which is what smtplib's mail and rcpt write, without their address parse)."""
    conn = session.conn
    stage = Stage.MAIL
    try:
        conn.send(_command("MAIL FROM:", envelope.sender, mail_options))
        code, message = conn.getreply()
    except smtplib.SMTPServerDisconnected:
        return None if session.used else SmtpReply.network(Stage.MAIL, "the server closed the connection")
    except _FAILURES as exc:
        session.broken = True
        return SmtpReply.network(Stage.MAIL, _describe(exc, stage))
    session.used += 1
    try:
        if code == ReplyCode.SERVICE_NOT_AVAILABLE and session.used > 1:
            return None  # the server is closing an idle session: reconnect once
        if code != ReplyCode.OK:
            _reset(session, code)
            return SmtpReply.parse(code, message, Stage.MAIL)
        stage = Stage.RCPT
        conn.send(_command("RCPT TO:", envelope.recipient, rcpt_options))
        code, message = conn.getreply()
        if code not in (ReplyCode.OK, 251):
            _reset(session, code)
            return SmtpReply.parse(code, message, Stage.RCPT)
        stage = Stage.DATA
        code, message = conn.data(data)
        return SmtpReply.parse(code, message, Stage.DATA)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
        _reset(session, exc.smtp_code)
        return SmtpReply.parse(exc.smtp_code, exc.smtp_error, Stage.DATA)
    except _FAILURES as exc:
        session.broken = True
        return SmtpReply.network(stage, _describe(exc, stage))


def _pipelined(
    session: _Session, envelope: Envelope, data: bytes, mail_options: list[str], rcpt_options: list[str]
) -> SmtpReply | None:
    """RFC 2920: MAIL FROM, RCPT TO and DATA in one write, then their three replies, each checked.

    The body goes only if all three accepted. If DATA got 354 after a refused MAIL or RCPT (a server
    must refuse it then, but the client may not assume so, RFC 2920 §3.1), a lone "." ends that empty
    message, which carries no recipient, and the refusal is the answer."""
    conn = session.conn
    stage = Stage.MAIL
    try:
        commands = _command("MAIL FROM:", envelope.sender, mail_options) + _command(
            "RCPT TO:", envelope.recipient, rcpt_options
        )
        conn.send(commands + "DATA\r\n")
        mail = _read(conn, Stage.MAIL)
    except smtplib.SMTPServerDisconnected:
        session.broken = True
        return None if session.used else SmtpReply.network(Stage.MAIL, "the server closed the connection")
    except _FAILURES as exc:
        session.broken = True
        return SmtpReply.network(Stage.MAIL, _describe(exc, stage))
    session.used += 1
    if mail.code == ReplyCode.SERVICE_NOT_AVAILABLE:
        session.broken = True
        return None if session.used > 1 else mail  # the server is closing an idle session: reconnect once
    try:
        stage = Stage.RCPT
        rcpt = _read(conn, Stage.RCPT)
        if rcpt.code == ReplyCode.SERVICE_NOT_AVAILABLE:
            # The server is closing the session: its reply to DATA will not come, only the close.
            session.broken = True
            return rcpt
        refusal = _first_refusal(mail, rcpt)
        stage = Stage.DATA
        try:
            go_ahead = _read(conn, Stage.DATA)
        except _FAILURES:
            if refusal is None:
                raise
            session.broken = True  # the refusal is the answer; the session is not reused
            return refusal
        if go_ahead.code == ReplyCode.START_MAIL_INPUT:
            if refusal is None:
                conn.send(_dot_stuffed(data))
                return _read(conn, Stage.DATA)
            conn.send(b".\r\n")  # end the DATA the server should not have accepted, with nothing in it
            _read(conn, Stage.DATA)
            _reset(session, 0)
            return refusal
        _reset(session, go_ahead.code)
        return refusal or go_ahead
    except _FAILURES as exc:
        session.broken = True
        return SmtpReply.network(stage, _describe(exc, stage))


def _first_refusal(mail: SmtpReply, rcpt: SmtpReply) -> SmtpReply | None:
    if mail.code != ReplyCode.OK:
        return mail
    if rcpt.code not in (ReplyCode.OK, 251):
        return rcpt
    return None


def _command(verb: str, address: str, options: list[str]) -> str:
    """One command line; an address or option that would carry a line break is refused (ValueError),
    as smtplib's putcmd does: it would inject a command."""
    line = verb + quoted_path(address) + "".join(f" {option}" for option in options)
    if "\r" in line or "\n" in line:
        raise ValueError(f"the {verb.split(maxsplit=1)[0]} command contains a line break")
    return line + "\r\n"


# A plain dot-atom address (what Petrel's envelopes are: VERP return paths and validated recipients).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9+=_-]+(?:\.[A-Za-z0-9+=_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def quoted_path(address: str) -> str:
    """`<address>`, as smtplib's quoteaddr writes it. A plain address is its own path; quoteaddr parses
    it as RFC 5322 text first, which costs 20 to 90 microseconds (a VERP return path is the slow case)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _read(conn: smtplib.SMTP, stage: Stage) -> SmtpReply:
    code, message = conn.getreply()
    return SmtpReply.parse(code, message, stage)


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(data: bytes) -> bytes:
    """The body as DATA sends it (RFC 5321 §4.5.2): each line's leading dot doubled, ended by CRLF.CRLF."""
    body = _LEADING_DOT.sub(b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _reset(session: _Session, code: int) -> None:
    """RSET after a refused transaction; none after a 421 (the server is closing the session)."""
    if code == ReplyCode.SERVICE_NOT_AVAILABLE:
        session.broken = True
        return
    try:
        code, _ = session.conn.rset()
    except _FAILURES:
        session.broken = True
        return
    if code != ReplyCode.OK:
        session.broken = True


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
