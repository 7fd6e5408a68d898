"""A local stand-in for a tenant's MailU server: real Debian Postfix + Dovecot, no Docker.

`MailuStandIn` runs a private Postfix instance (``postfix -c DIR``) and a private Dovecot
instance (``dovecot -c FILE``) entirely under one work directory, listening on 127.0.0.1
ports above 1024. Nothing system-wide is configured or started: each instance has its own
config, queue, data, run, state, mail and log directories, so several stand-ins can run
side by side.

What it offers, like MailU does:

* submission with STARTTLS and implicit TLS ("smtps"), both requiring SMTP AUTH (SASL
  through Dovecot's auth socket), DSN advertised, a configurable ``message_size_limit``;
* virtual mailboxes (Postfix ``virtual(8)`` into Maildirs) for users of the configured
  domains, with plus-addressing (``user+tag@domain`` is delivered to ``user@domain``);
* IMAP and IMAPS (Dovecot) with the same self-signed certificate;
* mail for other domains is accepted from authenticated clients and stays deferred in the
  queue (the relay host is a closed local port), so tests can see it there;
* ``route_domain`` sends one domain's mail to a next hop on loopback instead (a transport(5)
  entry): with `local.nexthop.RefusingNextHop` there, Postfix accepts the recipient, is then
  refused by the next hop and bounces the message itself, with a real RFC 3464 report to the
  envelope sender; ``NOTIFY=SUCCESS`` gets a real "delivered" report for local mailboxes.

Test hooks provoke real SMTP replies: ``set_recipient_rule`` installs a Postfix access(5)
action for a recipient (``"550 5.1.1 ..."``, ``"451 4.3.0 ..."``, ``"DEFER"``, ...).

Every ancestor of the work directory must be searchable by other users (the daemons drop to
their own users; pytest's ``tmp_path`` lives under a 0700 directory: use ``tempfile.mkdtemp()``).

Modules: `install` (finding and installing the packages), `config` (paths and rendered
configuration), `processes` (the daemons), `accounts` (domains, users, rules), `standin` (the facade).
"""

from local.mailu.install import REQUIRED_BINARIES, ensure_installed, install_packages
from local.mailu.processes import find_processes
from local.mailu.standin import MailuStandIn

__all__ = [
    "REQUIRED_BINARIES",
    "MailuStandIn",
    "ensure_installed",
    "find_processes",
    "install_packages",
]
