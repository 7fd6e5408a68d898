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
  queue (the relay host is a closed local port), so tests can see it there.

Test hooks provoke real SMTP replies: ``set_recipient_rule`` installs a Postfix access(5)
action for a recipient (``"550 5.1.1 ..."``, ``"451 4.3.0 ..."``, ``"DEFER"``, ...).

The daemons run as root (as Postfix and Dovecot require for this layout), then drop to
their own unprivileged users, so every ancestor of the work directory must be searchable
by other users (pytest's ``tmp_path`` lives under a 0700 directory: use
``tempfile.mkdtemp()`` instead).
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import imaplib
import json
import math
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from local.tls import issue_server_certificate

__all__ = [
    "REQUIRED_BINARIES",
    "MailuStandIn",
    "ensure_installed",
    "find_processes",
    "install_packages",
]

HOST = "127.0.0.1"
REQUIRED_BINARIES: tuple[str, ...] = ("postfix", "postmap", "dovecot", "doveadm")
_SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin")
_INSTALL_HINT = (
    "install the Debian packages postfix, dovecot-core and dovecot-imapd "
    "(as root: local/install_mail.sh, or apt-get install postfix dovecot-core dovecot-imapd)"
)
# Characters that are safe inside Postfix and Dovecot configuration values unquoted.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@+-]+$")
_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$|^[A-Za-z0-9-]+$")
_RULE_KEY = re.compile(r"^[^\s#]+$")
# Postfix daemons that must be replaced before a changed lookup table is in effect.
_TABLE_READERS = frozenset({"smtpd", "trivial-rewrite", "cleanup", "virtual", "proxymap"})


# --------------------------------------------------------------------------- helpers


def _which(name: str) -> str | None:
    """Find an executable on PATH or in the usual sbin directories (PATH may lack them)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_installed() -> list[str]:
    """Return the binaries the stand-in needs that are missing (empty when all are present)."""
    return [name for name in REQUIRED_BINARIES if _which(name) is None]


def install_packages() -> None:
    """Install Postfix and Dovecot with ``local/install_mail.sh`` (root + apt-get only).

    Raises RuntimeError with a one-line hint when that is not possible or fails.
    """
    if not ensure_installed():
        return
    script = Path(__file__).resolve().with_name("install_mail.sh")
    if os.geteuid() != 0 or _which("apt-get") is None:
        raise RuntimeError(f"postfix/dovecot missing ({', '.join(ensure_installed())}): {_INSTALL_HINT}")
    result = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_command_env(),
        check=False,
    )
    missing = ensure_installed()
    if result.returncode != 0 or missing:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise RuntimeError(
            f"{script.name} failed (rc={result.returncode}, still missing: {missing}): {_INSTALL_HINT}\n{tail}"
        )


def _command_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "MAIL_CONFIG"}
    path = env.get("PATH", "")
    parts = [p for p in path.split(os.pathsep) if p]
    for directory in _SBIN_DIRS:
        if directory not in parts:
            parts.append(directory)
    env["PATH"] = os.pathsep.join(parts)
    env.setdefault("LANG", "C")
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_busy(port: int) -> bool:
    """Whether something else holds ``port`` on 127.0.0.1 (a listener or a connection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    first = text.split()[0] if text else ""
    return int(first) if first.isdigit() else None


def _proc_stat(pid: int) -> tuple[str, str, int, int, int] | None:
    """(comm, state, ppid, pgrp, starttime) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    open_paren, close_paren = raw.find("("), raw.rfind(")")
    comm = raw[open_paren + 1 : close_paren]
    fields = raw[close_paren + 2 :].split()
    return comm, fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _descendants(root: int) -> set[tuple[int, int]]:
    """(pid, starttime) of every live descendant of ``root`` (not root itself)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] not in ("Z", "X"):
            children.setdefault(stat[2], []).append((pid, stat[4]))
    found: set[tuple[int, int]] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def _same_process_alive(pid: int, starttime: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[4] == starttime and stat[1] not in ("Z", "X")


def _is_mail_daemon(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    base = os.path.basename(exe.removesuffix(" (deleted)"))
    return "/postfix/" in exe or "/dovecot/" in exe or base in ("postfix", "dovecot", "master")


def find_processes(workdir: Path) -> list[int]:
    """Postfix/Dovecot processes that belong to a stand-in in ``workdir``.

    A process belongs to it when it is a Postfix or Dovecot program and its command line,
    working directory or ``MAIL_CONFIG`` environment variable mention the work directory.
    (Postfix daemons run in their queue directory with ``MAIL_CONFIG`` set; Dovecot's
    master has ``-c FILE`` on its command line and its children run in its base_dir.)
    """
    root = str(Path(workdir).resolve())
    needle = root.encode()
    me = os.getpid()
    found: list[int] = []
    for pid in _all_pids():
        if pid == me or not _is_mail_daemon(pid):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            environ = b""
        in_env = any(item.startswith(b"MAIL_CONFIG=") and needle in item for item in environ.split(b"\0"))
        if needle in cmdline or cwd == root or cwd.startswith(root + "/") or in_env:
            found.append(pid)
    return found


def _listening(ports: Iterable[int]) -> set[int]:
    """Which of ``ports`` have a TCP socket listening on 127.0.0.1 (or any address)."""
    wanted = set(ports)
    found: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
            continue
        address, port_hex = fields[1].split(":")
        port = int(port_hex, 16)
        if port in wanted and address in ("0100007F", "00000000"):
            found.add(port)
    return found


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def _ssha512(password: str) -> str:
    """A salted SHA-512 hash in Dovecot's ``{SSHA512}`` scheme."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def _atomic_write(path: Path, text: str, mode: int = 0o644, backdate: bool = False) -> None:
    """Write a file by rename. ``backdate`` sets its mtime a few seconds back: Postfix waits
    (5 x 300 ms) for a configuration file modified within the current second to settle."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    if backdate:
        past = time.time() - 5
        os.utime(tmp, (past, past))
    os.replace(tmp, path)


def _check_address(address: str) -> str:
    address = address.strip().lower()
    if not _ADDRESS.match(address) or "/" in address or address.startswith("."):
        raise ValueError(f"unsupported mail address: {address!r}")
    return address


def _check_domain(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not _DOMAIN.match(domain):
        raise ValueError(f"unsupported domain: {domain!r}")
    return domain


# --------------------------------------------------------------------------- the stand-in


class MailuStandIn:
    """A Postfix + Dovecot pair standing in for a tenant's MailU server (see module doc)."""

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
        self.workdir = Path(workdir).absolute()
        if not _SAFE_PATH.match(str(self.workdir)):
            raise ValueError(
                f"work directory {str(self.workdir)!r} has characters Postfix/Dovecot configs cannot "
                "hold; use only letters, digits and _ . / @ + -"
            )
        self.domain = _check_domain(domain)
        self.domains: list[str] = [self.domain]
        self.submission_port = submission_port or _free_port()
        self.smtps_port = smtps_port or _free_port()
        self.imap_port = imap_port or _free_port()
        self.imaps_port = imaps_port or _free_port()
        chosen = {
            "submission_port": submission_port,
            "smtps_port": smtps_port,
            "imap_port": imap_port,
            "imaps_port": imaps_port,
        }
        self._auto_ports = [name for name, given in chosen.items() if not given]
        ports = [self.submission_port, self.smtps_port, self.imap_port, self.imaps_port]
        if len(set(ports)) != len(ports) or min(ports) <= 1024:
            raise ValueError(f"ports must be distinct and above 1024: {ports}")
        self.message_size_limit = message_size_limit
        # Non-local mail goes to a closed local port, so it is accepted and stays deferred.
        self.relayhost = relayhost if relayhost is not None else f"[{HOST}]:{_free_port()}"
        digest = hashlib.sha256(str(self.workdir).encode()).hexdigest()[:10]
        self.instance_name = f"petrel-mailu-{digest}"

        self._users: dict[str, str] = {}  # address -> Dovecot password field
        self._rules: dict[str, str] = {}  # access(5) key -> action
        self._prepared = False  # work dir laid out and config written
        self._users_mtime = 0

        self.postfix_config_dir = self.workdir / "postfix" / "etc"
        self.postfix_queue_dir = self.workdir / "postfix" / "spool"
        self.postfix_data_dir = self.workdir / "postfix" / "data"
        self.dovecot_dir = self.workdir / "dovecot"
        self.dovecot_config = self.dovecot_dir / "dovecot.conf"
        self.dovecot_base_dir = self.dovecot_dir / "run"
        self.dovecot_state_dir = self.dovecot_dir / "state"
        self.dovecot_users_file = self.dovecot_dir / "users"
        self.mail_dir = self.workdir / "mail"
        self.log_dir = self.workdir / "log"
        self.tls_dir = self.workdir / "tls"
        self.postfix_log = self.log_dir / "postfix.log"
        self.dovecot_log = self.log_dir / "dovecot.log"

    # ------------------------------------------------------------------ properties

    @property
    def ca_file(self) -> Path:
        """The PEM file of the self-signed CA that issued the server certificate."""
        return self.tls_dir / "ca.pem"

    @property
    def ca_pem(self) -> str:
        self._ensure_certificates()
        return self.ca_file.read_text()

    @property
    def users(self) -> list[str]:
        return sorted(self._users)

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
        """Start Dovecot and Postfix (no-op when both run). Raises RuntimeError on failure."""
        if self._prepared and self.is_running():
            return
        missing = ensure_installed()
        if missing:
            raise RuntimeError(f"missing binaries {missing}: {_INSTALL_HINT} (or call install_packages())")
        if os.geteuid() != 0:
            raise RuntimeError("the MailU stand-in runs Postfix and Dovecot as root: run as root")
        if not self._prepared:
            # Daemons left running in this work dir by an earlier stand-in would hold other
            # ports and an older configuration.
            self.stop()
        self._prepare()
        try:
            self._start_daemons()
        except RuntimeError:
            # An automatically chosen port may have been taken since construction (an outgoing
            # connection can get any ephemeral port): choose new ones and try once more.
            busy = [name for name in self._auto_ports if _port_busy(getattr(self, name))]
            if not busy:
                raise
            for name in busy:
                setattr(self, name, _free_port())
            self._prepare()
            self._start_daemons()

    def _start_daemons(self) -> None:
        # Postfix first: `postfix start` creates its queue directories, and Dovecot puts its
        # auth socket for Postfix into the queue's private/ directory.
        if not self._postfix_alive():
            self._start_postfix()
        if not self._dovecot_alive():
            try:
                self._start_dovecot()
            except BaseException:
                self._stop_postfix()
                raise

    def stop(self) -> None:
        """Stop Postfix and Dovecot and make sure no process of this instance is left. Idempotent."""
        # Signal both masters first, then wait: Dovecot's master takes about a second to exit.
        processes = self._signal_stop(self._postfix_master_pid())
        processes |= self._signal_stop(self._dovecot_master_pid())
        self._wait_gone(processes, timeout=10.0)
        self._kill_leftovers()

    def is_running(self) -> bool:
        return self._postfix_alive() and self._dovecot_alive()

    def stop_smtp(self) -> None:
        """Stop only Postfix (the SMTP side), to simulate the server being down."""
        self._stop_postfix()

    def start_smtp(self) -> None:
        """Start Postfix again after ``stop_smtp``."""
        if not self._prepared:
            self._prepare()
        if not self._postfix_alive():
            self._start_postfix()

    # ------------------------------------------------------------------ users and domains

    def add_domain(self, domain: str) -> None:
        """Accept and deliver mail for another domain (its users still need ``add_user``)."""
        domain = _check_domain(domain)
        if domain not in self.domains:
            self.domains.append(domain)
            self._update_postfix_tables()

    def add_user(self, address: str, password: str) -> None:
        """Create a mailbox user (SMTP AUTH + IMAP login); effective when this returns.

        While running this takes up to a second: Dovecot re-reads its passwd-file at most
        once per second. Add users before ``start()`` or in one ``add_users`` call when
        there are several.
        """
        self.add_users({address: password})

    def add_users(self, users: Mapping[str, str]) -> None:
        """``add_user`` for several ``{address: password}`` at once (one reload, one wait)."""
        added = False
        for raw_address, password in users.items():
            address = _check_address(raw_address)
            domain = address.rsplit("@", 1)[1]
            if domain not in self.domains:
                self.domains.append(domain)
            added = added or address not in self._users
            self._users[address] = _ssha512(password)
            if self._prepared:
                self._make_maildir(address)
        if self._prepared and users:
            self._write_users_file()
        if added:
            self._update_postfix_tables()

    def set_password(self, address: str, password: str) -> None:
        address = _check_address(address)
        if address not in self._users:
            raise KeyError(f"no such user: {address}")
        self._users[address] = _ssha512(password)
        if self._prepared:
            self._write_users_file()  # Dovecot notices the changed passwd-file by itself

    # ------------------------------------------------------------------ reply rules

    def set_recipient_rule(self, address: str, action: str) -> None:
        """Answer RCPT TO ``address`` with a Postfix access(5) ``action``.

        Examples: ``"550 5.1.1 <x@d>: Recipient address rejected: User unknown"``,
        ``"451 4.3.0 Try again later"``, ``"452 4.2.2 Mailbox full"``, ``"REJECT"`` (554 5.7.1),
        ``"DEFER"`` (450 4.7.1). The key may also be a domain. Applies to authenticated
        clients too; effective for new SMTP sessions when this returns.
        """
        key = address.strip().lower()
        action = action.strip()
        if not _RULE_KEY.match(key):
            raise ValueError(f"bad rule key: {address!r}")
        if not action or "\n" in action or "\r" in action:
            raise ValueError(f"bad access(5) action: {action!r}")
        self._rules[key] = action
        self._update_postfix_tables()

    def set_recipient_rules(self, rules: Mapping[str, str]) -> None:
        """Several rules at once, with one reload (see `set_recipient_rule`)."""
        for address, raw in rules.items():
            key, action = address.strip().lower(), raw.strip()
            if not _RULE_KEY.match(key):
                raise ValueError(f"bad rule key: {address!r}")
            if not action or "\n" in action or "\r" in action:
                raise ValueError(f"bad access(5) action: {action!r}")
            self._rules[key] = action
        self._update_postfix_tables()

    def clear_recipient_rules(self, addresses: Iterable[str]) -> None:
        """Several rules removed at once, with one reload."""
        removed = [self._rules.pop(a.strip().lower(), None) for a in addresses]
        if any(r is not None for r in removed):
            self._update_postfix_tables()

    def clear_recipient_rule(self, address: str) -> None:
        if self._rules.pop(address.strip().lower(), None) is not None:
            self._update_postfix_tables()

    def clear_rules(self) -> None:
        if self._rules:
            self._rules.clear()
            self._update_postfix_tables()

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
        main_cf = self.postfix_config_dir / "main.cf"
        result = self._run(
            [self._bin("postconf"), "-c", str(self.postfix_config_dir), "-e", f"message_size_limit={limit}"]
        )
        if result.returncode != 0:
            raise RuntimeError(f"postconf -e message_size_limit={limit} failed: {result.stdout}{result.stderr}")
        # Like _atomic_write(backdate=True): daemons need not wait for a just-modified main.cf to settle.
        past = time.time() - 5
        os.utime(main_cf, (past, past))
        self._reload_postfix()

    # ------------------------------------------------------------------ queue

    def mailq(self) -> list[dict[str, Any]]:
        """The messages in Postfix's queue, as ``postqueue -j`` reports them (one dict each)."""
        result = self._run([self._bin("postqueue"), "-c", str(self.postfix_config_dir), "-j"])
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
        self._run([self._bin("postsuper"), "-c", str(self.postfix_config_dir), "-d", "ALL"])

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
        for path in (self.postfix_log, self.dovecot_log):
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

    def _run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_command_env(),
            timeout=timeout,
            check=False,
        )

    def _run_starter(self, argv: list[str], name: str) -> tuple[int, str]:
        """Run a command that leaves a daemon behind, with its output in a file, not a pipe.

        (A daemon that inherits a pipe keeps it open, and reading it would never end.)
        """
        out_path = self.log_dir / f"{name}.out"
        with open(out_path, "w+") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_command_env(),
                timeout=60,
                check=False,
            )
            out.seek(0)
            return result.returncode, out.read()

    def _bin(self, name: str) -> str:
        found = _which(name)
        if found is None:
            raise RuntimeError(f"{name} not found: {_INSTALL_HINT}")
        return found

    # ---------------------------------------------------------------- files

    def _prepare(self) -> None:
        self._check_ancestors()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        mail = pwd.getpwnam("mail")
        for directory in (
            self.workdir / "postfix",
            self.postfix_config_dir,
            self.postfix_queue_dir,
            self.dovecot_dir,
            self.dovecot_state_dir,
            self.log_dir,
            self.tls_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, 0, 0)
            os.chmod(directory, 0o755)
        self.mail_dir.mkdir(exist_ok=True)
        os.chown(self.mail_dir, mail.pw_uid, mail.pw_gid)
        os.chmod(self.mail_dir, 0o750)
        self._ensure_certificates()
        self._write_postfix_config()
        self._write_dovecot_config()
        self._write_postfix_tables()
        for address in self._users:
            self._make_maildir(address)
        self._write_users_file()
        self._prepared = True

    def _check_ancestors(self) -> None:
        for parent in self.workdir.parents:
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

    def _make_maildir(self, address: str) -> None:
        local, domain = address.rsplit("@", 1)
        mail = pwd.getpwnam("mail")
        path = self.mail_dir
        for part in (domain, local, "Maildir"):
            path = path / part
            path.mkdir(exist_ok=True)
            os.chown(path, mail.pw_uid, mail.pw_gid)
            os.chmod(path, 0o700)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(exist_ok=True)
            os.chown(path / sub, mail.pw_uid, mail.pw_gid)
            os.chmod(path / sub, 0o700)

    def _write_users_file(self) -> None:
        lines = [f"{address}:{secret}::::::\n" for address, secret in sorted(self._users.items())]
        _atomic_write(self.dovecot_users_file, "".join(lines), 0o640)
        # Dovecot re-reads a passwd-file when its mtime (whole seconds) or size changes; a
        # password change within the same second keeps the size, so move the mtime on.
        written = time.time()
        stamp = max(int(written), self._users_mtime + 1)
        os.utime(self.dovecot_users_file, (stamp, stamp))
        self._users_mtime = stamp
        if self._dovecot_alive():
            # Dovecot's auth process stats the file at most once per second of its clock: wait
            # for the next second so that the next login is checked against the new file.
            time.sleep(max(0.0, math.floor(written) + 1.0 - time.time()) + 0.01)
        try:
            os.chown(self.dovecot_users_file, 0, grp.getgrnam("dovecot").gr_gid)
        except KeyError:
            os.chmod(self.dovecot_users_file, 0o644)

    def _write_postfix_tables(self) -> None:
        conf = self.postfix_config_dir
        _atomic_write(conf / "virtual_domains", "".join(f"{d}\tOK\n" for d in self.domains), backdate=True)
        mailboxes = []
        for address in sorted(self._users):
            local, domain = address.rsplit("@", 1)
            mailboxes.append(f"{address}\t{domain}/{local}/Maildir/\n")
        _atomic_write(conf / "virtual_mailboxes", "".join(mailboxes), backdate=True)
        rules = "".join(f"{k}\t{v}\n" for k, v in self._rules.items())
        _atomic_write(conf / "recipient_rules", rules, backdate=True)

    def _update_postfix_tables(self) -> None:
        if not self._prepared:
            return  # written by start()
        self._write_postfix_tables()
        self._reload_postfix()

    def _ensure_certificates(self) -> None:
        key_file = self.tls_dir / "server.key"
        chain_file = self.tls_dir / "server-chain.pem"
        if self.ca_file.exists() and key_file.exists() and chain_file.exists():
            return
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        issued = issue_server_certificate(
            ca_common_name=f"Petrel stand-in CA {self.instance_name}",
            dns_names=("localhost", f"mx.{self.domain}"),
            valid_days=825,
        )
        _atomic_write(key_file, issued.key_pem, 0o600)
        _atomic_write(chain_file, issued.cert_pem + issued.ca_pem, 0o644)
        _atomic_write(self.ca_file, issued.ca_pem, 0o644)

    def _write_postfix_config(self) -> None:
        mail = pwd.getpwnam("mail")
        conf = self.postfix_config_dir
        main_cf = f"""\
# Generated by local/mailu.py (Petrel's local MailU stand-in); rewritten on every start.
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {self.postfix_queue_dir}
data_directory = {self.postfix_data_dir}
mail_owner = postfix
setgid_group = postdrop
syslog_name = {self.instance_name}
maillog_file = {self.postfix_log}
maillog_file_prefixes = {self.log_dir}
inet_interfaces = {HOST}
inet_protocols = ipv4
myhostname = mx.{self.domain}
mydomain = {self.domain}
myorigin = $mydomain
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
readme_directory = no
html_directory = no
delay_warning_time = 0
recipient_delimiter = +
message_size_limit = {self.message_size_limit}
mailbox_size_limit = 0
virtual_mailbox_limit = 0
virtual_mailbox_domains = texthash:{conf}/virtual_domains
virtual_mailbox_maps = texthash:{conf}/virtual_mailboxes
virtual_mailbox_base = {self.mail_dir}
virtual_uid_maps = static:{mail.pw_uid}
virtual_gid_maps = static:{mail.pw_gid}
virtual_minimum_uid = {mail.pw_uid}
virtual_transport = virtual
relayhost = {self.relayhost}
smtp_dns_support_level = disabled
smtp_connect_timeout = 5s
smtp_tls_security_level = none
smtpd_banner = $myhostname ESMTP Petrel MailU stand-in
smtpd_peername_lookup = no
disable_vrfy_command = yes
smtpd_tls_cert_file = {self.tls_dir}/server-chain.pem
smtpd_tls_key_file = {self.tls_dir}/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_received_header = yes
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = no
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
    check_recipient_access texthash:{conf}/recipient_rules,
    permit_sasl_authenticated,
    reject
"""
        name = self.instance_name
        services = [
            ("pickup", "unix", "n", "-", "n", "60", "1", "pickup"),
            ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
            ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr"),
            ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr"),
            ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
            ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
            ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
            ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
            ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
            ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap"),
            ("smtp", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("relay", "unix", "-", "-", "n", "-", "-", "smtp"),
            ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
            ("error", "unix", "-", "-", "n", "-", "-", "error"),
            ("retry", "unix", "-", "-", "n", "-", "-", "error"),
            ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
            ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
            ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
            ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
            ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
        ]
        master_cf = [
            "# Generated by local/mailu.py (Petrel's local MailU stand-in); rewritten on every start.",
            f"{HOST}:{self.submission_port} inet n - n - - smtpd",
            f"  -o syslog_name={name}/submission",
            "  -o smtpd_tls_security_level=encrypt",
            "  -o smtpd_sasl_auth_enable=yes",
            f"{HOST}:{self.smtps_port} inet n - n - - smtpd",
            f"  -o syslog_name={name}/smtps",
            "  -o smtpd_tls_wrappermode=yes",
            "  -o smtpd_sasl_auth_enable=yes",
        ]
        master_cf += [" ".join(service) for service in services]
        _atomic_write(conf / "main.cf", main_cf, backdate=True)
        _atomic_write(conf / "master.cf", "\n".join(master_cf) + "\n", backdate=True)

    def _write_dovecot_config(self) -> None:
        mail = pwd.getpwnam("mail")
        auth_socket = self.postfix_queue_dir / "private" / "auth"
        config = f"""\
# Generated by local/mailu.py (Petrel's local MailU stand-in); rewritten on every start.
instance_name = {self.instance_name}
base_dir = {self.dovecot_base_dir}
state_dir = {self.dovecot_state_dir}
log_path = {self.dovecot_log}
info_log_path = {self.dovecot_log}
protocols = imap
listen = {HOST}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
mail_location = maildir:~/Maildir
auth_mechanisms = plain login
auth_username_format = %Lu
# No slow-down after failed logins (MailU has one; tests want wrong passwords to fail fast):
# no per-failure delay, and no anvil "auth penalty" for the client's IP.
auth_failure_delay = 0
# Loopback connections count as secure, so plaintext LOGIN works on the IMAP port.
disable_plaintext_auth = yes
ssl = yes
ssl_cert = <{self.tls_dir}/server-chain.pem
ssl_key = <{self.tls_dir}/server.key
ssl_min_protocol = TLSv1.2
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%Lu {self.dovecot_users_file}
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={self.mail_dir}/%Ld/%Ln
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {auth_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""
        _atomic_write(self.dovecot_config, config)

    # ---------------------------------------------------------------- postfix

    def _postfix_master_pid(self) -> int | None:
        pid = _read_pid(self.postfix_queue_dir / "pid" / "master.pid")
        if pid is None or not _alive(pid):
            return None
        stat = _proc_stat(pid)
        if stat is None or stat[0] != "master":
            return None
        return pid

    def _postfix_alive(self) -> bool:
        return self._postfix_master_pid() is not None

    def _postfix_check_output(self) -> str:
        command = f"{shlex.quote(self._bin('postfix'))} -c {shlex.quote(str(self.postfix_config_dir))}"
        script = _which("script")
        if script is None:
            result = self._run(["sh", "-c", f"{command} check"], timeout=60)
        else:
            # Postfix prints its errors only to a terminal (or syslog): give it one.
            result = self._run([script, "-qc", f"{command} check", "/dev/null"], timeout=60)
        return (result.stdout + result.stderr).strip()

    def _start_postfix(self) -> None:
        # `postfix start` runs its integrity checks first (they also create the queue
        # directories): about 0.4 s, once main.cf is not "just modified" (see _atomic_write).
        argv = [self._bin("postfix"), "-c", str(self.postfix_config_dir), "start"]
        rc, output = self._run_starter(argv, "postfix-start")
        if rc == 0 and self._postfix_ready():
            return
        detail = self._postfix_check_output()
        self._stop_postfix()
        raise RuntimeError(
            f"postfix failed to start (rc={rc}) for {self.workdir}\n"
            f"--- postfix start output ---\n{output}\n"
            f"--- postfix check ---\n{detail}\n--- logs ---\n{self.log_text(tail=40)}"
        )

    def _stop_postfix(self) -> None:
        self._wait_gone(self._signal_stop(self._postfix_master_pid()), timeout=10.0)

    @staticmethod
    def _signal_stop(master: int | None) -> set[tuple[int, int]]:
        """SIGTERM a master (Postfix's or Dovecot's); return it and its descendants to wait for.

        This is what ``postfix stop`` and ``doveadm stop`` send, minus their polling delays:
        Postfix's master terminates its process group, Dovecot's its children.
        """
        if master is None:
            return set()
        processes = _descendants(master) | {(master, _start_time(master))}
        with contextlib.suppress(ProcessLookupError):
            os.kill(master, signal.SIGTERM)
        return processes

    def _reload_postfix(self) -> None:
        """``postfix reload`` and wait until no daemon holding the old tables can take a session."""
        master = self._postfix_master_pid()
        if master is None:
            return
        old = {(pid, start) for pid, start in _descendants(master) if (_proc_stat(pid) or ("",))[0] in _TABLE_READERS}
        # What `postfix reload` sends. Idle daemons then exit at once (a daemon busy with a
        # session finishes it first); any daemon the master starts from now on reads the new
        # tables, so once the old ones are gone every new session sees the change.
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not any(_same_process_alive(pid, start) for pid, start in old):
                break
            time.sleep(0.01)

    # ---------------------------------------------------------------- dovecot

    def _dovecot_master_pid(self) -> int | None:
        pid = _read_pid(self.dovecot_base_dir / "master.pid")
        if pid is None or not _alive(pid):
            return None
        stat = _proc_stat(pid)
        if stat is None or stat[0] != "dovecot":
            return None
        return pid

    def _dovecot_alive(self) -> bool:
        return self._dovecot_master_pid() is not None

    def _start_dovecot(self) -> None:
        rc, output = self._run_starter([self._bin("dovecot"), "-c", str(self.dovecot_config)], "dovecot-start")
        auth_socket = self.postfix_queue_dir / "private" / "auth"
        # Dovecot opens its listeners before it daemonizes and writes master.pid: wait for all.
        ports = [self.imap_port, self.imaps_port]
        ok = rc == 0 and _wait_until(
            lambda: _listening(ports) == set(ports) and auth_socket.exists() and self._dovecot_alive()
        )
        if not ok:
            self._stop_dovecot()
            raise RuntimeError(
                f"dovecot failed to start (rc={rc}) for {self.workdir}\n"
                f"{output}\n--- logs ---\n{self.log_text(tail=40)}"
            )

    def _stop_dovecot(self) -> None:
        self._wait_gone(self._signal_stop(self._dovecot_master_pid()), timeout=10.0)

    # ---------------------------------------------------------------- processes

    def _postfix_ready(self) -> bool:
        ports = [self.submission_port, self.smtps_port]
        return _wait_until(lambda: _listening(ports) == set(ports) and self._postfix_alive())

    def _wait_gone(self, processes: set[tuple[int, int]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(_same_process_alive(pid, start) for pid, start in processes):
                return
            time.sleep(0.02)
        for pid, start in processes:
            if _same_process_alive(pid, start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _kill_leftovers(self) -> None:
        """SIGKILL any Postfix/Dovecot process still tied to this work dir (normally none)."""
        if not self.workdir.exists():
            return
        for _ in range(3):
            pids = find_processes(self.workdir)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[4] if stat is not None else -1
