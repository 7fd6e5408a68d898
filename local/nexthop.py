"""A next hop that refuses: the remote server behind the MailU stand-in that makes Postfix write real DSNs.

Petrel relays through the tenant's MailU and learns of a bad recipient only from the delivery report
MailU sends back later. To have that happen locally, the stand-in routes one domain (its transport map,
`MailuStandIn.route_domain`) to this server on loopback. Postfix has already accepted the recipient from
Petrel's relay account with a 250; when its `smtp` client then hands the message on, this server answers
RCPT with a 550 5.1.1, and Postfix itself bounces the message with an RFC 3464 report to the envelope
sender (Petrel's VERP address), exactly as a real MailU does with a remote server that refuses.

It runs in the caller's process on aiosmtpd's Controller (its own thread and event loop).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from local.aws import free_port

HOST = "127.0.0.1"
# What Postfix answers for an address of a virtual domain that has no mailbox: what a real remote MailU says.
REFUSAL = "550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
_REMEMBERED = 1000
# aiosmtpd logs every connection at INFO under this name: the local console shows its warnings only.
_AIOSMTPD_LOGGER = "mail.log"


class _RefusingHandler:
    """aiosmtpd hooks: every recipient is refused at RCPT, and remembered (bounded) for tests and diagnosis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: deque[str] = deque(maxlen=_REMEMBERED)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        with self._lock:
            self._refused.append(address)
        return REFUSAL.format(address=address)

    def refused(self) -> list[str]:
        with self._lock:
            return list(self._refused)


class RefusingNextHop:
    """An SMTP server on 127.0.0.1 that accepts connections and refuses every recipient with 550 5.1.1.

    `hostname` is its EHLO name: it must not be the stand-in's own `myhostname`, or Postfix would take
    the connection for a mail loop to itself and defer instead of bouncing.
    """

    def __init__(self, *, host: str = HOST, port: int | None = None, hostname: str = "mx.refuse.invalid") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._handler = _RefusingHandler()
        self._controller: Controller | None = None
        self._hostname = hostname
        self._log_level: int | None = None

    def start(self) -> None:
        """Listen (no-op when already listening); returns once the server answers."""
        if self._controller is not None:
            return
        aiosmtpd_log = logging.getLogger(_AIOSMTPD_LOGGER)
        if aiosmtpd_log.level == logging.NOTSET:  # nobody chose a level: keep its per-connection lines quiet
            self._log_level = aiosmtpd_log.level
            aiosmtpd_log.setLevel(logging.WARNING)
        controller = Controller(
            self._handler,
            hostname=self.host,
            port=self.port,
            server_hostname=self._hostname,
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._log_level is not None:
            logging.getLogger(_AIOSMTPD_LOGGER).setLevel(self._log_level)
            self._log_level = None

    def __enter__(self) -> RefusingNextHop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def refused(self) -> list[str]:
        """The recipients refused so far (the last 1,000), oldest first."""
        return self._handler.refused()

    def describe(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}
