"""Relaying through a tenant's MailU with smtplib: TLS verified, AUTH, DSN, sessions reused."""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass

from petrel.mail.smtp_reply import ReplyCode, SmtpReply, Stage
from petrel.models.records import SmtpSecurity, SmtpServer
from petrel.ports import Envelope

DSN_NOTIFY = "NOTIFY=SUCCESS,FAILURE,DELAY"


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except '+' and '=' as is, everything else as +HH."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


@dataclass
class _Session:
    conn: smtplib.SMTP
    fingerprint: tuple[object, ...]
    dsn: bool
    size: bool
    used: int = 0


class SmtplibRelay:
    """One open session per server, reused across a batch's messages; `close()` ends them all.

    Sessions belong to the thread that opened them (Lambda runs one invocation at a time; the local
    stack runs several invocations of one function as threads, like concurrent execution environments).
    """

    def __init__(self, timeout: float, local_hostname: str | None = None) -> None:
        self._timeout = timeout
        self._local_hostname = local_hostname
        self._thread = threading.local()
        self._contexts: dict[str, ssl.SSLContext] = {}

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

    def _open(self, server: SmtpServer, password: str) -> _Session | SmtpReply:
        context = self._context(server.ca_bundle)
        stage = Stage.CONNECT
        conn: smtplib.SMTP | None = None
        try:
            if server.security is SmtpSecurity.TLS:
                stage = Stage.TLS
                conn = smtplib.SMTP_SSL(
                    server.host,
                    server.port,
                    local_hostname=self._local_hostname,
                    timeout=self._timeout,
                    context=context,
                )
                conn.ehlo()
            else:
                conn = smtplib.SMTP(
                    server.host, server.port, local_hostname=self._local_hostname, timeout=self._timeout
                )
                conn.ehlo()
                stage = Stage.TLS
                if not conn.has_extn("starttls"):
                    conn.close()
                    return SmtpReply.network(Stage.TLS, "the server does not offer STARTTLS")
                code, message = conn.starttls(context=context)
                if code != ReplyCode.SERVICE_READY:
                    conn.close()
                    return SmtpReply.parse(code, message, Stage.TLS)
                conn.ehlo()
            stage = Stage.AUTH
            conn.login(server.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            _quietly_close(conn)
            return SmtpReply.parse(exc.smtp_code, exc.smtp_error, Stage.AUTH)
        except smtplib.SMTPNotSupportedError:
            _quietly_close(conn)
            return SmtpReply.network(Stage.AUTH, "the server does not offer AUTH over TLS")
        except smtplib.SMTPResponseException as exc:
            _quietly_close(conn)
            return SmtpReply.parse(exc.smtp_code, exc.smtp_error, stage)
        except ssl.SSLCertVerificationError as exc:
            _quietly_close(conn)
            return SmtpReply.network(Stage.TLS, f"TLS certificate not trusted: {exc.verify_message}")
        except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
            _quietly_close(conn)
            return SmtpReply.network(stage, _describe(exc))
        return _Session(
            conn=conn,
            fingerprint=self._fingerprint(server, password),
            dsn=conn.has_extn("dsn"),
            size=conn.has_extn("size"),
        )

    def relay(
        self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
    ) -> SmtpReply:
        session = self._sessions.get(server.server_id)
        if session is not None and session.fingerprint != self._fingerprint(server, password):
            self._drop(server.server_id)
            session = None
        for _ in range(2):  # a reused session may have timed out on the server: reconnect once
            reused = session is not None
            if session is None:
                opened = self._open(server, password)
                if isinstance(opened, SmtpReply):
                    return opened
                session = self._sessions[server.server_id] = opened
            reply = self._transaction(session, envelope, data)
            if reply is not None:
                if reply.code in (0, ReplyCode.SERVICE_NOT_AVAILABLE):
                    self._drop(server.server_id)
                return reply
            self._drop(server.server_id)
            session = None
            if not reused:
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
        except (OSError, smtplib.SMTPException) as exc:
            return SmtpReply.network(Stage.MAIL, _describe(exc))
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
        except (OSError, smtplib.SMTPException) as exc:
            return SmtpReply.network(stage, _describe(exc))

    def _drop(self, server_id: str) -> None:
        session = self._sessions.pop(server_id, None)
        if session is not None:
            _quietly_close(session.conn, quit_first=True)

    def close(self) -> None:
        for server_id in list(self._sessions):
            self._drop(server_id)


def _reset(conn: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError, smtplib.SMTPException):
        conn.rset()


def _quietly_close(conn: smtplib.SMTP | None, quit_first: bool = False) -> None:
    if conn is None:
        return
    try:
        if quit_first:
            conn.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        conn.close()


def _timed_out(exc: BaseException) -> bool:
    """A timeout, or an error smtplib raised because of one (it reports a read that timed out as
    "Connection unexpectedly closed")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.timeout | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    if _timed_out(exc):
        return "timed out waiting for the server"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    return f"{type(exc).__name__}: {exc}"[:300]
