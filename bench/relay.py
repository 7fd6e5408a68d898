"""`make bench` (first half): Petrel's relay against bare smtplib, and the worker's CPU per message.

Figures are ratios to baselines measured in this same run, so they hold across machines:
- relay: 1,000 messages of 5 KB on one reused STARTTLS+AUTH session; Petrel's SmtplibRelay vs
  bare `smtplib.sendmail` to the same local server. Target: >= 0.8x bare smtplib's throughput.
- CPU per message of the whole worker path (lease, body, relay, record) under moto vs bare
  smtplib's CPU per message.
Cold imports and first invocations of every function (with `.pyc`, as deployed): bench.coldstart.
"""

from __future__ import annotations

import smtplib
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.moto_session import REGION, moto_session
from bench.sink import PASSWORD, USER, Sink

REPO = Path(__file__).resolve().parents[1]
MESSAGES = 1000
SIZE = 5 * 1024
ROUNDS = 3


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


def petrel_relay(sink: Sink, messages: list[bytes]) -> tuple[float, float]:
    from petrel.adapters.smtp import SmtplibRelay
    from petrel.models.records import SmtpServer
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
    )
    relay = SmtplibRelay(timeout=10, transaction_seconds=60)
    wall, cpu = time.perf_counter(), time.process_time()
    for i, data in enumerate(messages):
        reply = relay.relay(server, PASSWORD, Envelope(f"bounces+m{i}@petrel.test", "b@petrel.test", f"m{i}"), data)
        assert reply.code == 250, reply
    relay.close()
    return time.perf_counter() - wall, time.process_time() - cpu


def worker_path_cpu(sink: Sink, count: int = 300) -> float:
    """CPU seconds per message through the send worker handler, queue to record, under moto."""
    from moto import mock_aws

    from petrel import resources as r

    session = moto_session()
    with mock_aws():
        from local import handlers
        from local.lambda_runtime import QueuePump
        from local.provision import provision
        from local.seed import RelayAccount, seed_tenant
        from petrel.api.deps import ApiServices
        from petrel.container.admin import AdminContainer, AdminSettings
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
        operator = AdminContainer(
            AdminSettings(
                name_prefix=res.prefix,
                tenants_table=res.tables[r.TENANTS.name],
                messages_table=res.tables[r.MESSAGES.name],
                secrets_prefix=res.secrets_prefix,
                region=REGION,
            ),
            clients=aws,
        )
        relay = RelayAccount(host="127.0.0.1", port=sink.port, username=USER, password=PASSWORD, ca_bundle=sink.ca_pem)
        seeded = seed_tenant(operator.admin, "bench", domain="petrel.test", relay=relay)
        tenant = operator.tenants.get_tenant(seeded.tenant_id)
        assert tenant is not None
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
        return spent / count


def main() -> int:
    messages = [_message(i) for i in range(MESSAGES)]
    with Sink() as sink:
        bare_smtplib(sink, messages[:50])  # warm up both paths
        petrel_relay(sink, messages[:50])
        bare_runs, ours_runs = [], []
        for _ in range(ROUNDS):  # interleaved, so drift in the sink hits both alike
            bare_runs.append(bare_smtplib(sink, messages))
            ours_runs.append(petrel_relay(sink, messages))
        per_message_cpu = worker_path_cpu(sink)
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
    ok = ours_rate / bare_rate >= 0.8
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
