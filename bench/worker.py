"""`make bench`: the send worker's CPU per message, the scale model of the prod settings, its memory.

1. CPU per message: the real handler (`create_worker`) on the in-memory fakes of tests/fakes (stores,
   queue, scheduler, secrets, token buckets) relaying through the real SmtplibRelay to a sink in its own
   process (its CPU is not counted), batches of 10 single-recipient 3 KB messages, shaping on: a warm
   server (past its warm-up: no daily cap) whose rate and bursts are raised so its buckets never refuse.
   Beside it: bare smtplib on one session (the baseline) and the worker on FakeSmtpRelay (its own logic).
2. The scale model: one invocation = one prod-size batch across 10 tenants (each its own server on the
   sink), every fake AWS call delayed by a stated latency and every message's final reply by the sink
   delayed by a stated time; messages/s of one warm invocation times the prod queues' max concurrency,
   beside "today" (relay_concurrency 1, a sink that does not offer PIPELINING) measured the same way.
3. Memory: peak RSS of a worker process (a child of this one) running warm prod-size batches on its
   relay threads, and the Lambda memory chosen from it and from the invocation's CPU-bound share.
"""

from __future__ import annotations

import json
import resource
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.sink import PASSWORD, USER, Sink

if TYPE_CHECKING:
    from petrel.ports import MessageKey
    from tests.fakes import FakeJobQueue, FakeWorld
    from tests.fakes.messages import FakeMessageStore

REPO = Path(__file__).resolve().parents[1]
SIZE = 3 * 1024
CPU_MESSAGES = 3000
BATCH = 10
TARGET_CPU_MS = 2.0
TARGET_RATE = 1000.0
AWS_LATENCY_MS = 5.0  # each call to a fake DynamoDB/SQS/Scheduler/Secrets/S3 port
SINK_DELAY_MS = 5.0  # the sink's reply to each message's end of DATA (a round trip plus its queue write)
TENANTS = 10
WARM_BATCHES = 3
MEASURED_BATCHES = 20
LAMBDA_FULL_VCPU_MB = 1769
MEMORY_OPTIONS = (512, 768, 1024, 1280, 1536, 1769, 2048)
# The fakes' ports that stand for AWS services (what the latency wrapper delays).
AWS_PORTS = ("tenants", "messages", "blobs", "queue", "secrets", "suppressions", "scheduler", "buckets", "mailboxes")


# --- pure helpers (tests/unit/test_bench_worker.py) -------------------------------------------------


def modelled_rate(per_invocation: float, concurrency: int) -> float:
    """Messages per second of the fleet: one invocation's rate times the invocations running at once."""
    return per_invocation * concurrency


def concurrency_needed(target: float, per_invocation: float) -> int:
    """The smallest number of concurrent invocations whose modelled rate reaches `target`."""
    if per_invocation <= 0:
        raise ValueError("an invocation that relays nothing cannot reach any rate")
    needed = int(target // per_invocation)
    return needed if needed * per_invocation >= target else needed + 1


def lambda_wall_ms(io_ms: float, cpu_ms: float, memory_mb: int) -> float:
    """An invocation's wall time at `memory_mb`: its I/O waits unchanged, its CPU work stretched by
    Lambda's CPU share (memory / 1,769 MB of one vCPU; more than one vCPU does not help one thread's
    work much, so the share is capped at 1). Crude on purpose: CPU and I/O are taken as not overlapping."""
    share = min(1.0, memory_mb / LAMBDA_FULL_VCPU_MB)
    return io_ms + cpu_ms / share


def choose_memory(
    peak_rss_mb: float, io_ms: float, cpu_ms: float, *, options: tuple[int, ...] = MEMORY_OPTIONS, slack: float = 0.10
) -> int:
    """The smallest memory size that holds twice the measured peak RSS and whose invocation is at most
    `slack` slower than at a whole vCPU: memory buys CPU on Lambda, and past that point buys nothing."""
    best = lambda_wall_ms(io_ms, cpu_ms, LAMBDA_FULL_VCPU_MB)
    for memory in sorted(options):
        if memory >= 2 * peak_rss_mb and lambda_wall_ms(io_ms, cpu_ms, memory) <= best * (1 + slack):
            return memory
    return max(options)


# --- the worker on the fakes ----------------------------------------------------------------------------


class WallClock:
    """The real time (the token buckets refill, leases expire as on AWS)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Latency:
    """A fake port whose every call first sleeps `seconds` (what a call to AWS costs in wall time) and
    is counted by the thread that made it: the invocation's own (one after the other: dispatch, health)
    or a relay thread (overlapped with the other jobs of the batch)."""

    inner: Any
    seconds: float
    calls: Counter[str]
    name: str

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self.inner, attribute)
        if attribute.startswith("_") or not callable(target):
            return target

        def delayed(*args: Any, **kwargs: Any) -> Any:
            on = "relay" if threading.current_thread().name.startswith("relay") else "invocation"
            self.calls[f"{on}:{self.name}.{attribute}"] += 1
            if self.seconds:
                time.sleep(self.seconds)
            return target(*args, **kwargs)

        return delayed


@dataclass
class Fleet:
    """A FakeWorld with `tenants` tenants, each its own warm server on the sink, and the handler."""

    world: FakeWorld
    handler: Any
    tenant_ids: list[str]
    store: FakeMessageStore  # the message store without the latency (what the submit path left)
    queue: FakeJobQueue  # the queue without the latency (what was handed back)
    aws_calls: Counter[str] = field(default_factory=Counter)
    body: bytes = b""
    sent: list[MessageKey] = field(default_factory=list)  # every message put in a batch, to check after

    def batch(self, count: int, start: int) -> dict[str, Any]:
        """`count` new single-recipient emails, round-robin over the tenants, as one SQS event."""
        from petrel.models.jobs import SendJob
        from petrel.ports import MessageKey
        from tests.fakes import records
        from tests.unit.test_send_worker_handler import sqs_record

        out = []
        for i in range(start, start + count):
            tenant_id = self.tenant_ids[i % len(self.tenant_ids)]
            # Created now: a message older than its retention would end `failed`/`expired` unsent.
            email, [message] = records.email(tenant_id, [f"r{i}@example.org"], body=self.body, at=datetime.now(UTC))
            self.store.create_email(email, [message], 0)
            self.sent.append(MessageKey.of(message))
            job = SendJob(tenant_id=tenant_id, email_id=message.email_id, message_id=message.message_id)
            out.append(sqs_record(job.model_dump_json(), message_id=f"m{i}"))
        return {"Records": out}


def _message_body() -> bytes:
    head = "From: sender@example.com\r\nTo: r@example.org\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return head.encode() + line * ((SIZE - len(head)) // len(line))


def build_fleet(
    sink: Sink | None, *, tenants: int, relay_concurrency: int, latency_ms: float = 0.0, real_relay: bool = True
) -> Fleet:
    """The real handler on the fakes; `sink` None: FakeSmtpRelay (the worker's own logic only)."""
    import io

    from aws_lambda_powertools import Logger

    from petrel.adapters.smtp import SmtplibRelay
    from petrel.entrypoints.send_worker import create_worker
    from petrel.models.records import ServerShaping
    from petrel.observability import Telemetry, telemetry
    from petrel.services.dispatch import DispatchDeps
    from petrel.services.server_health import HealthDeps
    from tests.fakes import FakeWorld, records
    from tests.unit.test_send_worker_handler import WorkerParts, _settings

    world = FakeWorld()
    world.clock = WallClock()  # type: ignore[assignment]
    if sink is not None and real_relay:
        world.relay = SmtplibRelay(timeout=30, transaction_seconds=45)  # type: ignore[assignment]
    shaping = ServerShaping(
        rate_per_second=100_000, burst=100_000, provider_rate_per_second=100_000, provider_burst=100_000
    )
    created = datetime.now(UTC) - timedelta(days=300)  # past its 45-day warm-up: no daily cap
    tenant_ids = []
    for n in range(tenants):
        tenant = records.tenant(f"Bench {n}")
        world.tenants.put_tenant(tenant)
        world.tenants.put_domain(records.domain(tenant.tenant_id, "example.com"))
        fields: dict[str, Any] = {"shaping": shaping, "created_at": created}
        if sink is not None:
            fields |= {"host": "127.0.0.1", "port": sink.port, "username": USER, "ca_bundle": sink.ca_pem}
        server = records.server(tenant.tenant_id, **fields)
        world.tenants.put_server(server)
        world.secrets.put_secret(server.secret_name, PASSWORD)
        tenant_ids.append(tenant.tenant_id)
    calls: Counter[str] = Counter()
    store, queue = world.messages, world.queue
    for name in AWS_PORTS:
        setattr(world, name, Latency(getattr(world, name), latency_ms / 1000, calls, name))
    deliver = world.deliver_deps(cache_seconds=300)
    made = telemetry("send-worker", metrics_file=Path(tempfile.mkdtemp(prefix="petrel-bench-")) / "emf.jsonl")
    logger = Logger(service=f"{made.logger.service}-bench-{id(world)}", stream=io.StringIO())
    parts = WorkerParts(
        settings=_settings(log_each_attempt=False, relay_concurrency=relay_concurrency),
        telemetry=Telemetry(function="send-worker", logger=logger, metrics=made.metrics),
        deliver=deliver,
        release=world.release_deps(),
        queue=world.queue,
        # As the container wires them: dispatch and health read the same cached configuration as delivery.
        dispatch=DispatchDeps(
            tenants=deliver.tenants,
            mailboxes=deliver.mailboxes,
            buckets=world.buckets,
            provider_of=lambda domain: domain,
            clock=world.clock,
        ),
        health=HealthDeps(tenants=deliver.tenants, buckets=world.buckets),
    )
    return Fleet(world, create_worker(parts), tenant_ids, store, queue, calls, _message_body())


def run_batches(fleet: Fleet, batches: int, start: int, size: int = BATCH) -> tuple[float, float]:
    """Run `batches` invocations of `size` messages; (wall, CPU) seconds of the handler calls alone,
    every message checked relayed (none handed back, none failed)."""
    from local.lambda_runtime import LocalContext

    events = [fleet.batch(size, start + b * size) for b in range(batches)]
    wall = cpu = 0.0
    for event in events:
        w, c = time.perf_counter(), time.process_time()
        result = fleet.handler(event, LocalContext("petrel-prod-send-worker", timeout_seconds=120))
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        assert result == {"batchItemFailures": []}, result
    handed_back = sum(len(jobs) for jobs in fleet.queue.sent.values())
    assert handed_back == 0, f"{handed_back} jobs handed back: the buckets refused"
    check_relayed(fleet)
    return wall, cpu


def check_relayed(fleet: Fleet) -> None:
    """Every message of every batch so far ended `relayed` (a bench that relays nothing measures nothing)."""
    from petrel.models.records import MessageStatus

    statuses: Counter[str] = Counter()
    for key in fleet.sent:
        message = fleet.store.get_message(key)
        statuses[message.status.value if message else "missing"] += 1
    assert set(statuses) == {MessageStatus.RELAYED.value}, dict(statuses)


def close_relay(fleet: Fleet) -> None:
    relay = fleet.world.relay
    if hasattr(relay, "close"):
        relay.close()


def bare_smtplib_cpu(sink: Sink, count: int) -> float:
    """CPU seconds per message of bare smtplib.sendmail on one STARTTLS+AUTH session."""
    data = _message_body()
    cpu = time.process_time()
    with smtplib.SMTP("127.0.0.1", sink.port) as conn:
        conn.starttls(context=sink.client_context())
        conn.login(USER, PASSWORD)
        for i in range(count):
            conn.sendmail("bounces@example.com", [f"r{i}@example.org"], data)
    return (time.process_time() - cpu) / count


def profile_top(fleet: Fleet, batches: int, start: int, lines: int = 15) -> str:
    """cProfile of `batches` invocations: the functions with the most own time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run_batches(fleet, batches, start)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# --- the three parts ------------------------------------------------------------------------------------


@dataclass
class CpuFigures:
    worker_ms: float
    fake_relay_ms: float
    bare_ms: float
    profile: str


def cpu_part() -> CpuFigures:
    with Sink(pipelining=True) as sink:
        bare_smtplib_cpu(sink, 100)  # warm up
        bare = bare_smtplib_cpu(sink, CPU_MESSAGES)
        fleet = build_fleet(sink, tenants=1, relay_concurrency=8)
        run_batches(fleet, 5, 0)  # sessions open, caches warm
        _, cpu = run_batches(fleet, CPU_MESSAGES // BATCH, 1000)
        profile = ""
        if cpu / CPU_MESSAGES * 1000 > TARGET_CPU_MS:
            profile = profile_top(fleet, 50, 10_000)
        close_relay(fleet)
    fake = build_fleet(None, tenants=1, relay_concurrency=8)
    run_batches(fake, 5, 0)
    _, fake_cpu = run_batches(fake, CPU_MESSAGES // BATCH, 1000)
    return CpuFigures(cpu / CPU_MESSAGES * 1000, fake_cpu / CPU_MESSAGES * 1000, bare * 1000, profile)


@dataclass
class Invocation:
    """One worker invocation against the delayed sink, measured: the first (cold: sessions to open,
    configuration to read) and the mean of MEASURED_BATCHES warm ones."""

    cold_rate: float
    warm_rate: float
    wall_ms: float
    cpu_ms: float
    calls: dict[str, float]  # AWS calls per warm invocation, "<thread>:<port>.<method>"

    def calls_on(self, thread: str) -> float:
        return sum(n for key, n in self.calls.items() if key.startswith(thread + ":"))

    def serial_detail(self) -> str:
        """The invocation thread's calls (each one's latency paid in full, one after the other)."""
        mine = sorted(((n, key.split(":", 1)[1]) for key, n in self.calls.items() if key.startswith("invocation:")))
        return ", ".join(f"{name} {n:g}" for n, name in reversed(mine))


@dataclass
class ScaleFigures:
    prod: ProdSettings
    new: Invocation
    today: Invocation


def measure_invocations(*, pipelining: bool, relay_concurrency: int, batch_size: int) -> Invocation:
    """One worker invocation of `batch_size` messages across TENANTS tenants, cold then warm."""
    with Sink(data_delay_ms=SINK_DELAY_MS, pipelining=pipelining) as sink:
        fleet = build_fleet(sink, tenants=TENANTS, relay_concurrency=relay_concurrency, latency_ms=AWS_LATENCY_MS)
        cold_wall, _ = run_batches(fleet, 1, 0, batch_size)
        run_batches(fleet, WARM_BATCHES - 1, batch_size, batch_size)
        fleet.aws_calls.clear()
        wall, cpu = run_batches(fleet, MEASURED_BATCHES, 10_000, batch_size)
        calls = {key: n / MEASURED_BATCHES for key, n in fleet.aws_calls.items()}
        close_relay(fleet)
    return Invocation(
        cold_rate=batch_size / cold_wall,
        warm_rate=MEASURED_BATCHES * batch_size / wall,
        wall_ms=wall / MEASURED_BATCHES * 1000,
        cpu_ms=cpu / MEASURED_BATCHES * 1000,
        calls=calls,
    )


SEND_QUEUES = ("send-transactional", "send-bulk")


@dataclass
class ProdSettings:
    """What the model reads from cdk.json (through infra.config, as the CDK app does)."""

    batch_size: int
    max_concurrency: dict[str, int]  # environments.prod.max_concurrency, by send queue
    relay_concurrency: int
    worker_memory_mb: dict[str, int]  # by environment

    @property
    def concurrency(self) -> int:
        """The worker invocations that may run at once: the send queues' maximum concurrency summed."""
        return sum(self.max_concurrency.values())


def prod_settings() -> ProdSettings:
    from infra.config import EnvironmentConfig, parse_environments

    raw = json.loads((REPO / "cdk.json").read_text())["context"]["environments"]
    envs: dict[str, EnvironmentConfig] = parse_environments(raw)
    prod = envs["prod"]
    return ProdSettings(
        batch_size=prod.batch_size,
        max_concurrency={q: prod.max_concurrency.get(q, 0) for q in SEND_QUEUES},
        relay_concurrency=prod.worker_relay_concurrency,
        worker_memory_mb={name: env.worker_memory_mb for name, env in envs.items()},
    )


def scale_part() -> ScaleFigures:
    prod = prod_settings()
    new = measure_invocations(pipelining=True, relay_concurrency=prod.relay_concurrency, batch_size=prod.batch_size)
    today = measure_invocations(pipelining=False, relay_concurrency=1, batch_size=prod.batch_size)
    return ScaleFigures(prod, new, today)


def memory_child(batch_size: int, relay_concurrency: int) -> None:
    """The memory part's own process (what it loads is the worker's: no CDK, no moto): warm prod-size
    batches on the relay threads, then its peak RSS and that before the first batch."""
    tracemalloc.start()
    with Sink(pipelining=True) as sink:
        fleet = build_fleet(sink, tenants=TENANTS, relay_concurrency=relay_concurrency)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run_batches(fleet, 60, 0, batch_size)
        close_relay(fleet)
    _, peak = tracemalloc.get_traced_memory()
    figures = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loaded_rss_mb": before / 1024,
        "traced_peak_mb": peak / 2**20,
    }
    print(json.dumps(figures))


def memory_part(batch_size: int, relay_concurrency: int) -> dict[str, float]:
    """memory_child's figures, run in a process of its own (this one's RSS holds every other part)."""
    command = [sys.executable, "-m", "bench.worker", "memory", str(batch_size), str(relay_concurrency)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def print_cpu(cpu: CpuFigures) -> bool:
    ok = cpu.worker_ms <= TARGET_CPU_MS
    print(
        f"worker CPU    {cpu.worker_ms:5.2f} ms/msg (real handler on the fakes, SmtplibRelay to a sink in its own"
        f" process, {CPU_MESSAGES} x 3 KB, batches of {BATCH}, shaping on: a warm server whose buckets do not refuse)"
    )
    print(
        f"              bare smtplib {cpu.bare_ms:.2f} ms/msg (one session) | the worker's own logic"
        f" (FakeSmtpRelay) {cpu.fake_relay_ms:.2f} ms/msg | {'PASS' if ok else 'FAIL'} (<= {TARGET_CPU_MS} ms)"
    )
    if cpu.profile:
        print(cpu.profile)
    return ok


def print_scale(scale: ScaleFigures) -> bool:
    new, today = scale.new, scale.today
    rate = modelled_rate(new.warm_rate, scale.prod.concurrency)
    ok = rate >= TARGET_RATE
    print(
        f"scale model   inputs: prod batch_size {scale.prod.batch_size}, max_concurrency (send queues summed)"
        f" {scale.prod.concurrency} {scale.prod.max_concurrency}, relay_concurrency {scale.prod.relay_concurrency},"
        f" {TENANTS} tenants each its own server, {AWS_LATENCY_MS:g} ms per AWS call,"
        f" sink {SINK_DELAY_MS:g} ms per message's 250"
    )
    print(
        f"              one invocation {new.warm_rate:4.0f} msg/s warm ({new.wall_ms:.0f} ms wall, {new.cpu_ms:.0f} ms"
        f" CPU), {new.cold_rate:.0f} msg/s cold | x {scale.prod.concurrency} = {rate:,.0f} msg/s"
        f" | {'PASS' if ok else 'FAIL'} (>= {TARGET_RATE:,.0f}; {concurrency_needed(TARGET_RATE, new.warm_rate)}"
        " concurrent invocations reach it)"
    )
    print(
        f"              today (relay_concurrency 1, no PIPELINING, same shaping and latencies) {today.warm_rate:.0f}"
        f" msg/s warm x {scale.prod.concurrency} = {modelled_rate(today.warm_rate, scale.prod.concurrency):,.0f} msg/s"
    )
    serial = (
        f"{new.calls_on('invocation'):g} one after the other on the invocation's thread ({new.serial_detail()})"
        if new.calls_on("invocation")
        else "none on the invocation's thread"
    )
    print(f"              AWS calls per warm invocation: {serial}, {new.calls_on('relay'):g} on the relay threads")
    serial_ms = new.calls_on("invocation") * AWS_LATENCY_MS
    if serial_ms:
        print(
            f"              the serial calls are {serial_ms:.0f} ms of the invocation's {new.wall_ms:.0f} ms: taken at"
            f" once (one round per stage) the invocation would be about"
            f" {new.wall_ms - serial_ms + 4 * AWS_LATENCY_MS:.0f} ms"
        )
    if not ok:
        extra = concurrency_needed(TARGET_RATE, new.warm_rate) - scale.prod.concurrency
        queues = scale.prod.max_concurrency
        print(
            f"              cdk.json environments.prod.max_concurrency summed >= {scale.prod.concurrency + extra}"
            f" would meet it, e.g. send-transactional {queues['send-transactional'] + extra}"
            f" (now {queues['send-transactional']}), send-bulk {queues['send-bulk']}"
        )
    return ok


def print_memory(scale: ScaleFigures) -> None:
    configured = scale.prod.worker_memory_mb
    mem = memory_part(scale.prod.batch_size, scale.prod.relay_concurrency)
    cpu_ms = scale.new.cpu_ms
    io_ms = max(0.0, scale.new.wall_ms - cpu_ms)
    chosen = choose_memory(mem["peak_rss_mb"], io_ms, cpu_ms)
    walls = ", ".join(f"{mb} MB {lambda_wall_ms(io_ms, cpu_ms, mb):.0f} ms" for mb in (512, 1024, 1769))
    print(
        f"memory        peak RSS {mem['peak_rss_mb']:.0f} MB (before the first batch {mem['loaded_rss_mb']:.0f} MB,"
        f" Python allocations peak {mem['traced_peak_mb']:.1f} MB) over 60 warm batches on"
        f" {scale.prod.relay_concurrency} relay threads"
    )
    print(
        f"              an invocation: {cpu_ms:.0f} ms CPU-bound, {io_ms:.0f} ms I/O-bound at 1 vCPU;"
        f" modelled wall {walls} | choose {chosen} MB"
        f" | configured worker_memory_mb {', '.join(f'{k} {v}' for k, v in configured.items())}"
    )


def main() -> int:
    started = time.perf_counter()
    cpu_ok = print_cpu(cpu_part())
    scale = scale_part()
    scale_ok = print_scale(scale)
    print_memory(scale)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0 if cpu_ok and scale_ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        memory_child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
