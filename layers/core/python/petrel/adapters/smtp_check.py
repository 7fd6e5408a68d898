"""One SMTP conversation with a tenant's server that sends no mail (`petrel server test`, the admin API's
`.../servers/{id}/test`, and the check of a new password before it is stored).

Connect, TLS as the server is configured (STARTTLS or implicit TLS, the certificate verified against
the system's CAs or the server's CA bundle, TLS 1.2 at least, as the relay does), AUTH with the
stored password, MAIL FROM the tenant's return path, then RSET and QUIT. Each step is reported as it
ends; the first failure ends the check. smtplib is used directly: the relay adapter's session always
goes on to RCPT and DATA.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable

from petrel.models.admin import Step
from petrel.models.records import SmtpSecurity, SmtpServer

_FAILURES = (smtplib.SMTPException, OSError, ValueError)

Report = Callable[[Step], None]


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The context the relay builds for a server (petrel.adapters.smtp)."""
    context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _first(message: bytes) -> bytes:
    """The first line of a multi-line reply (EHLO's: the server's name, not its extensions)."""
    return message.splitlines()[0] if message else message


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}".strip()


def _failure(exc: BaseException, step: str) -> str:
    """The error in one line, never holding the password (a UnicodeError at AUTH would quote it)."""
    if isinstance(exc, UnicodeError):
        return "the username or password is not ASCII: smtplib's AUTH cannot send it"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (a self-signed server needs --ca-file)"
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, TimeoutError):
        return f"timed out during {step}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class _Check:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.failed: Step | None = None

    def step(self, name: str, ok: bool, detail: str) -> bool:
        step = Step(name, ok, detail)
        self.report(step)
        if not ok:
            self.failed = step
        return ok


def check_server(
    server: SmtpServer, password: str, mail_from: str, report: Report, *, timeout: float = 30.0
) -> Step | None:
    """Run the check, reporting each step; the failed step, or None when every step passed."""
    check = _Check(report)
    context = tls_context(server.ca_bundle)
    implicit = server.security is SmtpSecurity.TLS
    where = f"{server.host}:{server.port}" + (" (implicit TLS)" if implicit else "")
    conn: smtplib.SMTP | None = None
    stage = "connect"
    try:
        # smtplib connects in the constructor (a greeting other than 220 raises SMTPConnectError);
        # STARTTLS verifies the certificate against the host name given here.
        if implicit:
            conn = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
        else:
            conn = smtplib.SMTP(server.host, server.port, timeout=timeout)
        code, message = conn.ehlo()
        if not check.step(stage, code == 250, f"{where}: {_reply(code, _first(message))}"):
            return check.failed
        if implicit:
            check.step("tls", True, _tls_detail(conn))
        else:
            stage = "starttls"
            if not conn.has_extn("starttls"):
                check.step(stage, False, "the server does not offer STARTTLS")
                return check.failed
            code, message = conn.starttls(context=context)
            if not check.step(stage, code == 220, _tls_detail(conn) if code == 220 else _reply(code, message)):
                return check.failed
            conn.ehlo()
        stage = "auth"
        code, message = conn.login(server.username, password)
        check.step(stage, True, f"as {server.username}: {_reply(code, message)}")
        stage = "mail from"
        code, message = conn.mail(mail_from)
        if not check.step(stage, code == 250, f"<{mail_from}>: {_reply(code, message)}"):
            return check.failed
        stage = "rset/quit"
        conn.rset()
        conn.quit()
        check.step(stage, True, "no mail was sent")
    except smtplib.SMTPNotSupportedError:
        check.step(stage, False, "the server does not offer AUTH (over TLS)")
    except _FAILURES as exc:
        context_of = {"connect": f"{where}: ", "auth": f"as {server.username}: "}
        check.step(stage, False, context_of.get(stage, "") + _failure(exc, stage))
    finally:
        if conn is not None:
            conn.close()
    return check.failed


def _tls_detail(conn: smtplib.SMTP) -> str:
    sock = conn.sock
    if isinstance(sock, ssl.SSLSocket):
        cipher = sock.cipher()
        return f"{sock.version()}{f', {cipher[0]}' if cipher else ''}, certificate verified"
    return "certificate verified"
