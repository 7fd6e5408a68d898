"""`MailuStandIn`: one tenant's MailU, stood in by a private Postfix + Dovecot pair (see the package doc).

This module is the facade the local stack and the tests use: lifecycle, accounts and rules, limits, the
queue and reading mail back. Configuration rendering is in `config`, the processes in `processes`, the
accounts' state in `accounts`.
"""

from __future__ import annotations

import imaplib
import json
import os
import shutil
import ssl
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from local.mailu import config
from local.mailu.accounts import Accounts
from local.mailu.config import HOST, Layout, MailIds, Ports
from local.mailu.install import INSTALL_HINT, binary, ensure_installed
from local.mailu.processes import Daemons, free_port, port_busy, run
from local.tls import issue_server_certificate

_PORT_NAMES = ("submission", "smtps", "imap", "imaps")


class MailuStandIn:
    """A Postfix + Dovecot pair standing in for a tenant's MailU server (see the package doc)."""

    host = HOST

    def __init__(
        self,
        workdir: Path,
        domain: str = "petrel.test",
        *,
        submission_port: int | None = None,
        smtps_port: int | None = None,
        imap_port: int | None = None,
        imaps_port: int | None = None,
        message_size_limit: int = 20_000_000,
        relayhost: str | None = None,
    ) -> None:
        self.layout = Layout(Path(workdir).absolute())
        self.accounts = Accounts(self.layout, domain)
        chosen = dict(zip(_PORT_NAMES, (submission_port, smtps_port, imap_port, imaps_port), strict=True))
        self.ports = Ports(**{name: given or free_port() for name, given in chosen.items()})
        self.ports.check()
        self._auto_ports = [name for name, given in chosen.items() if not given]
        self.message_size_limit = message_size_limit
        # Non-local mail goes to a closed local port, so it is accepted and stays deferred.
        self.relayhost = relayhost if relayhost is not None else f"[{HOST}]:{free_port()}"
        self.daemons = Daemons(self.layout, self.ports, lambda tail: self.log_text(tail=tail))
        self._prepared = False  # work dir laid out and config written

    # ------------------------------------------------------------------ properties

    @property
    def workdir(self) -> Path:
        return self.layout.workdir

    @property
    def domain(self) -> str:
        return self.accounts.domains[0]

    @property
    def domains(self) -> list[str]:
        return self.accounts.domains

    @property
    def instance_name(self) -> str:
        return self.layout.instance_name

    @property
    def submission_port(self) -> int:
        return self.ports.submission

    @property
    def smtps_port(self) -> int:
        return self.ports.smtps

    @property
    def imap_port(self) -> int:
        return self.ports.imap

    @property
    def imaps_port(self) -> int:
        return self.ports.imaps

    @property
    def mail_dir(self) -> Path:
        return self.layout.mail_dir

    @property
    def postfix_log(self) -> Path:
        return self.layout.postfix_log

    @property
    def dovecot_log(self) -> Path:
        return self.layout.dovecot_log

    @property
    def ca_file(self) -> Path:
        """The PEM file of the self-signed CA that issued the server certificate."""
        return self.layout.tls_dir / "ca.pem"

    @property
    def ca_pem(self) -> str:
        self._ensure_certificates()
        return self.ca_file.read_text()

    @property
    def users(self) -> list[str]:
        return sorted(self.accounts.users)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this stand-in's CA (hostname: 127.0.0.1 or localhost)."""
        self._ensure_certificates()
        return ssl.create_default_context(cafile=str(self.ca_file))

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MailuStandIn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start Dovecot and Postfix (no-op when both run). Raises RuntimeError on failure.

        The first start of an instance starts afresh: daemons an earlier stand-in left in this work
        dir are stopped, and the mail and the queue it left are deleted (a restarted local stack keeps
        no old mail). A start after `stop_smtp` or `stop` of the same instance keeps them.
        """
        if self._prepared and self.is_running():
            return
        missing = ensure_installed()
        if missing:
            raise RuntimeError(f"missing binaries {missing}: {INSTALL_HINT} (or call install_packages())")
        if os.geteuid() != 0:
            raise RuntimeError("the MailU stand-in runs Postfix and Dovecot as root: run as root")
        if not self._prepared:
            # Daemons left running in this work dir by an earlier stand-in would hold other
            # ports, an older configuration, and its mail.
            self.stop()
            self._clear_state()
        self._prepare()
        try:
            self.daemons.start()
        except RuntimeError:
            # An automatically chosen port may have been taken since construction (an outgoing
            # connection can get any ephemeral port): choose new ones and try once more.
            busy = [name for name in self._auto_ports if port_busy(getattr(self.ports, name))]
            if not busy:
                raise
            for name in busy:
                setattr(self.ports, name, free_port())
            self._prepare()
            self.daemons.start()

    def stop(self) -> None:
        """Stop Postfix and Dovecot and make sure no process of this instance is left. Idempotent."""
        self.daemons.stop()

    def is_running(self) -> bool:
        return self.daemons.running()

    def stop_smtp(self) -> None:
        """Stop only Postfix (the SMTP side), to simulate the server being down."""
        self.daemons.stop_postfix()

    def start_smtp(self) -> None:
        """Start Postfix again after ``stop_smtp``."""
        if not self._prepared:
            self._prepare()
        if not self.daemons.postfix_alive():
            self.daemons.start_postfix()

    # ------------------------------------------------------------------ users and domains

    def add_domain(self, domain: str) -> None:
        """Accept and deliver mail for another domain (its users still need ``add_user``)."""
        if self.accounts.add_domain(domain):
            self._tables_changed()

    def add_user(self, address: str, password: str) -> None:
        """Create a mailbox user (SMTP AUTH + IMAP login); effective when this returns.

        While running this takes up to a second: Dovecot re-reads its passwd-file at most
        once per second. Add users before ``start()`` or in one ``add_users`` call when
        there are several.
        """
        self.add_users({address: password})

    def add_users(self, users: Mapping[str, str]) -> None:
        """``add_user`` for several ``{address: password}`` at once (one reload, one wait)."""
        domains = len(self.accounts.domains)
        added = self.accounts.add_users(users)
        if not self._prepared:
            return  # written by start()
        self.accounts.make_maildirs(added, MailIds.lookup())
        if users:
            self.accounts.write_users_file(dovecot_running=self.daemons.dovecot_alive())
        if added or len(self.accounts.domains) != domains:
            self._tables_changed()

    def set_password(self, address: str, password: str) -> None:
        self.accounts.set_password(address, password)
        if self._prepared:  # Dovecot notices the changed passwd-file by itself
            self.accounts.write_users_file(dovecot_running=self.daemons.dovecot_alive())

    # ------------------------------------------------------------------ next hops

    def route_domain(self, domain: str, host: str, port: int) -> None:
        """Send mail for ``domain`` by SMTP to ``host:port`` (a transport(5) entry; it overrides relayhost).

        The domain is not one this stand-in delivers: an authenticated client's recipient there is
        accepted with 250 and queued, and Postfix's ``smtp`` client then hands it to that server. One
        that refuses it (`local.nexthop.RefusingNextHop`) makes Postfix bounce the message with a real
        delivery report to the envelope sender. Effective for new messages when this returns.
        """
        if self.accounts.set_route(domain, config.check_nexthop(host, port)):
            self._tables_changed()

    def clear_route(self, domain: str) -> None:
        """Undo `route_domain`: the domain's mail goes to the relay host again (and stays deferred)."""
        if self.accounts.clear_route(domain):
            self._tables_changed()

    # ------------------------------------------------------------------ reply rules

    def set_recipient_rule(self, address: str, action: str) -> None:
        """Answer RCPT TO ``address`` with a Postfix access(5) ``action``.

        Examples: ``"550 5.1.1 <x@d>: Recipient address rejected: User unknown"``,
        ``"451 4.3.0 Try again later"``, ``"452 4.2.2 Mailbox full"``, ``"REJECT"`` (554 5.7.1),
        ``"DEFER"`` (450 4.7.1). The key may also be a domain. Applies to authenticated
        clients too; effective for new SMTP sessions when this returns.
        """
        self.set_recipient_rules({address: action})

    def set_recipient_rules(self, rules: Mapping[str, str]) -> None:
        """Several rules at once, with one reload (see `set_recipient_rule`)."""
        self.accounts.set_rules(rules)
        self._tables_changed()

    def clear_recipient_rules(self, addresses: Iterable[str]) -> None:
        """Several rules removed at once, with one reload."""
        if self.accounts.clear_rules(addresses):
            self._tables_changed()

    def clear_recipient_rule(self, address: str) -> None:
        self.clear_recipient_rules([address])

    def clear_rules(self) -> None:
        if self.accounts.clear_rules():
            self._tables_changed()

    # ------------------------------------------------------------------ limits

    def set_message_size_limit(self, limit: int) -> None:
        """Change Postfix's ``message_size_limit`` (bytes; 0 = none) while it runs.

        ``postconf -c DIR -e`` and a reload: effective for new SMTP sessions when this returns. A
        client that declares SIZE (RFC 1870) above it is refused at MAIL FROM with ``552 5.3.4``; one
        that does not is refused after DATA. The value survives ``stop_smtp``/``start_smtp`` and is
        what ``start()`` writes into main.cf. Restore the old value (``self.message_size_limit``
        before the change) the same way.
        """
        limit = int(limit)
        if limit < 0:
            raise ValueError(f"message_size_limit must be >= 0, got {limit}")
        self.message_size_limit = limit
        if not self._prepared:
            return  # written into main.cf by start()
        conf = self.layout.postfix_config_dir
        result = run([binary("postconf"), "-c", str(conf), "-e", f"message_size_limit={limit}"])
        if result.returncode != 0:
            raise RuntimeError(f"postconf -e message_size_limit={limit} failed: {result.stdout}{result.stderr}")
        # Like atomic_write(backdate=True): daemons need not wait for a just-modified main.cf to settle.
        past = time.time() - 5
        os.utime(conf / "main.cf", (past, past))
        self.daemons.reload_postfix()

    # ------------------------------------------------------------------ queue

    def mailq(self) -> list[dict[str, Any]]:
        """The messages in Postfix's queue, as ``postqueue -j`` reports them (one dict each)."""
        result = run([binary("postqueue"), "-c", str(self.layout.postfix_config_dir), "-j"])
        if result.returncode != 0:
            raise RuntimeError(f"postqueue -j failed: {result.stdout}{result.stderr}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(entry["queue_id"]) for entry in self.mailq()]

    def wait_for_queue(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll the queue until it holds at least ``count`` messages."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.mailq()
            if len(entries) >= count or time.monotonic() > deadline:
                if len(entries) < count:
                    raise TimeoutError(f"queue holds {len(entries)} messages, wanted {count}")
                return entries
            time.sleep(0.1)

    def clear_queue(self) -> None:
        """Delete every queued message (``postsuper -d ALL``)."""
        run([binary("postsuper"), "-c", str(self.layout.postfix_config_dir), "-d", "ALL"])

    # ------------------------------------------------------------------ reading mail

    def fetch_all(self, address: str, password: str, mailbox: str = "INBOX") -> list[bytes]:
        """Log in over IMAPS (verifying the CA) and return every message of ``mailbox`` raw."""
        messages: list[bytes] = []
        with imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=15) as imap:
            imap.login(address, password)
            status, _ = imap.select(mailbox, readonly=True)
            if status != "OK":
                raise RuntimeError(f"cannot select {mailbox} for {address}")
            status, data = imap.uid("SEARCH", "ALL")
            uids = data[0].split() if data and isinstance(data[0], bytes) else []
            for uid in uids:
                status, parts = imap.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        messages.append(bytes(part[1]))
        return messages

    def wait_for_messages(self, address: str, password: str, count: int, timeout: float = 20.0) -> list[bytes]:
        """Poll ``fetch_all`` until the mailbox holds at least ``count`` messages."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.fetch_all(address, password)
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{address} has {len(messages)} messages after {timeout}s, wanted {count}\n"
                    + self.log_text(tail=40)
                )
            time.sleep(0.1)

    # ------------------------------------------------------------------ logs

    def log_text(self, tail: int | None = None) -> str:
        """Postfix's and Dovecot's logs (the last ``tail`` lines of each when given)."""
        out: list[str] = []
        for path in (self.layout.postfix_log, self.layout.dovecot_log):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            if tail is not None:
                lines = lines[-tail:]
            out.append(f"==> {path.name} <==")
            out.extend(lines)
        return "\n".join(out) + "\n"

    # ================================================================== internals

    def _tables_changed(self) -> None:
        if not self._prepared:
            return  # written by start()
        self.accounts.write_tables()
        self.daemons.reload_postfix()

    def _clear_state(self) -> None:
        """Forget what an earlier stand-in in this work dir left: delivered mail and queued mail."""
        self.accounts.clear_mail()
        shutil.rmtree(self.layout.postfix_queue_dir, ignore_errors=True)

    def _prepare(self) -> None:
        self._check_ancestors()
        layout = self.layout
        layout.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.workdir, 0o755)
        mail = MailIds.lookup()
        for directory in (
            layout.workdir / "postfix",
            layout.postfix_config_dir,
            layout.postfix_queue_dir,
            layout.dovecot_dir,
            layout.dovecot_state_dir,
            layout.log_dir,
            layout.tls_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, 0, 0)
            os.chmod(directory, 0o755)
        layout.mail_dir.mkdir(exist_ok=True)
        os.chown(layout.mail_dir, mail.uid, mail.gid)
        os.chmod(layout.mail_dir, 0o750)
        self._ensure_certificates()
        conf = layout.postfix_config_dir
        main = config.main_cf(
            layout,
            domain=self.domain,
            message_size_limit=self.message_size_limit,
            relayhost=self.relayhost,
            mail=mail,
        )
        config.atomic_write(conf / "main.cf", main, backdate=True)
        config.atomic_write(conf / "master.cf", config.master_cf(layout, self.ports), backdate=True)
        config.atomic_write(layout.dovecot_config, config.dovecot_conf(layout, self.ports, mail))
        self.accounts.write_tables()
        self.accounts.make_maildirs(self.accounts.users, mail)
        self.accounts.write_users_file(dovecot_running=self.daemons.dovecot_alive())
        self._prepared = True

    def _check_ancestors(self) -> None:
        for parent in self.layout.workdir.parents:
            try:
                mode = parent.stat().st_mode
            except OSError:
                continue  # created below by mkdir(parents=True) with the default umask
            if not mode & 0o001:
                raise RuntimeError(
                    f"{parent} is not searchable by other users (mode {oct(mode & 0o7777)}); the "
                    "Postfix/Dovecot daemons drop to their own users and must reach the work dir: "
                    "choose a work dir under a world-searchable directory (e.g. tempfile.mkdtemp())"
                )

    def _ensure_certificates(self) -> None:
        tls = self.layout.tls_dir
        key_file, chain_file = tls / "server.key", tls / "server-chain.pem"
        if self.ca_file.exists() and key_file.exists() and chain_file.exists():
            return
        tls.mkdir(parents=True, exist_ok=True)
        issued = issue_server_certificate(
            ca_common_name=f"Petrel stand-in CA {self.instance_name}",
            dns_names=("localhost", f"mx.{self.domain}"),
            valid_days=825,
        )
        config.atomic_write(key_file, issued.key_pem, 0o600)
        config.atomic_write(chain_file, issued.cert_pem + issued.ca_pem, 0o644)
        config.atomic_write(self.ca_file, issued.ca_pem, 0o644)
