"""Helpers for the fault-injection end-to-end tests (tests/e2e/test_faults.py).

* `FaultProxy`: a TCP proxy in front of the stand-in's submission port that can drop a session after
  DATA was sent (before the server's reply reaches the client) or stall it mid-DATA. TLS (STARTTLS)
  passes through it opaque: it only counts bytes.
* `Tracker`: sends through the API, polls `GET /v1/emails/{id}`, remembers every status it saw.
* `Mailboxes`: real mailbox users on the stand-in; counts the copies of each Message-ID over IMAP.
* `FaultTenant`: a tenant of its own (domain, SMTP server, API key), so faults never touch the demo tenant.
* `ThrottlingMessages`, `CrashingRelay`: wrappers around the send worker's dependencies.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import boto3
from botocore.exceptions import ClientError

from local.mailu import MailuStandIn
from local.platform import LocalPlatform
from petrel import container
from petrel.services import tenants as admin
from tests.e2e.conftest import Api

FINAL_STATUSES = frozenset({"relayed", "delivered", "bounced", "failed", "suppressed", "cancelled"})
FINAL_EVENTS = frozenset(
    {"email.sent", "email.delivered", "email.bounced", "email.failed", "email.suppressed", "email.cancelled"}
)


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_refused(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until connecting to `host:port` is refused: a server that was just stopped may still have
    a process holding its listening socket for a moment, and would take (and drop) a connection."""

    def refused() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False

    wait_until(refused, timeout, f"{host}:{port} to refuse connections", interval=0.05)


# --------------------------------------------------------------------------- the TCP fault proxy


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream` with switchable faults.

    Modes (`set_mode`), applied to every connection as its bytes flow:

    * ``pass``: forward both ways.
    * ``drop-after-data``: forward both ways, but when the server speaks after the client has sent more
      than `threshold` bytes since the server last spoke (the body of a DATA), close both sockets instead
      of forwarding the server's bytes: the server took the message, the client never hears its reply.
      ``times=n`` reverts to ``pass`` after n drops.
    * ``stall``: once the client has sent more than `threshold` bytes since the server last spoke,
      forward exactly `threshold` of them and then nothing more in either direction, holding both
      sockets open. When the mode is changed again, stalled connections are closed (their held bytes are
      never delivered, so the server never completes that DATA).

    The message body must be well over `threshold` (SMTP commands and TLS handshakes are far smaller).
    """

    PASS = "pass"
    DROP_AFTER_DATA = "drop-after-data"
    STALL = "stall"
    MODES = (PASS, DROP_AFTER_DATA, STALL)

    def __init__(self, upstream_host: str, upstream_port: int, *, threshold: int = 16 * 1024) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()
        self._lock = threading.Lock()
        self._mode = self.PASS
        self._threshold = threshold
        self._drops_left: int | None = None
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.stats: Counter[str] = Counter()  # connections, dropped, stalled
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def set_mode(self, mode: str, *, threshold: int | None = None, times: int | None = None) -> None:
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if times is not None and mode != self.DROP_AFTER_DATA:
            raise ValueError("times= applies to drop-after-data only")
        with self._lock:
            self._mode = mode
            self._drops_left = times
            if threshold is not None:
                self._threshold = threshold

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join(timeout=2)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _settings(self) -> tuple[str, int]:
        with self._lock:
            return self._mode, self._threshold

    def _take_drop(self) -> bool:
        with self._lock:
            if self._mode != self.DROP_AFTER_DATA:
                return False
            if self._drops_left is not None:
                self._drops_left -= 1
                if self._drops_left <= 0:
                    self._mode, self._drops_left = self.PASS, None
            self.stats["dropped"] += 1
            return True

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _close(client)  # as if the server refused: the client sees its connection closed
            return
        for sock in (client, upstream):
            sock.settimeout(30)  # only sendall can block; recv runs when select says readable
        with self._lock:
            self._sockets |= {client, upstream}
            self.stats["connections"] += 1
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, "client")
        selector.register(upstream, selectors.EVENT_READ, "server")
        since_server = 0  # bytes the client sent since the server last spoke
        stalled = False
        try:
            while not self._closed.is_set():
                if stalled:  # hold: read nothing, forward nothing, until the mode changes
                    if self.mode != self.STALL:
                        return
                    self._closed.wait(0.05)
                    continue
                for key, _ in selector.select(timeout=0.1):
                    data = key.fileobj.recv(16 * 1024)  # type: ignore[union-attr]
                    if not data:
                        return
                    mode, threshold = self._settings()
                    if key.data == "client":
                        if mode == self.STALL and since_server + len(data) > threshold:
                            upstream.sendall(data[: max(threshold - since_server, 0)])
                            stalled = True
                            with self._lock:
                                self.stats["stalled"] += 1
                            break
                        upstream.sendall(data)
                        since_server += len(data)
                    else:
                        if since_server > threshold and mode == self.DROP_AFTER_DATA and self._take_drop():
                            return
                        client.sendall(data)
                        since_server = 0
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                _close(sock)
            with self._lock:
                self._sockets -= {client, upstream}


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --------------------------------------------------------------------------- tenants and mail


@dataclass
class FaultTenant:
    """A tenant of its own with one SMTP server, for tests that break that server."""

    platform: LocalPlatform
    tenant_id: str
    server_id: str
    api: Api
    from_address: str

    @property
    def deps(self) -> admin.AdminDeps:
        return admin_deps(self.platform)

    def replace_server(self, **server: Any) -> None:
        """Register a new server (same defaults as `make_tenant`) and then remove the old one.

        Petrel has no admin function that updates a server (e.g. its CA bundle): re-register it.
        """
        new = admin.add_smtp_server(self.deps, self.tenant_id, **_server_settings(self.platform, **server))
        admin.remove_smtp_server(self.deps, self.tenant_id, self.server_id)
        self.server_id = new.server_id


def admin_deps(platform: LocalPlatform) -> admin.AdminDeps:
    return container.admin_deps(platform.info["aws"]["tables"]["tenants"], platform.info["aws"]["secrets_prefix"])


def _server_settings(platform: LocalPlatform, **server: Any) -> dict[str, Any]:
    mailu = platform.mailu
    return {
        "host": mailu.host,
        "port": mailu.submission_port,
        "security": "starttls",
        "username": platform.info["smtp_server"]["username"],
        "password": platform.relay_password,
        "ca_bundle": mailu.ca_pem,
        **server,
    }


def make_tenant(platform: LocalPlatform, name: str, **server: Any) -> FaultTenant:
    """A tenant sending from the stand-in's domain through one server (the stand-in unless overridden)."""
    deps = admin_deps(platform)
    tenant = admin.create_tenant(deps, name)
    domain = platform.config.domain  # delivery reports (NOTIFY=SUCCESS) come back to bounces@ this domain
    admin.add_domain(deps, tenant.tenant_id, domain)
    created = admin.add_smtp_server(deps, tenant.tenant_id, **_server_settings(platform, **server))
    key = admin.create_api_key(deps, tenant.tenant_id, f"{name} faults")
    return FaultTenant(
        platform=platform,
        tenant_id=tenant.tenant_id,
        server_id=created.server_id,
        api=Api(platform.info["api_url"], key.secret),
        from_address=f"faults@{domain}",
    )


def unique_addresses(platform: LocalPlatform, stem: str, count: int) -> list[str]:
    tag = secrets.token_hex(3)
    return [f"{stem}-{tag}-{i}@{platform.config.domain}" for i in range(count)]


def big_text(kib: int) -> str:
    """About `kib` KiB of plain ASCII lines (each line distinct, so nothing compresses it away)."""
    line = "{:06d} The quick brown fox jumps over the lazy dog; petrels fly low over the waves.\n"
    out: list[str] = []
    size = 0
    while size < kib * 1024:
        out.append(line.format(len(out)))
        size += len(out[-1])
    return "".join(out)


class Mailboxes:
    """Real mailbox users on the stand-in; copies of each Message-ID per mailbox, read over IMAPS."""

    def __init__(self, mailu: MailuStandIn, addresses: Iterable[str]) -> None:
        self.mailu = mailu
        self.passwords = {a: secrets.token_urlsafe(12) for a in addresses}
        mailu.add_users(self.passwords)  # one reload, one wait

    def copies(self, address: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for raw in self.mailu.fetch_all(address, self.passwords[address]):
            found[str(message_from_bytes(raw, policy=policy.default)["Message-ID"])] += 1
        return found

    def _in_postfix_queue(self) -> bool:
        wanted = set(self.passwords)
        for entry in self.mailu.mailq():
            if any(r.get("address", "").lower() in wanted for r in entry.get("recipients", [])):
                return True
        return False

    def settle(self, expected: dict[str, set[str]], timeout: float = 20.0) -> dict[str, Counter[str]]:
        """Wait until each address holds each of its expected Message-IDs at least once and Postfix has
        nothing left queued for these mailboxes; then the copies per address and Message-ID."""

        def arrived() -> dict[str, Counter[str]] | None:
            counts = {a: self.copies(a) for a in self.passwords}
            if all(counts[a][m] >= 1 for a, ids in expected.items() for m in ids) and not self._in_postfix_queue():
                return counts
            return None

        wait_until(arrived, timeout, "the relayed messages in their mailboxes", interval=0.3)
        return {a: self.copies(a) for a in self.passwords}  # once more, after the queue was seen empty


# --------------------------------------------------------------------------- sending and watching


def send_batch(api: Api, emails: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, body = api.call("POST", "/v1/emails/batch", {"emails": emails})
    assert status == 202, body
    assert [r["status"] for r in body["results"]] == [202] * len(emails), body
    return [r["email"] for r in body["results"]]


def send(api: Api, email: dict[str, Any]) -> dict[str, Any]:
    status, body = api.call("POST", "/v1/emails", email)
    assert status == 202, body
    return body  # type: ignore[no-any-return]


@dataclass
class Tracker:
    """The emails one test sent, polled through the API; every status seen per message is kept."""

    api: Api
    email_ids: list[str] = field(default_factory=list)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # email id -> last view
    seen: dict[str, list[str]] = field(default_factory=dict)  # message id -> statuses in order seen
    glitches: list[tuple[int, Any]] = field(default_factory=list)  # failed GETs that a retry got past

    def add(self, *sent: dict[str, Any]) -> Tracker:
        self.email_ids += [s["id"] for s in sent]
        return self

    def _get(self, email_id: str) -> dict[str, Any]:
        """One email's view. A failed GET is tried twice more (and kept in `glitches`): a test that
        polls for a minute should not fail on one hiccup of the local stack, but must on a real error."""
        for attempt in range(3):
            status, view = self.api.call("GET", f"/v1/emails/{email_id}")
            if status == 200:
                return view  # type: ignore[no-any-return]
            self.glitches.append((status, view))
            if attempt < 2:
                time.sleep(0.3)
        raise AssertionError(f"GET /v1/emails/{email_id} failed 3 times: {self.glitches[-3:]}")

    def refresh(self) -> None:
        for email_id in self.email_ids:
            view = self._get(email_id)
            self.views[email_id] = view
            for r in view["recipients"]:
                history = self.seen.setdefault(r["id"], [])
                if not history or history[-1] != r["status"]:
                    history.append(r["status"])

    def recipients(self) -> list[dict[str, Any]]:
        return [r for e in self.email_ids for r in self.views[e]["recipients"]]

    def by_address(self) -> dict[str, dict[str, Any]]:
        return {r["email"]: r for r in self.recipients()}

    def header_id(self, email_id: str) -> str:
        return str(self.views[email_id]["message_id_header"])

    def wait_each(self, done: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, dict[str, Any]]:
        """Poll until every message has satisfied `done` at some poll (not necessarily the same one);
        the recipient views at the moment each first did, by message id."""
        hits: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            for r in self.recipients():
                if r["id"] not in hits and done(r):
                    hits[r["id"]] = r
            if len(hits) == len(self.recipients()):
                return hits
            if time.monotonic() > deadline:
                missing = [r for r in self.recipients() if r["id"] not in hits]
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}: {len(missing)} messages not there, e.g.\n"
                    + json.dumps(missing[:2], indent=1)
                )
            time.sleep(0.25)

    def wait_all(self, status: str, timeout: float = 40.0) -> None:
        """Poll until every message is `status` at the same time."""
        self.wait_each(lambda r: r["status"] == status, timeout, f"every message {status}")

        def all_at_once() -> bool:
            self.refresh()
            return all(r["status"] == status for r in self.recipients())

        wait_until(all_at_once, timeout, f"every message {status} at once")

    def assert_forward_only(self, redriven: Iterable[str] = ()) -> None:
        """No status moved backwards: once final, a message stayed so (in what the polls saw), and its
        events are `email.queued` (or `email.scheduled`), then non-final ones, then exactly one final
        event, last.

        A message in `redriven` (ids) was reopened by `petrel dlq redrive` after the worker ended it
        `failed`/`worker-error`: its life restarts at an `email.queued` event with detail `redriven`,
        and each life before that ended `email.failed`."""
        self.refresh()
        reopened = set(redriven)
        if self.glitches:
            print(f"\n(GET /v1/emails failed and was retried: {self.glitches})")
        for message_id, history in self.seen.items():
            if message_id in reopened:
                assert history[-1] in FINAL_STATUSES, f"{message_id} did not end final: {history}"
                continue
            finals = [i for i, s in enumerate(history) if s in FINAL_STATUSES]
            assert not finals or finals[0] == len(history) - 1, f"{message_id} went back from final: {history}"
        for email_id in self.email_ids:
            view = self.views[email_id]
            for r in view["recipients"]:
                events = [e for e in view["events"] if e["message_id"] == r["id"]]
                starts = [
                    i
                    for i, e in enumerate(events)
                    if i == 0 or (e["type"] == "email.queued" and e.get("detail") == "redriven")
                ]
                assert len(starts) == 1 or r["id"] in reopened, f"{r['email']} reopened without a redrive: {events}"
                lives = [events[a:b] for a, b in zip(starts, [*starts[1:], len(events)], strict=True)]
                for number, life in enumerate(lives):
                    kinds = [e["type"] for e in life]
                    finals = [k for k in kinds if k in FINAL_EVENTS]
                    assert kinds and kinds[0] in ("email.queued", "email.scheduled"), (r["email"], kinds)
                    assert len(finals) == 1 and kinds[-1] == finals[0], f"{r['email']}: one final event, last: {kinds}"
                    if number < len(lives) - 1:
                        assert life[-1]["type"] == "email.failed", f"{r['email']}: a redrive reopens a failure: {kinds}"
                    if "email.sent" in kinds and "email.deferred" in kinds:
                        last_deferral = max(i for i, k in enumerate(kinds) if k == "email.deferred")
                        assert kinds.index("email.sent") > last_deferral


# --------------------------------------------------------------------------- platform internals


def dead_letters(platform: LocalPlatform) -> dict[str, int]:
    """Jobs in each dead-letter queue (visible + in flight)."""
    sqs = boto3.client(
        "sqs", endpoint_url=platform.info["aws"]["endpoint_url"], region_name=platform.info["aws"]["region"]
    )
    depth: dict[str, int] = {}
    for name, url in platform.info["aws"]["dlqs"].items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        depth[name] = int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )
    return depth


def backdate_message(platform: LocalPlatform, tenant_id: str, email_id: str, message_id: str, hours: float) -> None:
    """Move one message's `created_at` back, straight in the (moto) messages table.

    The key layout is petrel.adapters.dynamodb's: pk `<tenant id>#<email id>`, sk `MSG#<message id>`.
    """
    aws = platform.info["aws"]
    db = boto3.client("dynamodb", endpoint_url=aws["endpoint_url"], region_name=aws["region"])
    key = {"pk": {"S": f"{tenant_id}#{email_id}"}, "sk": {"S": f"MSG#{message_id}"}}
    item = db.get_item(TableName=aws["tables"]["messages"], Key=key, ConsistentRead=True)["Item"]
    created = datetime.fromisoformat(item["created_at"]["S"])
    db.update_item(
        TableName=aws["tables"]["messages"],
        Key=key,
        UpdateExpression="SET created_at = :c",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":c": {"S": (created - timedelta(hours=hours)).isoformat()}},
    )


def throttled(operation: str) -> ClientError:
    """What botocore raises once its own retries of a throttled DynamoDB call are used up."""
    response: Any = {
        "Error": {
            "Code": "ProvisionedThroughputExceededException",
            "Message": "The level of configured provisioned throughput for the table was exceeded.",
        },
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


class ThrottlingMessages:
    """Wraps the worker's MessageStore: for one tenant, every `every`-th `transition` (and every
    `lease_every`-th `lease`) raises DynamoDB's throttling error, until `transitions` (`leases`) have
    been raised. Each message is throttled at most once, so that no job needs more receives than
    the queue's maxReceiveCount allows. The throttled call writes nothing."""

    def __init__(
        self, inner: Any, tenant_id: str, *, every: int = 3, lease_every: int = 4, transitions: int = 4, leases: int = 3
    ) -> None:
        self._inner = inner
        self._tenant = tenant_id
        self._every, self._lease_every = every, lease_every
        self._budget = {"transition": transitions, "lease": leases}
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.faulted: set[str] = set()  # message ids
        self.raised: Counter[str] = Counter()  # operation -> count
        self.lost_outcomes: Counter[str] = Counter()  # message id -> throttled writes of a `relayed` outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _throttle(self, operation: str, tenant_id: str, message_id: str, every: int) -> bool:
        with self._lock:
            if tenant_id != self._tenant or message_id in self.faulted or self._budget[operation] <= 0:
                return False
            self._calls[operation] += 1
            if self._calls[operation] % every:
                return False
            self._budget[operation] -= 1
            self.faulted.add(message_id)
            self.raised[operation] += 1
            return True

    def lease(self, tenant_id: str, email_id: str, message_id: str, **kwargs: Any) -> Any:
        if self._throttle("lease", tenant_id, message_id, self._lease_every):
            raise throttled("UpdateItem")
        return self._inner.lease(tenant_id, email_id, message_id, **kwargs)

    def transition(self, tenant_id: str, email_id: str, message_id: str, **kwargs: Any) -> Any:
        if self._throttle("transition", tenant_id, message_id, self._every):
            if str(kwargs["change"].status) == "relayed":
                self.lost_outcomes[message_id] += 1
            raise throttled("UpdateItem")
        return self._inner.transition(tenant_id, email_id, message_id, **kwargs)


class RecordingRelay:
    """Wraps the worker's SmtpRelay and records, batch by batch, each relay to one of `recipients`
    as (recipient, reply code). The local stack runs several invocations at once, as threads: a batch
    is what one thread relays until its `close()` (DeliverDeps.end_batch)."""

    def __init__(self, inner: Any, recipients: Iterable[str]) -> None:
        self._inner = inner
        self._recipients = {r.lower() for r in recipients}
        self._thread = threading.local()
        self._lock = threading.Lock()
        self.batches: list[list[tuple[str, int]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
        reply = self._inner.relay(server, password, envelope, data, **kwargs)
        if envelope.recipient.lower() in self._recipients:
            batch: list[tuple[str, int]] | None = getattr(self._thread, "batch", None)
            if batch is None:
                batch = self._thread.batch = []
                with self._lock:
                    self.batches.append(batch)
            batch.append((envelope.recipient.lower(), reply.code))
        return reply

    def close(self) -> None:
        self._thread.batch = None
        self._inner.close()


class WorkerCrash(BaseException):
    """Kills the whole invocation: BatchProcessor's per-record handling catches only Exception."""


class CrashingRelay:
    """Wraps the worker's SmtpRelay: the `after`-th relay (to one of `recipients`) of a batch (one
    thread's invocation) goes through, and then, before its reply is returned (so before any status is
    written), the invocation crashes. Only `crashes` times in all."""

    def __init__(self, inner: Any, recipients: Iterable[str], *, after: int = 2, crashes: int = 1) -> None:
        self._inner = inner
        self._recipients = {r.lower() for r in recipients}
        self._after = after
        self._thread = threading.local()
        self._lock = threading.Lock()
        self.crashes_left = crashes
        self.crashed_after: list[str] = []  # recipients whose relay preceded a crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def relay(self, server: Any, password: str, envelope: Any, data: bytes, **kwargs: Any) -> Any:
        reply = self._inner.relay(server, password, envelope, data, **kwargs)
        if envelope.recipient.lower() in self._recipients:
            self._thread.count = getattr(self._thread, "count", 0) + 1
            if self._thread.count == self._after and reply.is_positive:
                with self._lock:
                    crash = self.crashes_left > 0
                    if crash:
                        self.crashes_left -= 1
                        self.crashed_after.append(envelope.recipient.lower())
                if crash:
                    raise WorkerCrash(f"simulated crash after relaying to {envelope.recipient}")
        return reply

    def close(self) -> None:  # DeliverDeps.end_batch: this thread's batch is over
        self._thread.count = 0
        self._inner.close()


@contextlib.contextmanager
def worker_deps(**replace: Callable[[Any], Any]) -> Iterator[Any]:
    """Replace attributes of the send worker's DeliverDeps for the duration (value: old -> new)."""
    deps = container.worker().deliver
    saved = {name: getattr(deps, name) for name in replace}
    try:
        for name, make in replace.items():
            setattr(deps, name, make(saved[name]))
        yield deps
    finally:
        for name, value in saved.items():
            setattr(deps, name, value)
