"""What the network adapters (SMTP, IMAP) share about the failures their libraries raise."""

from __future__ import annotations

import socket


def timed_out(exc: BaseException) -> bool:
    """A timeout, or an error a protocol library raised because of one (smtplib reports a read that
    timed out as "Connection unexpectedly closed"; imaplib wraps it in its own `abort`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.timeout | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
