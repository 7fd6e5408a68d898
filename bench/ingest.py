"""`make bench` (ingest): the cost of reading incoming mail, as ratios to baselines measured in this run.

- parse cost: a generated 50 KB multipart message (text, HTML, a PDF-like attachment):
  `petrel.mail.inbound.parse_inbound(raw)` against `email.message_from_bytes(raw, policy=default)`
  alone, CPU time per call, median of interleaved rounds. The ratio is what reading headers, bodies
  and attachments costs on top of the email package's own parse.
- parse + classify: a mix of delivery reports (the test fixtures), replies and plain mail through
  `parse_inbound` + `petrel.mail.reports.classify_bytes`, in messages per CPU second, against
  `email.message_from_bytes` alone on the same messages.
- stored: the same mix through the ingest worker's handler (petrel.entrypoints.ingest_worker) on moto
  DynamoDB, S3 and SQS, fed by the local queue pump as Lambda's event source would: messages per
  second and CPU per message, against the floor any ingest pays on the same moto (one S3 GET of the
  raw message and one DynamoDB PutItem of a record) with bare boto3. The reports name Petrel messages
  that this bench never sent, so they take the "unmatched: stored and listed" path.
"""

from __future__ import annotations

import base64
import email
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

from bench.moto_session import moto_session

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "unit" / "fixtures" / "inbound"
TENANT = "tn_bench"
PARSE_ROUNDS = 15
PARSE_CALLS = 20  # per round and side
MIX_MESSAGES = 400
STORED_MESSAGES = 100
# The parse-cost target: reading everything Petrel stores costs at most this much over the bare parse.
PARSE_RATIO_TARGET = 2.0


def multipart_50k() -> bytes:
    """A 50 KB multipart/mixed message: text and HTML alternatives and a base64 attachment."""
    paragraph = "Thank you for your order. Your parcel leaves our warehouse today and arrives soon. "
    text = (paragraph * 120)[:10_000]
    html = "<html><body>" + ("<p>" + paragraph + "<b>now</b></p>\n") * 180 + "</body></html>"
    attachment = base64.encodebytes(bytes(range(256)) * 58).decode().replace("\n", "\r\n")
    head = (
        "From: Ana <ana@customer.example.org>\r\nTo: orders@shop.example.com\r\n"
        "Subject: =?utf-8?q?Bestellung_=C3=BCbermorgen?=\r\nMessage-ID: <bench-50k@customer.example.org>\r\n"
        "Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
    )
    body = (
        '--mix\r\nContent-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--alt--\r\n"
        "--mix\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="invoice.pdf"\r\n\r\n{attachment}\r\n--mix--\r\n'
    )
    return (head + body).encode()


def message_mix(count: int) -> list[bytes]:
    """`count` distinct messages: the fixtures (reports, complaints, auto-replies, replies) and plain mail.

    An `X-Bench` header makes each copy's bytes (and so its inbound id) unique.
    """
    seeds = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))]
    plain = (
        b"From: news@partner.example\r\nTo: orders@shop.example.com\r\nSubject: catalogue\r\n"
        b"Message-ID: <plain@partner.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + b"New products are out.\r\n"
        * 40
    )
    seeds += [plain] * (len(seeds) // 3)  # about a quarter plain mail
    return [b"X-Bench: %d\r\n" % i + seeds[i % len(seeds)] for i in range(count)]


def cpu_per_call(function: Callable[[bytes], object], raw: bytes, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        function(raw)
    return (time.process_time() - started) / calls


def bare_parse(raw: bytes) -> object:
    return email.message_from_bytes(raw, policy=policy.default)


def parse_cost() -> tuple[float, float]:
    """Median CPU seconds per call of (parse_inbound, message_from_bytes) on the 50 KB message."""
    from petrel.mail.inbound import parse_inbound

    raw = multipart_50k()
    parsed = parse_inbound(raw)
    assert parsed.parse_error is None and len(parsed.attachments) == 1 and parsed.html, parsed.parse_error
    cpu_per_call(parse_inbound, raw, 5)  # warm up both paths
    cpu_per_call(bare_parse, raw, 5)
    ours, bare = [], []
    for _ in range(PARSE_ROUNDS):  # interleaved, so drift hits both alike
        ours.append(cpu_per_call(parse_inbound, raw, PARSE_CALLS))
        bare.append(cpu_per_call(bare_parse, raw, PARSE_CALLS))
    return statistics.median(ours), statistics.median(bare)


def parse_and_classify(raw: bytes) -> object:
    from petrel.mail.inbound import parse_inbound
    from petrel.mail.reports import classify_bytes

    return parse_inbound(raw), classify_bytes(raw)


def classify_rate(messages: list[bytes]) -> tuple[float, float]:
    """Messages per CPU second of (parse + classify, bare parse) over the mix, median of 3 rounds."""
    ours, bare = [], []
    for _ in range(3):
        started = time.process_time()
        for raw in messages:
            parse_and_classify(raw)
        ours.append(len(messages) / (time.process_time() - started))
        started = time.process_time()
        for raw in messages:
            bare_parse(raw)
        bare.append(len(messages) / (time.process_time() - started))
    return statistics.median(ours), statistics.median(bare)


# ------------------------------------------------------------------------------------ the store path


class Stored:
    """The stored figure: the ingest worker path and the bare-boto3 floor, each (wall s, CPU s) for N."""

    def __init__(self, count: int, ours: tuple[float, float], floor: tuple[float, float]) -> None:
        self.count = count
        self.ours = ours
        self.floor = floor


def store_throughput(messages: list[bytes]) -> Stored:
    """The mix through the ingest worker's handler on moto, and the bare-boto3 floor on the same moto."""
    from moto import mock_aws

    session = moto_session()
    with mock_aws():
        from local.provision import provision
        from petrel.container.base import AwsClients

        aws = AwsClients(session)
        res = provision(
            aws.dynamodb(),
            aws.sqs(),
            aws.s3(),
            prefix="bench",
            visibility_timeout=60,
            max_receive_count=5,
            scheduler=aws.scheduler(),
            iam=aws.client("iam"),
        )
        ours = ingest_worker_path(session, res, messages)
        floor = bare_floor(aws, res, messages)
    return Stored(len(messages), ours, floor)


def ingest_worker_path(session: Any, res: Any, messages: list[bytes]) -> tuple[float, float]:
    """Put each raw message in the bucket and its job on the ingest queue (what the poller and the API
    do), then time the worker draining the queue: (wall, CPU) seconds."""
    from local import handlers
    from local.lambda_runtime import QueuePump
    from petrel import resources as r
    from petrel.container.base import AwsClients
    from petrel.mail.inbound import parse_inbound
    from petrel.models.inbound import IngestJob, inbound_id

    aws = AwsClients(session)
    s3, sqs = aws.s3(), aws.sqs()
    url = res.queue_urls[r.INGEST.name]
    received = datetime.now(UTC)
    for raw in messages:
        job_id = inbound_id(TENANT, parse_inbound(raw).message_id, raw)
        job = IngestJob(
            tenant_id=TENANT,
            inbound_id=job_id,
            raw_key=r.inbound_raw_key(TENANT, job_id),
            received_at=received,
            source="push",
        )
        s3.put_object(Bucket=res.bucket, Key=job.raw_key, Body=raw)
        sqs.send_message(QueueUrl=url, MessageBody=job.model_dump_json())
    worker = handlers.ingest_worker(res.environment(), AwsClients(session))
    pump = QueuePump(sqs, url, res.queue_arns[r.INGEST.name], worker.handler, function_name="bench-ingest")
    handled = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while handled < len(messages):
        got = pump.poll_once()
        if not got:
            break
        handled += got
    spent = time.perf_counter() - wall, time.process_time() - cpu
    left = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert handled == len(messages) and left["ApproximateNumberOfMessages"] == "0", (handled, left)
    stored = aws.dynamodb().scan(TableName=res.tables[r.INBOUND.name], Select="COUNT")["Count"]
    assert stored >= len(messages), f"only {stored} items stored for {len(messages)} messages"
    return spent


def bare_floor(aws: Any, res: Any, messages: list[bytes]) -> tuple[float, float]:
    """One S3 GET of each raw message and one DynamoDB PutItem of a small record: (wall, CPU) seconds."""
    s3, dynamodb = aws.s3(), aws.dynamodb()
    keys = []
    for i, raw in enumerate(messages):
        keys.append(f"floor/{i}.eml")
        s3.put_object(Bucket=res.bucket, Key=keys[-1], Body=raw)
    table = _floor_table(dynamodb)
    wall, cpu = time.perf_counter(), time.process_time()
    for i, key in enumerate(keys):
        data = s3.get_object(Bucket=res.bucket, Key=key)["Body"].read()
        item = {"pk": {"S": f"{TENANT}#{i}"}, "size": {"N": str(len(data))}, "subject": {"S": "x" * 200}}
        dynamodb.put_item(TableName=table, Item=item)
    return time.perf_counter() - wall, time.process_time() - cpu


def _floor_table(dynamodb: Any) -> str:
    name = "bench-floor"
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    return name


# -------------------------------------------------------------------------------------------- main


def main() -> int:
    ours, bare = parse_cost()
    parse_ratio = ours / bare
    print(
        f"ingest parse     parse_inbound {ours * 1000:6.2f} ms CPU | message_from_bytes {bare * 1000:.2f} ms"
        f" | {parse_ratio:.2f}x (50 KB multipart; <= {PARSE_RATIO_TARGET:.2f}x)"
    )
    mix = message_mix(MIX_MESSAGES)
    rate, bare_rate = classify_rate(mix)
    print(
        f"ingest classify  parse+classify {rate:6.0f} msg/s CPU | message_from_bytes {bare_rate:6.0f} msg/s"
        f" | {rate / bare_rate:.2f}x ({len(mix)} reports, replies, plain)"
    )
    stored = store_throughput(message_mix(STORED_MESSAGES))
    (wall, cpu), (floor_wall, floor_cpu) = stored.ours, stored.floor
    n = stored.count
    print(
        f"ingest stored    worker {n / wall:6.1f} msg/s, {cpu / n * 1000:6.2f} ms CPU/msg"
        f" | S3 GET + PutItem floor {n / floor_wall:6.1f} msg/s, {floor_cpu / n * 1000:.2f} ms"
        f" | {cpu / floor_cpu:.1f}x CPU (moto)"
    )
    ok = parse_ratio <= PARSE_RATIO_TARGET
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
