"""Traffic shaping in the send worker (petrel.services.dispatch, petrel.services.server_health), through
its handler on the fakes.

Invariants:
- a job the buckets do not admit is handed back with a delay and its message is untouched (not leased,
  no attempt, no event): waiting for a token is not an attempt;
- no server takes more than its bucket allows: what is admitted over a stretch of time is at most
  rate x time + burst;
- a paused server takes nothing while a pool mate is usable; its probation ends it once, with a
  `server.resumed` event;
- a bounce rate over the threshold, or connection failures that keep coming, pause the server once
  (`server.paused`), and the alarm's metric counts it;
- a 4.7.x reply halves the provider's bucket through that server; a 421 the server's;
- a worker that crashes after handing jobs back, twice, still sends each message once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from petrel.mail.smtp_reply import SmtpReply, Stage
from petrel.models.jobs import SendJob
from petrel.models.records import MessageStatus, ServerShaping, SmtpServer
from petrel.ports import MessageKey
from petrel.services import shaping
from tests.fakes import FakeWorld, records
from tests.fakes.smtp import reply
from tests.unit.test_send_worker_handler import Worker, make_worker, sqs_record


def _shaped(worker: Worker, **fields: object) -> SmtpServer:
    """Give the seeded server these shaping settings (the rest the defaults), without a warm-up cap."""
    server = worker.seeded.server
    changed = server.model_copy(update={"shaping": ServerShaping(**({"warmup": ()} | fields))})  # type: ignore[arg-type]
    worker.world.tenants.put_server(changed)
    return changed


def _jobs(worker: Worker, count: int, domain: str = "example.org") -> list[SendJob]:
    pairs = worker.store(*(f"r{i}@{domain}" for i in range(count)))
    return [job.model_copy(update={"domain": domain}) for _, job in pairs]


def _run(worker: Worker, jobs: list[SendJob]) -> dict[str, object]:
    return worker.run(*(sqs_record(job.model_dump_json(), message_id=job.message_id) for job in jobs))


def _status(worker: Worker, job: SendJob) -> tuple[MessageStatus, int]:
    current = worker.world.messages.get_message(MessageKey.of(job))
    assert current is not None
    return current.status, current.attempt


@pytest.fixture
def worker(world: FakeWorld, tmp_path: Path) -> Worker:
    return make_worker(world, tmp_path)


def test_jobs_over_the_servers_burst_wait_on_their_queue_untouched(worker: Worker) -> None:
    _shaped(worker, rate_per_second=2, burst=3, provider_rate_per_second=100, provider_burst=100)
    jobs = _jobs(worker, 5)

    assert _run(worker, jobs) == {"batchItemFailures": []}

    statuses = [_status(worker, job) for job in jobs]
    assert statuses.count((MessageStatus.RELAYED, 1)) == 3
    assert statuses.count((MessageStatus.QUEUED, 0)) == 2  # never leased: no attempt, no event
    waiting = worker.world.queue.drain("transactional")
    assert [job.message_id for job in waiting] == [j.message_id for j in jobs if _status(worker, j)[1] == 0]
    assert [worker.world.queue.delays[job.message_id] for job in waiting] == [1, 1]  # tokens in 0.5 s and 1 s
    for job in jobs:
        message = worker.world.messages.get_message(MessageKey.of(job))
        assert message is not None
        if message.status is MessageStatus.QUEUED:
            assert [e.type for e in message.events] == ["email.queued"]


def test_what_a_server_takes_never_exceeds_its_rate(worker: Worker) -> None:
    """Batches every 0.25 s for 10 s against a 4/s bucket of burst 2: at most 4 x 10 + 2 relayed."""
    _shaped(worker, rate_per_second=4, burst=2, provider_rate_per_second=100, provider_burst=100)
    jobs = _jobs(worker, 80)
    waiting = list(jobs)
    for _ in range(40):
        _run(worker, waiting)
        waiting = worker.world.queue.drain("transactional")
        worker.world.clock.advance(seconds=0.25)
    relayed = sum(_status(worker, job)[0] is MessageStatus.RELAYED for job in jobs)
    assert 4 * 10 * 0.95 <= relayed <= 4 * 10 + 2
    assert len(worker.world.relay.calls) == relayed


def test_recipients_of_one_provider_share_its_bucket(worker: Worker) -> None:
    """gmail.com and googlemail.com have the same MX: one provider bucket of burst 2 for both."""
    _shaped(worker, rate_per_second=100, burst=100, provider_rate_per_second=1, provider_burst=2)
    worker.world.providers.update({"gmail.com": "google", "googlemail.com": "google"})
    jobs = _jobs(worker, 2, "gmail.com") + _jobs(worker, 2, "googlemail.com") + _jobs(worker, 2, "example.net")

    _run(worker, jobs)

    relayed = [job.domain for job in jobs if _status(worker, job)[0] is MessageStatus.RELAYED]
    assert sorted(relayed) == ["example.net", "example.net", "gmail.com", "gmail.com"]


def _second_server(worker: Worker) -> SmtpServer:
    mate = records.server(worker.seeded.tenant.tenant_id, host="mate.example.com", shaping=ServerShaping(warmup=()))
    worker.world.tenants.put_server(mate)
    worker.world.secrets.put_secret(mate.secret_name, "pw-2")
    return mate


def test_a_paused_server_takes_nothing_while_its_pool_mate_carries_the_traffic(worker: Worker) -> None:
    paused = _shaped(worker)
    mate = _second_server(worker)
    now = worker.world.clock.now()
    worker.world.tenants.pause_server(
        paused.tenant_id, paused.server_id, at=now, reason="test", resume_at=now + timedelta(minutes=30)
    )
    jobs = _jobs(worker, 6)

    _run(worker, jobs)

    assert {c.server.server_id for c in worker.world.relay.calls} == {mate.server_id}
    assert all(_status(worker, job)[0] is MessageStatus.RELAYED for job in jobs)


def test_probation_over_resumes_the_server_once(worker: Worker) -> None:
    server = _shaped(worker)
    now = worker.world.clock.now()
    worker.world.tenants.pause_server(
        server.tenant_id, server.server_id, at=now, reason="test", resume_at=now + timedelta(minutes=30)
    )
    worker.world.clock.advance(minutes=31)

    _run(worker, _jobs(worker, 2))
    _run(worker, _jobs(worker, 2))

    (stored,) = worker.world.tenants.list_servers(server.tenant_id)
    assert not stored.paused
    assert [e.type for e in stored.events] == ["server.paused", "server.resumed"]
    assert len(worker.world.relay.calls) == 4


def test_a_bounce_rate_over_the_threshold_pauses_the_server_once(worker: Worker) -> None:
    server = _shaped(worker, bounce_min_sends=10, bounce_window=20, bounce_threshold=0.2)
    jobs = _jobs(worker, 10)
    for job in jobs[:3]:
        worker.world.relay.script[f"r{jobs.index(job)}@example.org"] = [reply(550, "5.1.1 No such user", Stage.RCPT)]

    _run(worker, jobs)
    _run(worker, _jobs(worker, 1, "example.net"))  # the pool has no other server: the attempt defers

    (stored,) = worker.world.tenants.list_servers(server.tenant_id)
    assert stored.paused and stored.paused_reason is not None and "bounce rate 30.0%" in stored.paused_reason
    assert stored.resume_at == stored.paused_at + timedelta(minutes=server.shaping.probation_minutes)  # type: ignore[operator]
    assert [e.type for e in stored.events] == ["server.paused"]
    assert worker.emitted.count("ServersPaused") == 1
    assert len(worker.world.relay.calls) == 10


def _refuse_connections(worker: Worker, rounds: int) -> None:
    refused = [SmtpReply.network(Stage.CONNECT, "connection refused")]
    for round_ in range(rounds):
        (job,) = _jobs(worker, 1, f"d{round_}.example")
        worker.world.relay.script[f"r0@d{round_}.example"] = list(refused)
        _run(worker, [job])
        assert _status(worker, job)[0] is MessageStatus.DEFERRED


def test_connection_failures_that_keep_coming_pause_the_server(worker: Worker) -> None:
    server = _shaped(worker, failure_threshold=3)
    # Its pool mate takes traffic (weighted so that the failing server is the one picked).
    worker.world.tenants.put_server(server.model_copy(update={"weight": 1000}))
    mate = _second_server(worker)

    _refuse_connections(worker, 3)

    stored = {s.server_id: s for s in worker.world.tenants.list_servers(server.tenant_id)}
    assert stored[server.server_id].paused
    assert "3 consecutive connection failures" in (stored[server.server_id].paused_reason or "")
    assert not stored[mate.server_id].paused


def test_a_pools_last_server_is_not_paused_for_connection_failures(worker: Worker) -> None:
    """Nothing would take its traffic, and its probation would keep it out once it is back."""
    server = _shaped(worker, failure_threshold=3)

    _refuse_connections(worker, 5)

    (stored,) = worker.world.tenants.list_servers(server.tenant_id)
    assert not stored.paused and stored.events == ()


def test_a_policy_deferral_halves_the_providers_bucket_and_a_421_the_servers(worker: Worker) -> None:
    server = _shaped(worker)
    (slow, closing) = _jobs(worker, 1, "slow.example") + _jobs(worker, 1, "busy.example")
    worker.world.relay.script["r0@slow.example"] = [reply(451, "4.7.1 Rate limited, slow down", Stage.RCPT)]
    worker.world.relay.script["r0@busy.example"] = [reply(421, "4.7.0 Too many connections", Stage.MAIL)]

    # One batch each: in one batch, whichever ran first would decide the other's server (a 421 ends the
    # server's use for the rest of its batch).
    _run(worker, [slow])
    _run(worker, [closing])

    at = worker.world.clock.now().timestamp()
    buckets = worker.world.buckets
    assert buckets.factor(shaping.provider_key(server.tenant_id, server.server_id, "slow.example"), now=at) == 0.5
    assert buckets.factor(shaping.provider_key(server.tenant_id, server.server_id, "busy.example"), now=at) == 1.0
    assert buckets.factor(shaping.server_key(server.tenant_id, server.server_id), now=at) == 0.5
    later = at + 10 * shaping.SLOW_DOWN_SECONDS
    assert buckets.factor(shaping.provider_key(server.tenant_id, server.server_id, "slow.example"), now=later) == 1.0


class Died(BaseException):
    """The invocation dying (not an Exception: the handler's own error handling does not catch it)."""


def test_a_worker_dying_after_handing_jobs_back_twice_still_sends_each_message_once(worker: Worker) -> None:
    """The handler dies after its hand-backs, twice: SQS brings the whole batch back each time, and the
    handed-back copies come too; the lease makes every message go out once."""
    _shaped(worker, rate_per_second=1, burst=2, provider_rate_per_second=100, provider_burst=100)
    jobs = _jobs(worker, 4)
    queue = worker.world.queue
    send_jobs = queue.send_jobs

    for _ in range(2):

        def dying_send_jobs(*args: object, **kwargs: object) -> object:
            send_jobs(*args, **kwargs)  # type: ignore[arg-type]
            raise Died

        queue.send_jobs = dying_send_jobs  # type: ignore[method-assign]
        with pytest.raises(Died):
            _run(worker, jobs)
        queue.send_jobs = send_jobs  # type: ignore[method-assign]
        worker.world.clock.advance(seconds=1)
    copies = queue.drain("transactional")
    assert copies  # the dying invocations handed jobs back
    waiting = jobs + copies  # SQS brings the unacknowledged originals back, and the copies come
    for _ in range(10):  # what an invocation acknowledges is gone; what it hands back comes again
        assert _run(worker, waiting) == {"batchItemFailures": []}
        waiting = queue.drain("transactional")
        worker.world.clock.advance(seconds=2)
    assert waiting == []

    assert all(_status(worker, job) == (MessageStatus.RELAYED, 1) for job in jobs)
    assert sorted(c.envelope.recipient for c in worker.world.relay.calls) == [f"r{i}@example.org" for i in range(4)]
