"""One IMAP session with a tenant's mailbox that reads and changes nothing (`petrel mailbox test`, the
admin API's `.../mailboxes/{id}/test`).

Through the poller's own reader (petrel.adapters.imap, or any MailboxReader): connect, TLS as the mailbox
is configured (the certificate verified against the system's CAs or the mailbox's CA bundle), LOGIN with
the stored password, then EXAMINE each folder (a read-only SELECT: no flag changes) and count its UIDs.
No message is fetched. Each step is reported as it ends; a failure to connect or log in ends the check,
a folder the server refuses does not stop the others (the poller, too, goes on to the next folder).
"""

from __future__ import annotations

from collections.abc import Callable

from petrel.models.admin import Step
from petrel.models.records import Mailbox, SmtpSecurity
from petrel.ports import MailboxError, MailboxReader, MailboxSession

Report = Callable[[Step], None]

# The steps of opening a session, in order, as MailboxError.stage names them.
_OPENING = ("connect", "tls", "login")


class _Check:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.failed: Step | None = None

    def step(self, name: str, ok: bool, detail: str) -> None:
        step = Step(name, ok, detail)
        self.report(step)
        if not ok and self.failed is None:
            self.failed = step


def _where(mailbox: Mailbox) -> str:
    implicit = mailbox.security is SmtpSecurity.TLS
    return f"{mailbox.host}:{mailbox.port}" + (" (implicit TLS)" if implicit else "")


def _opened(check: _Check, mailbox: Mailbox, failed_at: str | None) -> None:
    """Report the opening steps: those before `failed_at` passed (None: all of them did)."""
    details = {
        "connect": _where(mailbox),
        "tls": "STARTTLS, certificate verified"
        if mailbox.security is SmtpSecurity.STARTTLS
        else "certificate verified",
        "login": f"as {mailbox.username}",
    }
    for stage in _OPENING:
        if stage == failed_at:
            return
        check.step(stage, True, details[stage])


def _examine(check: _Check, session: MailboxSession, folder: str) -> bool:
    """One folder, read-only: its UIDVALIDITY and how many messages it holds. False when the
    connection is gone (the remaining folders cannot be examined)."""
    try:
        uidvalidity = session.select(folder, writable=False)
        count = len(session.uids_after(0))
    except MailboxError as exc:
        check.step("select", False, f"{folder}: {exc}")
        return not exc.connection_lost
    check.step("select", True, f"{folder}: UIDVALIDITY {uidvalidity}, {count} message{'' if count == 1 else 's'}")
    return True


def check_mailbox(reader: MailboxReader, mailbox: Mailbox, password: str, report: Report) -> Step | None:
    """Run the check, reporting each step; the first failed step, or None when every step passed."""
    check = _Check(report)
    try:
        session = reader.open(mailbox, password)
    except MailboxError as exc:
        stage = exc.stage if exc.stage in _OPENING else "connect"
        _opened(check, mailbox, stage)
        context = {"connect": f"{_where(mailbox)}: ", "login": f"as {mailbox.username}: "}
        check.step(stage, False, context.get(stage, "") + str(exc))
        return check.failed
    _opened(check, mailbox, None)
    try:
        for folder in mailbox.folders:
            if not _examine(check, session, folder):
                break
    finally:
        session.close()
    return check.failed
