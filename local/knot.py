"""A real authoritative DNS server for the tests and the local stack: Debian's Knot DNS (`knotd`) on a
loopback port, its zones changed at run time by RFC 2136 dynamic updates signed with TSIG.

Why Knot: it answers over UDP and TCP from a configuration under any directory, runs as root or not,
adds zones at run time through its control socket (`knotc conf-begin/conf-set/conf-commit`) and applies
a dynamic update before it answers it, so a lookup right after `publish` sees the new record.

`KnotServer` runs the server; `KnotClient` changes its zones, from the process that started it or from
another one (the `petrel dns` CLI, with what local.json's `dns` holds: address, TSIG key, control socket).

Every start is afresh: the configuration, the TSIG secret and the zone files are written anew and the
server keeps no journal (`journal-content: none`, `zonefile-sync: -1`), so nothing published before a
restart is served after it. Zones added with `add_zone` hold only their SOA and NS records until
something is published into them.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update

from local.mailu.install import which

log = logging.getLogger("petrel.local")

INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_dns.sh"
INSTALL_HINT = "install Debian's knot package (as root: local/install_dns.sh, or apt-get install knot)"
KEY_NAME = "petrel-update"
# A TXT character-string holds at most 255 octets (RFC 1035 3.3): longer values are split, and readers
# (DKIM, SPF) join the strings back into one.
TXT_CHUNK = 255
# How long a zone addition waits for another process's configuration transaction to end.
CONF_BUSY_SECONDS = 10.0
# Unix socket paths are limited to 108 bytes on Linux (sun_path); a longer one goes to a temporary dir.
_MAX_SOCKET_PATH = 100


class KnotError(RuntimeError):
    """knotd did not start, or refused a zone or an update."""


def knot_binaries() -> tuple[str, str]:
    """The paths of knotd and knotc; KnotError with the install hint when either is missing."""
    knotd, knotc = which("knotd"), which("knotc")
    if knotd is None or knotc is None:
        raise KnotError(f"knotd/knotc not found: {INSTALL_HINT}")
    return knotd, knotc


def install_knot() -> None:
    """Install Knot with local/install_dns.sh when it is missing (root and apt-get only), as the local
    stack installs Postfix and Dovecot; KnotError with the hint when that is not possible or fails."""
    if which("knotd") is not None and which("knotc") is not None:
        return
    if os.geteuid() != 0 or which("apt-get") is None:
        raise KnotError(f"knotd missing: {INSTALL_HINT}")
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if result.returncode != 0 or which("knotd") is None:
        tail = "\n".join(result.stdout.splitlines()[-20:])
        raise KnotError(f"installing knot failed ({INSTALL_HINT}):\n{tail}")


def absolute(name: str) -> dns.name.Name:
    """`name` as an absolute DNS name, whether or not it was given with the trailing dot."""
    return dns.name.from_text(name.rstrip(".").lower() + ".")


def txt_strings(value: str) -> list[bytes]:
    """A logical TXT value as the character-strings that carry it: 255-octet pieces, in order."""
    raw = value.encode()
    return [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]


def rdataset(rtype: str, values: Sequence[str], ttl: int) -> dns.rdataset.Rdataset:
    """The RRset's data: TXT values are the full logical strings (split here), any other type is in
    presentation format with absolute names (an MX is "10 mx.example.test.")."""
    rdtype = dns.rdatatype.from_text(rtype)
    rdatas: list[dns.rdata.Rdata] = []
    for value in values:
        if rdtype == dns.rdatatype.TXT:
            rdatas.append(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, rdtype, txt_strings(value)))
        else:
            rdatas.append(dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False))
    return dns.rdataset.from_rdata_list(ttl, rdatas)


def resolver_at(host: str, port: int, timeout: float = 2.0) -> dns.resolver.Resolver:
    """A dnspython resolver that asks `host`:`port` only, without a cache (each lookup sees the zone now)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.timeout = resolver.lifetime = timeout
    resolver.cache = None
    return resolver


def _free_port(host: str) -> int:
    """A port free for both TCP and UDP on `host` (knotd listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise KnotError(f"no free port on {host} for both TCP and UDP")


def _leftover_knotds(config: Path) -> list[int]:
    """Pids of knotd processes that run `config`: what a killed earlier run left behind."""
    found: list[int] = []
    needle = str(config).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if args and os.path.basename(args[0]) == b"knotd" and needle in args:
            found.append(int(entry.name))
    return found


Record = tuple[str, str, Sequence[str]]  # (owner name, type, values): one RRset


@dataclass
class KnotClient:
    """Changes the zones of a running knotd: zones through its control socket (`knotc`), records by
    TSIG-signed dynamic updates over TCP. Thread-safe, and safe beside other processes doing the same."""

    host: str
    port: int
    key_secret: str  # base64 HMAC-SHA256 secret of the key named KEY_NAME
    control_socket: Path
    zone_dir: Path  # knotd's zone storage: add_zone writes each new zone's file there
    ttl: int = 60
    timeout: float = 10.0
    _zones: set[dns.name.Name] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- what local.json holds -----------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """local.json's `dns`: where the server is, and what a client needs to change it (the TSIG
        secret: local.json is readable by its owner only)."""
        return {
            "host": self.host,
            "port": self.port,
            "tsig_key": KEY_NAME,
            "tsig_algorithm": "hmac-sha256",
            "tsig_secret": self.key_secret,
            "control_socket": str(self.control_socket),
            "zone_dir": str(self.zone_dir),
        }

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> KnotClient:
        """A client of the server `info` (local.json's `dns`) describes."""
        try:
            return cls(
                host=str(info["host"]),
                port=int(info["port"]),
                key_secret=str(info["tsig_secret"]),
                control_socket=Path(str(info["control_socket"])),
                zone_dir=Path(str(info["zone_dir"])),
            )
        except KeyError as exc:
            raise KnotError(f"the DNS server's description lacks {exc.args[0]!r}") from exc

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only (tests, `petrel dns show`)."""
        return resolver_at(self.host, self.port, timeout)

    # -- zones ---------------------------------------------------------------------------------
    def zones(self) -> tuple[str, ...]:
        """The zones the server serves (added by any client), without the trailing dot."""
        return tuple(sorted(zone.to_text(omit_final_dot=True) for zone in self._served()))

    def alive(self) -> bool:
        """Whether knotd answers on its control socket."""
        return self._knotc_result("status")[0] == 0

    def add_zone(self, name: str) -> bool:
        """Serve zone `name` (SOA and NS only until something is published); True when it was added,
        False when the server served it already (nothing changes then)."""
        zone = absolute(name)
        with self._lock:
            if zone in self._served():
                return False
            self._write_zone_file(zone)
            added = self._conf_add(zone)
            self._wait_loaded(zone)
            self._zones.add(zone)
            return added

    def zone_for(self, name: str) -> str:
        """The served zone `name` belongs to (the longest suffix); KnotError when none."""
        return self._zone_for(absolute(name)).to_text(omit_final_dot=True)

    # -- records -------------------------------------------------------------------------------
    def publish(self, name: str, rtype: str, values: Iterable[str], *, ttl: int | None = None) -> None:
        """Replace the `rtype` RRset at `name` with `values` (TXT: the full logical strings)."""
        self.publish_all([(name, rtype, list(values))], ttl=ttl)

    def publish_all(self, records: Iterable[Record], *, ttl: int | None = None) -> None:
        """Replace each RRset given, one update per zone (each zone's changes apply together)."""
        by_zone: dict[dns.name.Name, dns.update.UpdateMessage] = {}
        what: dict[dns.name.Name, list[str]] = {}
        for name, rtype, values in records:
            owner = absolute(name)
            data = rdataset(rtype, list(values), self.ttl if ttl is None else ttl)
            if not data:
                raise ValueError(f"nothing to publish at {name} {rtype}: give at least one value")
            zone = self._zone_for(owner)
            update = by_zone.get(zone) or by_zone.setdefault(zone, self._update(zone))
            update.replace(owner, data)
            what.setdefault(zone, []).append(f"{name} {rtype}")
        for zone, update in by_zone.items():
            self._send(update, f"publish {', '.join(what[zone])}")

    def remove(self, name: str, rtype: str) -> None:
        """Delete the `rtype` RRset at `name` (nothing happens when there is none)."""
        owner = absolute(name)
        update = self._update(self._zone_for(owner))
        update.delete(owner, dns.rdatatype.from_text(rtype))
        self._send(update, f"remove {name} {rtype}")

    # -- internals -----------------------------------------------------------------------------
    def _served(self) -> set[dns.name.Name]:
        """The zones knotd is configured with (asked of it: another process may have added some)."""
        output = self._knotc("conf-read", "zone.domain")
        self._zones = {
            absolute(line.partition("=")[2].strip()) for line in output.splitlines() if line.startswith("zone.domain")
        }
        return set(self._zones)

    def _zone_for(self, owner: dns.name.Name) -> dns.name.Name:
        """The longest served zone above `owner`: among the zones known, else the server's list asked
        again (another client may have added one)."""
        candidates = [zone for zone in self._zones if owner.is_subdomain(zone)]
        if not candidates:
            candidates = [zone for zone in self._served() if owner.is_subdomain(zone)]
        if candidates:
            return max(candidates, key=len)
        raise KnotError(f"{owner.to_text(omit_final_dot=True)} is in no zone this server serves")

    def _conf_add(self, zone: dns.name.Name) -> bool:
        """conf-begin / conf-set / conf-commit; False when another client added the zone meanwhile.
        knotd holds one configuration transaction at a time: a busy one is waited for."""
        deadline = time.monotonic() + CONF_BUSY_SECONDS
        while True:
            code, output = self._knotc_result("conf-begin")
            if code == 0:
                break
            if "too many transactions" not in output or time.monotonic() > deadline:
                raise KnotError(f"knotc conf-begin: {output.strip()}")
            time.sleep(0.02)
        try:
            code, output = self._knotc_result("conf-set", f"zone[{zone.to_text()}]")
            if code != 0:
                if "duplicate identifier" in output:
                    self._knotc_result("conf-abort")
                    return False
                raise KnotError(f"knotc conf-set zone[{zone}]: {output.strip()}")
            self._knotc("conf-commit")
        except BaseException:
            self._knotc_result("conf-abort")
            raise
        return True

    def _write_zone_file(self, zone: dns.name.Name) -> None:
        origin = zone.to_text()
        ns = dns.name.from_text("ns", zone).to_text()
        hostmaster = dns.name.from_text("hostmaster", zone).to_text()
        text = (
            f"$ORIGIN {origin}\n$TTL {self.ttl}\n"
            f"@ SOA {ns} {hostmaster} 1 3600 600 86400 {self.ttl}\n"
            f"@ NS {ns}\n"
            f"{ns} A {self.host}\n"
        )
        (self.zone_dir / f"{zone.to_text(omit_final_dot=True)}.zone").write_text(text)

    def _wait_loaded(self, zone: dns.name.Name) -> None:
        """Until the zone's SOA is answered with authority (knotd loads a new zone in the background)."""
        deadline = time.monotonic() + self.timeout
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        while time.monotonic() < deadline:
            try:
                response = dns.query.udp(query, self.host, port=self.port, timeout=0.5)
                if response.rcode() == dns.rcode.NOERROR and response.answer:
                    return
            except (OSError, dns.exception.DNSException):
                pass
            time.sleep(0.01)
        raise KnotError(f"zone {zone} was not loaded within {self.timeout} s (see the knotd log)")

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        keyring = dns.tsigkeyring.from_text({KEY_NAME: self.key_secret})
        return dns.update.UpdateMessage(
            zone, keyring=keyring, keyname=dns.name.from_text(KEY_NAME), keyalgorithm=dns.tsig.HMAC_SHA256
        )

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        """Send an update over TCP (no size limit, no retransmission doubt) and check its answer."""
        try:
            response = dns.query.tcp(update, self.host, port=self.port, timeout=self.timeout)
        except dns.tsig.PeerError as exc:  # knotd does not know the key: a client of an earlier run
            raise KnotError(f"{what}: knotd refused the key ({exc})") from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise KnotError(f"{what}: {exc}") from exc
        if response.rcode() != dns.rcode.NOERROR:
            raise KnotError(f"{what}: knotd answered {dns.rcode.to_text(response.rcode())}")

    def _knotc_result(self, *args: str) -> tuple[int, str]:
        _, knotc = knot_binaries()
        result = subprocess.run(
            [knotc, "-s", str(self.control_socket), "-t", str(int(self.timeout)), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        return result.returncode, result.stdout

    def _knotc(self, *args: str) -> str:
        code, output = self._knotc_result(*args)
        if code != 0:
            raise KnotError(f"knotc {' '.join(args)}: {output.strip() or f'exit {code}'}")
        return output


class KnotServer:
    """knotd on `host`:`port` (0: a free port) with its configuration, zone files and log under `workdir`.

    `add_zone` makes the server authoritative for a zone (idempotent); `publish` replaces one RRset and
    `remove` deletes it, each a TSIG-signed dynamic update sent over TCP to the zone the name belongs to
    (the longest suffix among the served zones): see `KnotClient`, which `client` returns.
    """

    def __init__(
        self,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ttl: int = 60,
        start_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self._host = host
        self._requested_port = port
        self._port = port
        self.ttl = ttl
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._client: KnotClient | None = None
        self._socket_dir: str | None = None
        self._log_handle: int | None = None

    # -- where it is ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port == 0:
            raise KnotError("the DNS server has not started: no port yet")
        return self._port

    @property
    def address(self) -> str:
        """`host:port`, as PETREL_DNS_RESOLVERS takes it."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def client(self) -> KnotClient:
        """The running server's client (a new one, with a new TSIG secret, at each start)."""
        if self._client is None or not self.running:
            raise KnotError("the DNS server is not running")
        return self._client

    @property
    def zones(self) -> tuple[str, ...]:
        """The zones served, without the trailing dot (none before the first `add_zone` of a start)."""
        return self.client.zones()

    def info(self) -> dict[str, Any]:
        """local.json's `dns` (see KnotClient.info)."""
        return self.client.info()

    @property
    def config_file(self) -> Path:
        return self.workdir / "knot.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "knot.log"

    @property
    def zone_dir(self) -> Path:
        return self.workdir / "zones"

    @property
    def control_socket(self) -> Path:
        default = self.workdir / "run" / "knot.sock"
        if len(str(default)) <= _MAX_SOCKET_PATH:
            return default
        if self._socket_dir is None:
            self._socket_dir = tempfile.mkdtemp(prefix="petrel-knot-")
        return Path(self._socket_dir) / "knot.sock"

    def resolver(self, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this server only."""
        return self.client.resolver(timeout)

    # -- zones and records (the client's) ------------------------------------------------------
    def add_zone(self, name: str) -> bool:
        return self.client.add_zone(name)

    def zone_for(self, name: str) -> str:
        return self.client.zone_for(name)

    def publish(self, name: str, rtype: str, values: Iterable[str], *, ttl: int | None = None) -> None:
        self.client.publish(name, rtype, values, ttl=ttl)

    def publish_all(self, records: Iterable[Record], *, ttl: int | None = None) -> None:
        self.client.publish_all(records, ttl=ttl)

    def remove(self, name: str, rtype: str) -> None:
        self.client.remove(name, rtype)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> KnotServer:
        """Start knotd afresh (a new TSIG secret, no zones) and wait until it answers queries and its
        control socket. With port 0 a busy port found at start is replaced by another, up to 3 times."""
        if self.running:
            return self
        knotd, _ = knot_binaries()
        self._kill_leftovers()
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or _free_port(self._host)
            secret = self._prepare()
            self._client = KnotClient(
                host=self._host,
                port=self._port,
                key_secret=secret,
                control_socket=self.control_socket,
                zone_dir=self.zone_dir,
                ttl=self.ttl,
            )
            try:
                self._spawn(knotd)
                self._wait_ready()
                return self
            except KnotError:
                self._terminate()
                if attempt == attempts:
                    self._port = self._requested_port
                    raise
                log.warning("knotd did not start on port %d; trying another port", self._port)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop knotd and wait for it. Safe to call twice, or before a start."""
        self._terminate()
        self._client = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __enter__(self) -> KnotServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _prepare(self) -> str:
        """A clean work dir (the run, zone and database directories emptied) and a new configuration
        with a new TSIG secret, which it returns."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "zones", "db"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
            (self.workdir / sub).mkdir()
        self.control_socket.unlink(missing_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.config_file.write_text(self._config(secret))
        os.chmod(self.config_file, 0o600)  # it holds the TSIG secret
        return secret

    def _config(self, secret: str) -> str:
        work = self.workdir
        return f"""# Written by local/knot.py at each start; edits are lost.
server:
    rundir: "{work / "run"}"
    listen: {self.host}@{self.port}

log:
  - target: "{self.log_file}"
    any: info

database:
    storage: "{work / "db"}"
    journal-db-max-size: 64M
    kasp-db-max-size: 16M
    timer-db-max-size: 16M
    catalog-db-max-size: 16M

control:
    listen: "{self.control_socket}"

key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {secret}

acl:
  - id: {KEY_NAME}
    key: {KEY_NAME}
    action: update

template:
  - id: default
    storage: "{self.zone_dir}"
    file: "%s.zone"
    zonefile-load: whole
    zonefile-sync: -1
    journal-content: none
    semantic-checks: off
    acl: {KEY_NAME}
"""

    def _spawn(self, knotd: str) -> None:
        self.log_file.unlink(missing_ok=True)
        self._log_handle = os.open(self.workdir / "knotd.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._process = subprocess.Popen(
            [knotd, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the terminal's group reaches the platform, which stops it
        )

    def _wait_ready(self) -> None:
        """Until knotd answers a query on its port (any rcode: REFUSED for a zone it does not serve) and
        its control socket answers `status`."""
        assert self._client is not None
        deadline = time.monotonic() + self.start_timeout
        query = dns.message.make_query(".", dns.rdatatype.SOA)
        answered = False
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise KnotError(f"knotd exited while starting:\n{self._log_tail()}")
            if not answered:
                try:
                    dns.query.udp(query, self.host, port=self.port, timeout=0.2)
                    answered = True
                except (OSError, dns.exception.DNSException):
                    pass
            if answered and self._client.alive():
                return
            time.sleep(0.02)
        raise KnotError(
            f"knotd did not answer on {self.host}:{self.port} within {self.start_timeout} s:\n{self._log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log_handle is not None:
            os.close(self._log_handle)
            self._log_handle = None

    def _kill_leftovers(self) -> None:
        """A knotd that a killed earlier run left on this config would hold its port and socket."""
        for pid in _leftover_knotds(self.config_file):
            log.warning("stopping knotd %d left by an earlier run", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.02)

    def _log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.log_file, self.workdir / "knotd.out"):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(knotd wrote nothing)"
