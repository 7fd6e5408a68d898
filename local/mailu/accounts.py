"""The stand-in's administration, what MailU's admin offers: domains, mailbox accounts (SMTP AUTH and
IMAP login) and, for tests, access(5) rules that make Postfix answer chosen recipients with chosen
replies. The state lives here; it is written into the lookup tables and Dovecot's passwd-file."""

from __future__ import annotations

import grp
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping

from local.mailu import config
from local.mailu.config import Layout, MailIds


class Accounts:
    """Domains, users (address to password hash) and recipient rules of one stand-in."""

    def __init__(self, layout: Layout, domain: str) -> None:
        self.layout = layout
        self.domains: list[str] = [config.check_domain(domain)]
        self.users: dict[str, str] = {}  # address -> Dovecot password field
        self.rules: dict[str, str] = {}  # access(5) key -> action
        self.routes: dict[str, str] = {}  # domain -> transport(5) next hop
        self._users_mtime = 0

    # -- changes (each says whether Postfix's tables changed) ----------------------------------
    def add_domain(self, domain: str) -> bool:
        domain = config.check_domain(domain)
        if domain in self.domains:
            return False
        if domain in self.routes:
            raise ValueError(f"{domain} is routed to another server; it cannot also be delivered here")
        self.domains.append(domain)
        return True

    def add_users(self, users: Mapping[str, str]) -> list[str]:
        """Add or re-password users (their domains too); returns the addresses that are new."""
        added: list[str] = []
        for raw_address, password in users.items():
            address = config.check_address(raw_address)
            self.add_domain(address.rsplit("@", 1)[1])
            if address not in self.users:
                added.append(address)
            self.users[address] = config.ssha512(password)
        return added

    def set_password(self, address: str, password: str) -> None:
        address = config.check_address(address)
        if address not in self.users:
            raise KeyError(f"no such user: {address}")
        self.users[address] = config.ssha512(password)

    def set_rules(self, rules: Mapping[str, str]) -> None:
        for address, action in rules.items():
            key, checked = config.check_rule(address, action)
            self.rules[key] = checked

    def clear_rules(self, addresses: Iterable[str] | None = None) -> bool:
        """Remove the rules of ``addresses`` (all rules when None); whether any was removed."""
        if addresses is None:
            had = bool(self.rules)
            self.rules.clear()
            return had
        removed = [self.rules.pop(a.strip().lower(), None) for a in addresses]
        return any(r is not None for r in removed)

    def set_route(self, domain: str, nexthop: str) -> bool:
        """Send ``domain``'s mail to ``nexthop`` (a transport(5) value); whether anything changed."""
        domain = config.check_domain(domain)
        if domain in self.domains:
            raise ValueError(f"{domain} is delivered here (a virtual mailbox domain); it cannot be routed away")
        changed = self.routes.get(domain) != nexthop
        self.routes[domain] = nexthop
        return changed

    def clear_route(self, domain: str) -> bool:
        return self.routes.pop(config.check_domain(domain), None) is not None

    # -- files ---------------------------------------------------------------------------------
    def write_tables(self) -> None:
        """Postfix's lookup tables; backdated so a daemon need not wait for them to settle."""
        conf = self.layout.postfix_config_dir
        config.atomic_write(conf / "virtual_domains", config.virtual_domains(self.domains), backdate=True)
        config.atomic_write(conf / "virtual_mailboxes", config.virtual_mailboxes(self.users), backdate=True)
        config.atomic_write(conf / "recipient_rules", config.recipient_rules(self.rules), backdate=True)
        config.atomic_write(conf / "transport", config.transports(self.routes), backdate=True)

    def write_users_file(self, *, dovecot_running: bool) -> None:
        path = self.layout.dovecot_users_file
        try:  # Dovecot's auth reads the file as its group: owned so before the rename, never after
            group: int | None = grp.getgrnam("dovecot").gr_gid
        except KeyError:
            group = None
        config.atomic_write(path, config.users_file(self.users), 0o640 if group is not None else 0o644, group=group)
        # Dovecot re-reads a passwd-file when its mtime (whole seconds) or size changes; a
        # password change within the same second keeps the size, so move the mtime on.
        written = time.time()
        stamp = max(int(written), self._users_mtime + 1)
        os.utime(path, (stamp, stamp))
        self._users_mtime = stamp
        if dovecot_running:
            # Dovecot's auth process stats the file at most once per second of its clock: wait
            # for the next second so that the next login is checked against the new file.
            time.sleep(max(0.0, math.floor(written) + 1.0 - time.time()) + 0.01)

    def make_maildirs(self, addresses: Iterable[str], mail: MailIds) -> None:
        for address in addresses:
            path = self.layout.mail_dir
            for part in (*reversed(address.rsplit("@", 1)), "Maildir"):
                path = path / part
                _owned_dir(path, mail)
            for sub in ("cur", "new", "tmp"):
                _owned_dir(path / sub, mail)

    def clear_mail(self) -> None:
        """Delete every mailbox's messages (and the mailboxes of users this instance does not know):
        a restarted stand-in starts afresh, as the rest of the local stack does."""
        if self.layout.mail_dir.exists():
            for entry in self.layout.mail_dir.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _owned_dir(path: os.PathLike[str], mail: MailIds) -> None:
    os.makedirs(path, exist_ok=True)
    os.chown(path, mail.uid, mail.gid)
    os.chmod(path, 0o700)
