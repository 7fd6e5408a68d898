"""Traffic shaping against the real Postfix of the MailU stand-in: the send worker's handler (dispatch,
token buckets, threads, the real SMTP adapter) relays through two submission accounts of one Postfix,
and what each account sent is read from Postfix's own log (one `client=..., sasl_username=...` line
per message it accepted, with its time).

Invariants:
- a server limited to N messages a second is never sent more than N a second (plus its burst), as
  Postfix itself saw them arrive; and the mail still all goes, none lost, none twice;
- a paused server receives nothing while its pool mate carries all the traffic;
- hard bounces over the threshold pause the server (`server.paused`) and its pool mate takes the rest.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from local.mailu import MailuStandIn
from petrel.adapters.clock import SystemClock
from petrel.adapters.smtp import SmtplibRelay
from petrel.models.jobs import SendJob
from petrel.models.records import MessageStatus, ServerShaping, SmtpSecurity, SmtpServer
from petrel.ports import MessageKey
from tests.fakes import FakeWorld, records
from tests.integration.standin import running_standin
from tests.unit.test_send_worker_handler import Worker, make_worker, sqs_record

pytestmark = pytest.mark.integration

INBOX = "inbox@recipient.test"
INBOX_PASSWORD = "inbox-secret-shaping"
RELAY_A = "relay-a@petrel.test"
RELAY_B = "relay-b@petrel.test"
PASSWORD_A = "relay-a-secret-shaping"
PASSWORD_B = "relay-b-secret-shaping"
# `Nov 30 18:53:10 mx petrel-mailu-.../submission/smtpd[30959]: 0866C522054: client=localhost[127.0.0.1],
# sasl_method=PLAIN, sasl_username=relay-a@petrel.test`
ACCEPTED = re.compile(r"^(\w{3} +\d+ \d\d:\d\d:\d\d) .*: [0-9A-F]+: client=.*sasl_username=(\S+)$")


@pytest.fixture(scope="module")
def mailu() -> Iterator[MailuStandIn]:
    with running_standin(
        "petrel-shaping-test-", {INBOX: INBOX_PASSWORD, RELAY_A: PASSWORD_A, RELAY_B: PASSWORD_B}
    ) as standin:
        yield standin


def _accepted(mailu: MailuStandIn, since: int, expected: int, timeout: float = 10.0) -> list[tuple[datetime, str]]:
    """(time, SASL user) of each message Postfix accepted from an authenticated client, after byte
    offset `since` of its log. Postfix's smtpd hands its lines to its log daemon, which writes them a
    moment later: the log is read again until it holds `expected` of them, or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        found: list[tuple[datetime, str]] = []
        with mailu.postfix_log.open("rb") as log:
            log.seek(since)
            for raw in log.read().decode(errors="replace").splitlines():
                match = ACCEPTED.match(raw)
                if match:
                    stamp = datetime.strptime(f"{datetime.now().year} {match.group(1)}", "%Y %b %d %H:%M:%S")
                    found.append((stamp, match.group(2).rstrip(",")))
        if len(found) >= expected or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _server(
    world: FakeWorld, tenant_id: str, mailu: MailuStandIn, user: str, password: str, **fields: object
) -> SmtpServer:
    """A server of the tenant's transactional pool: one of the stand-in's accounts, no warm-up cap."""
    tls = fields.pop("security", SmtpSecurity.STARTTLS) is SmtpSecurity.TLS
    shaping = ServerShaping(**({"warmup": ()} | fields.pop("shaping", {})))  # type: ignore[operator, arg-type]
    server = records.server(
        tenant_id,
        host="127.0.0.1",
        port=mailu.smtps_port if tls else mailu.submission_port,
        security=SmtpSecurity.TLS if tls else SmtpSecurity.STARTTLS,
        username=user,
        ca_bundle=mailu.ca_pem,
        shaping=shaping,
        **fields,
    )
    world.tenants.put_server(server)
    world.secrets.put_secret(server.secret_name, password)
    return server


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    world = FakeWorld(clock=SystemClock())  # type: ignore[arg-type]  # the buckets run on real time here
    world.relay = SmtplibRelay(timeout=10, transaction_seconds=30)  # type: ignore[assignment]
    made = make_worker(world, tmp_path, relay_concurrency=4)
    for server in world.tenants.list_servers(made.seeded.tenant.tenant_id):  # the fake seed's, not a MailU
        world.tenants.delete_server(server.tenant_id, server.server_id)
    try:
        yield made
    finally:
        world.relay.close()


def _drive(worker: Worker, jobs: list[SendJob], *, within: float) -> None:
    """Run the handler as SQS and Lambda would: batches of up to 10 due jobs, a handed-back job due
    after its delay, until every message is final or `within` seconds have passed."""
    queue = worker.world.queue
    due: list[tuple[float, SendJob]] = [(time.monotonic(), job) for job in jobs]
    deadline = time.monotonic() + within
    while due and time.monotonic() < deadline:
        now = time.monotonic()
        ready = [job for at, job in due if at <= now][:10]
        if not ready:
            time.sleep(0.05)
            continue
        due = [(at, job) for at, job in due if job not in ready]
        result = worker.run(*(sqs_record(job.model_dump_json(), message_id=job.message_id) for job in ready))
        assert result == {"batchItemFailures": []}
        for job in queue.drain("transactional"):
            due.append((time.monotonic() + queue.delays[job.message_id], job))
    assert not due, f"{len(due)} jobs still waiting"


def _send(worker: Worker, count: int, recipient: str = INBOX) -> list[SendJob]:
    """One email to `count` copies of `recipient`, stored now (the clock is real here), its jobs."""
    email, messages = records.email(worker.seeded.tenant.tenant_id, [recipient] * count, at=worker.world.clock.now())
    worker.world.messages.create_email(email, messages, 0)
    domain = recipient.rpartition("@")[2]
    return [
        SendJob(tenant_id=m.tenant_id, email_id=m.email_id, message_id=m.message_id, domain=domain) for m in messages
    ]


def _statuses(worker: Worker, jobs: list[SendJob]) -> Counter[MessageStatus]:
    found: Counter[MessageStatus] = Counter()
    for job in jobs:
        message = worker.world.messages.get_message(MessageKey.of(job))
        assert message is not None
        found[message.status] += 1
    return found


def test_a_server_limited_to_n_a_second_receives_at_most_n_a_second(mailu: MailuStandIn, worker: Worker) -> None:
    rate, burst = 3, 1
    tenant_id = worker.seeded.tenant.tenant_id
    _server(worker.world, tenant_id, mailu, RELAY_A, PASSWORD_A, shaping={"rate_per_second": rate, "burst": burst})
    since = mailu.postfix_log.stat().st_size
    jobs = _send(worker, 15)

    _drive(worker, jobs, within=60)

    assert _statuses(worker, jobs) == {MessageStatus.RELAYED: 15}
    accepted = [at for at, user in _accepted(mailu, since, 15) if user == RELAY_A]
    assert len(accepted) == 15  # each once
    per_second = Counter(accepted)
    assert max(per_second.values()) <= rate + burst, per_second
    span = (max(accepted) - min(accepted)).total_seconds() + 1
    assert len(accepted) <= rate * span + burst


def test_a_paused_server_receives_nothing_while_its_pool_mate_carries_the_traffic(
    mailu: MailuStandIn, worker: Worker
) -> None:
    tenant_id = worker.seeded.tenant.tenant_id
    paused = _server(worker.world, tenant_id, mailu, RELAY_A, PASSWORD_A)
    _server(worker.world, tenant_id, mailu, RELAY_B, PASSWORD_B, security=SmtpSecurity.TLS)
    now = worker.world.clock.now()
    worker.world.tenants.pause_server(
        tenant_id, paused.server_id, at=now, reason="operator", resume_at=now + timedelta(hours=1)
    )
    since = mailu.postfix_log.stat().st_size
    jobs = _send(worker, 12)

    _drive(worker, jobs, within=60)

    assert _statuses(worker, jobs) == {MessageStatus.RELAYED: 12}
    assert Counter(user for _, user in _accepted(mailu, since, 12)) == {RELAY_B: 12}


def test_hard_bounces_over_the_threshold_pause_the_server_and_its_mate_takes_the_rest(
    mailu: MailuStandIn, worker: Worker
) -> None:
    tenant_id = worker.seeded.tenant.tenant_id
    bouncing = [f"nobody{i}@recipient.test" for i in range(10)]  # each once: a bounce suppresses its address
    mailu.set_recipient_rules({address: f"550 5.1.1 <{address}>: Recipient address rejected" for address in bouncing})
    try:
        first = _server(
            worker.world,
            tenant_id,
            mailu,
            RELAY_A,
            PASSWORD_A,
            shaping={"bounce_min_sends": 10, "bounce_window": 20, "bounce_threshold": 0.5},
        )
        bounced = [job for address in bouncing for job in _send(worker, 1, address)]
        _drive(worker, bounced, within=60)
        assert _statuses(worker, bounced) == {MessageStatus.BOUNCED: 10}
        _server(worker.world, tenant_id, mailu, RELAY_B, PASSWORD_B, security=SmtpSecurity.TLS)
        stored = next(s for s in worker.world.tenants.list_servers(tenant_id) if s.server_id == first.server_id)
        assert stored.paused, "ten hard bounces in ten sends pause the server"
        assert [e.type for e in stored.events] == ["server.paused"]

        since = mailu.postfix_log.stat().st_size
        jobs = _send(worker, 6)
        _drive(worker, jobs, within=60)

        assert _statuses(worker, jobs) == {MessageStatus.RELAYED: 6}
        assert Counter(user for _, user in _accepted(mailu, since, 6)) == {RELAY_B: 6}
    finally:
        mailu.clear_recipient_rules(bouncing)
