"""`make bench` (first half): Petrel's relay against bare smtplib, and the worker's CPU per message.

Figures are ratios to baselines measured in this same run, so they hold across machines:
- relay: 1,000 messages of 5 KB on one reused STARTTLS+AUTH session; Petrel's SmtplibRelay vs
  bare `smtplib.sendmail` to the same local server. Target: >= 0.8x bare smtplib's throughput.
- relay throughput: 1,000 messages of 5 KB to a sink that delays every reply by a stated round trip
  (5 ms, a network's) and offers PIPELINING, as Postfix does: bare one-by-one `smtplib.sendmail` on
  one session (the baseline); Petrel one message at a time (without PIPELINING, as before issue 11,
  and with it); Petrel with PIPELINING and ServerShaping's default concurrency of sessions, one thread
  each (as the worker relays a batch). Target: >= 2.5x the baseline. Messages/s and CPU per message.
- CPU per message of the whole worker path (lease, body, relay, record) under moto vs bare
  smtplib's CPU per message, without DKIM and with it (the sending domain's RSA-2048 key: its
  secret read through the worker's cache, the key loaded once, each message signed at relay time).
Cold imports and first invocations of every function (with `.pyc`, as deployed): bench.coldstart.
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.moto_session import REGION, moto_session
from bench.sink import PASSWORD, USER, Sink

if TYPE_CHECKING:
    from petrel.mail.smtp_reply import SmtpReply
    from petrel.models.records import SmtpServer
    from petrel.ports import Envelope
    from petrel.services.deliver import DeliverDeps
    from petrel.services.tenants import AdminDeps

REPO = Path(__file__).resolve().parents[1]
MESSAGES = 1000
SIZE = 5 * 1024
ROUNDS = 3
DELAY_MS = 5.0  # the round trip injected per reply in the throughput figures
THROUGHPUT_TARGET = 2.5


def _message(i: int) -> bytes:
    head = f"From: a@petrel.test\r\nTo: b@petrel.test\r\nSubject: bench {i}\r\nMessage-ID: <{i}@petrel.test>\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * ((SIZE - len(head)) // len(line))
    return head.encode() + body


def bare_smtplib(sink: Sink, messages: list[bytes]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    with smtplib.SMTP("127.0.0.1", sink.port) as conn:
        conn.starttls(context=sink.client_context())
        conn.login(USER, PASSWORD)
        for data in messages:
            conn.sendmail("bounces@petrel.test", ["b@petrel.test"], data)
    return time.perf_counter() - wall, time.process_time() - cpu


def petrel_relay(sink: Sink, messages: list[bytes], *, threads: int = 1) -> tuple[float, float]:
    """Wall and CPU seconds for Petrel's relay to send `messages`, from `threads` threads sharing one
    SmtplibRelay (its pool opens up to `threads` sessions: the server's concurrency)."""
    from petrel.adapters.smtp import SmtplibRelay
    from petrel.models.records import ServerShaping, SmtpServer
    from petrel.ports import Envelope

    server = SmtpServer(
        tenant_id="tn_bench",
        server_id="srv_bench",
        host="127.0.0.1",
        port=sink.port,
        username=USER,
        secret_name="unused",
        ca_bundle=sink.ca_pem,
        created_at=datetime.now(UTC),
        shaping=ServerShaping(concurrency=threads),
    )
    relay = SmtplibRelay(timeout=10, transaction_seconds=60)

    def send(i: int) -> None:
        envelope = Envelope(f"bounces+m{i}@petrel.test", "b@petrel.test", f"m{i}")
        reply = relay.relay(server, PASSWORD, envelope, messages[i])
        assert reply.code == 250, reply

    wall, cpu = time.perf_counter(), time.process_time()
    if threads == 1:
        for i in range(len(messages)):
            send(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(send, range(len(messages))))
    relay.close()
    return time.perf_counter() - wall, time.process_time() - cpu


def relay_throughput(messages: list[bytes]) -> bool:
    """The throughput figures against sinks with DELAY_MS per reply; True if the target is met."""
    from petrel.models.records import ServerShaping

    concurrency = ServerShaping().concurrency
    with Sink(delay_ms=DELAY_MS, pipelining=True) as offering, Sink(delay_ms=DELAY_MS) as plain:
        runs = {
            "bare smtplib.sendmail, one session": bare_smtplib(offering, messages),
            "petrel, one at a time, no PIPELINING": petrel_relay(plain, messages),
            "petrel, one at a time, PIPELINING": petrel_relay(offering, messages),
            f"petrel, PIPELINING, {concurrency} sessions": petrel_relay(offering, messages, threads=concurrency),
        }
        print(f"relay throughput: {len(messages)} messages of {SIZE // 1024} KB, sink: {offering.describe()}")
    base_wall = runs["bare smtplib.sendmail, one session"][0]
    for name, (wall, cpu) in runs.items():
        rate = len(messages) / wall
        print(f"  {name:<40} {rate:7.0f} msg/s  {base_wall / wall:5.2f}x  {cpu / len(messages) * 1000:5.2f} ms CPU/msg")
    ratio = base_wall / runs[f"petrel, PIPELINING, {concurrency} sessions"][0]
    ok = ratio >= THROUGHPUT_TARGET
    print(f"  pipelining + concurrency {ratio:.2f}x bare smtplib (>= {THROUGHPUT_TARGET}x): {'PASS' if ok else 'FAIL'}")
    return ok


def signing_step_cpu(count: int = 1000) -> float:
    """CPU seconds per message of the worker's signing step alone (MessageSigner: the key read through
    a secret store and kept loaded, one RSA-2048 signature of a 5 KB message), without moto's noise."""
    from petrel.mail.dkim import DkimKey
    from petrel.models.records import DomainKey, DomainStatus, SendingDomain
    from petrel.services.signing import MessageSigner

    pem = _rsa_pem()

    class Secrets:  # the worker's cached store, as a hit in its cache costs
        def get_secret(self, name: str) -> str:
            return pem

        def put_secret(self, name: str, value: str) -> None:
            raise NotImplementedError

        def create_secret(self, name: str, value: str) -> None:
            raise NotImplementedError

        def delete_secret(self, name: str) -> None:
            raise NotImplementedError

        def forget_secret(self, name: str) -> None:
            raise AssertionError("the key is usable")

    class Clock:
        def now(self) -> datetime:
            return datetime.now(UTC)

    now = datetime.now(UTC)
    public = DkimKey.load(pem).public_record().rsplit("p=", 1)[1]
    key = DomainKey(selector="bench", secret_name="bench", public_key=public, created_at=now)
    domain = SendingDomain(
        tenant_id="tn_bench",
        domain="petrel.test",
        return_path_domain="petrel.test",
        created_at=now,
        status=DomainStatus.VERIFIED,
        keys=(key,),
    )
    signer = MessageSigner(Secrets(), Clock())
    message = _message(0)
    signer.sign(message, domain)
    cpu = time.process_time()
    for _ in range(count):
        signer.sign(message, domain)
    return (time.process_time() - cpu) / count


def _rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _set_domain(admin: AdminDeps, tenant_id: str, domain: str, *, signed: bool) -> None:
    """Mark the seeded domain verified, with one active RSA-2048 key (its PEM in Secrets Manager) when
    `signed`, else with none (Petrel then relays it as stored)."""
    from petrel.models.records import DomainKey, DomainStatus

    keys: tuple[DomainKey, ...] = ()
    if signed:
        pem = _rsa_pem()
        name = f"{admin.secrets_prefix}{tenant_id}/dkim/{domain}/bench"
        admin.secrets.put_secret(name, pem)
        keys = (DomainKey(selector="bench", secret_name=name, created_at=datetime.now(UTC)),)
    sending = admin.tenants.get_domain(tenant_id, domain)
    assert sending is not None
    admin.tenants.put_domain(sending.model_copy(update={"keys": keys, "status": DomainStatus.VERIFIED}))


def worker_path_cpu(sink: Sink, count: int = 300, *, signed: bool = False) -> float:
    """CPU seconds per message through the send worker handler, queue to record, under moto; with
    `signed`, the sending domain has a DKIM key and every relayed message must carry its signature."""
    from moto import mock_aws

    from petrel import resources as r

    session = moto_session()
    with mock_aws():
        from local import handlers
        from local.lambda_runtime import QueuePump
        from local.provision import provision
        from local.seed import RelayAccount, seed_tenant
        from petrel.api.deps import ApiServices
        from petrel.container.admin import AdminContainer
        from petrel.container.api import ApiContainer
        from petrel.container.base import AwsClients
        from petrel.models.api import SendEmailRequest
        from petrel.services.submit import submit_email
        from petrel.settings import ApiSettings

        aws = AwsClients(session)  # provisioning's and the operator's; each function gets its own below
        res = provision(
            aws.dynamodb(),
            aws.sqs(),
            aws.s3(),
            prefix="bench",
            visibility_timeout=30,
            max_receive_count=5,
            scheduler=aws.scheduler(),
            iam=aws.client("iam"),
        )
        env = res.environment()  # what infra gives each function
        operator = AdminContainer(res.admin_settings(region=REGION), clients=aws)
        relay = RelayAccount(host="127.0.0.1", port=sink.port, username=USER, password=PASSWORD, ca_bundle=sink.ca_pem)
        seeded = seed_tenant(operator.admin, "bench", domain="petrel.test", relay=relay)
        tenant = operator.tenants.get_tenant(seeded.tenant_id)
        assert tenant is not None
        _set_domain(operator.admin, seeded.tenant_id, "petrel.test", signed=signed)
        body = "x" * (SIZE - 600)
        api = ApiContainer(ApiSettings.model_validate(env), clients=AwsClients(session))
        submitting = ApiServices(api).submit  # what the API's routes call
        for i in range(count):
            submit_email(
                submitting,
                tenant,
                SendEmailRequest.model_validate(
                    {"from": "a@petrel.test", "to": f"r{i}@example.com", "subject": "b", "text": body}
                ),
            )
        worker = handlers.worker(env, AwsClients(session))
        relayed = _count_signed(worker.container.deliver)
        url = res.queue_urls[r.SEND_TRANSACTIONAL.name]
        pump = QueuePump(
            aws.sqs(), url, res.queue_arns[r.SEND_TRANSACTIONAL.name], worker.handler, function_name="bench"
        )
        handled, cpu = 0, time.process_time()
        while handled < count:
            got = pump.poll_once()
            if not got:
                break
            handled += got
        spent = time.process_time() - cpu
        assert handled == count, f"only {handled} of {count} messages were delivered"
        expected = count if signed else 0
        assert relayed["signed"] == expected, f"{relayed['signed']} of {count} relayed messages were signed"
        return spent / count


def _count_signed(deps: DeliverDeps) -> dict[str, int]:
    """Count the relayed messages that start with a DKIM-Signature (wraps the worker's relay)."""
    counts = {"signed": 0}
    relay = deps.relay

    class Counting:
        def close(self) -> None:
            relay.close()

        def close_idle(self) -> None:
            relay.close_idle()

        def relay(
            self, server: SmtpServer, password: str, envelope: Envelope, data: bytes, *, deadline: float | None = None
        ) -> SmtpReply:
            counts["signed"] += data.startswith(b"DKIM-Signature:")
            return relay.relay(server, password, envelope, data, deadline=deadline)

    deps.relay = Counting()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput-only", action="store_true", help="only the relay throughput figures")
    args = parser.parse_args(argv)
    messages = [_message(i) for i in range(MESSAGES)]
    throughput_ok = relay_throughput(messages)
    if args.throughput_only:
        return 0 if throughput_ok else 1
    with Sink() as sink:
        bare_smtplib(sink, messages[:50])  # warm up both paths
        petrel_relay(sink, messages[:50])
        bare_runs, ours_runs = [], []
        for _ in range(ROUNDS):  # interleaved, so drift in the sink hits both alike
            bare_runs.append(bare_smtplib(sink, messages))
            ours_runs.append(petrel_relay(sink, messages))
        per_message_cpu = worker_path_cpu(sink)
        signed_cpu = worker_path_cpu(sink, signed=True)
    signing_cpu = statistics.median(signing_step_cpu() for _ in range(ROUNDS))
    bare_wall = statistics.median(w for w, _ in bare_runs)
    bare_cpu = statistics.median(c for _, c in bare_runs)
    ours_wall = statistics.median(w for w, _ in ours_runs)
    bare_rate, ours_rate = MESSAGES / bare_wall, MESSAGES / ours_wall
    bare_cpu_per_message = bare_cpu / MESSAGES
    relay_ratio = ours_rate / bare_rate
    cpu_ratio = per_message_cpu / bare_cpu_per_message
    print(
        f"relay        petrel {ours_rate:6.0f} msg/s | bare smtplib {bare_rate:6.0f} msg/s"
        f" | {relay_ratio:.2f}x (>= 0.80x)"
    )
    print(
        f"worker path  {per_message_cpu * 1000:6.2f} ms CPU/msg"
        f" | bare smtplib {bare_cpu_per_message * 1000:.2f} ms | {cpu_ratio:.1f}x"
    )
    print(
        f"  with DKIM  {signed_cpu * 1000:6.2f} ms CPU/msg | without {per_message_cpu * 1000:.2f} ms"
        f" | the signing step alone {signing_cpu * 1000:.2f} ms (RSA-2048, 5 KB; the rest of the gap is moto's noise)"
    )
    ok = ours_rate / bare_rate >= 0.8 and throughput_ok
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
