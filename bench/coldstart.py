"""`make bench` (second half): each function's cold import and first invocation, as Lambda runs them.

What Lambda runs is the layer (`petrel`, shipped with `.pyc` compiled `--invalidation-mode
unchecked-hash`) and the function's asset (`functions/<fn>/handler.py`). These machines set
PYTHONDONTWRITEBYTECODE, so a checkout has no `.pyc` and its imports would cost about three times as
much: the bench copies the layer and the functions to a temporary directory, compiles them there as
the layer build does (never into the working tree, where unchecked `.pyc` would hide later edits), and
runs every figure in a fresh interpreter on that copy. CPU time (user + system, from the OS) is the
figure: wall time on a shared machine is noise.

Per function (api, authorizer, send_worker, sweeper), median of RUNS fresh interpreters:
- cold import: import the handler module, beside `import boto3` + one client (what any function pays);
- first invocation: import, build the container from a valid environment (moto server, a local SMTP
  sink) and handle one representative event, beside `import boto3` + one client + one DynamoDB call
  to the same moto server.
Also: four boto3 clients built on one shared session vs one session each (the containers share one),
and the import of `email_validator` (petrel.mail.addresses imports it on first use).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sink import PASSWORD, USER, Sink

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "child.py"
FUNCTIONS = ("api", "authorizer", "send_worker", "sweeper")
RUNS = 5
REGION = "us-east-1"
PREFIX = "bench"
# The send worker's cold import target (CPU, with .pyc), kept from the relay bench.
WORKER_IMPORT_TARGET_MS = 600.0
# Variables of the bench's own environment that must not reach a measured function.
_SCRUBBED_PREFIXES = ("AWS_", "PETREL_", "POWERTOOLS_")


@dataclass(frozen=True)
class Build:
    """The layer and the functions as deployed: a copy with unchecked-hash `.pyc`."""

    python: Path  # on PYTHONPATH, as /opt/python is on Lambda
    functions: Path

    def handler(self, function: str) -> Path:
        return self.functions / function / "handler.py"


def compiled_copy(root: Path) -> Build:
    """Copy the layer and the functions under `root` and byte-compile them like infra/layers.py does."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")
    build = Build(python=root / "python", functions=root / "functions")
    shutil.copytree(REPO / "layers" / "core" / "python", build.python, ignore=ignore)
    shutil.copytree(REPO / "functions", build.functions, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(root)],
        check=True,
    )
    return build


def base_environment(build: Build) -> dict[str, str]:
    """The children's environment: this one without AWS/Petrel/Powertools settings, the copy on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        {
            "PYTHONPATH": str(build.python),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }
    )
    return env


def child_cpu(args: list[str], env: Mapping[str, str], workdir: Path) -> tuple[float, Any]:
    """CPU seconds (user + system) of one fresh interpreter running child.py, and its JSON result."""
    result, errors = workdir / "result.json", workdir / "stderr.txt"
    result.unlink(missing_ok=True)
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), str(result), *args],
            env=dict(env),
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} exited {process.returncode}:\n{errors.read_text()[-3000:]}")
    return usage.ru_utime + usage.ru_stime, json.loads(result.read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Backend:
    """A moto server provisioned like the local stack, with one tenant that can send through the sink."""

    endpoint: str
    environment: dict[str, str]  # every function's PETREL_* variables (each reads its own)
    api_key: str
    queue_url: str
    queue_arn: str


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port (a thread of this process: its CPU is not the children's)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def seed_backend(endpoint: str, sink_port: int, sink_ca: str) -> Backend:
    """Provision tables, queues, bucket and schedules as the local stack does, and seed a tenant."""
    from local.aws import LocalAws
    from local.provision import provision
    from local.seed import RelayAccount, seed_tenant
    from petrel.container.admin import AdminContainer, AdminSettings

    aws = LocalAws(endpoint, region=REGION)
    made = provision(
        aws.client("dynamodb"),
        aws.client("sqs"),
        aws.client("s3"),
        prefix=PREFIX,
        visibility_timeout=30,
        max_receive_count=5,
        scheduler=aws.client("scheduler"),
        iam=aws.client("iam"),
    )
    admin = AdminContainer(
        AdminSettings.for_prefix(PREFIX, endpoint_url=endpoint, region=REGION), clients=aws.clients()
    )
    relay = RelayAccount(host="127.0.0.1", port=sink_port, username=USER, password=PASSWORD, ca_bundle=sink_ca)
    seeded = seed_tenant(admin.admin, "bench", domain="petrel.test", relay=relay)
    return Backend(
        endpoint=endpoint,
        environment=made.environment(),
        api_key=seeded.api_key,
        queue_url=made.queue_urls["send-transactional"],
        queue_arn=made.queue_arns["send-transactional"],
    )


def function_environment(base: Mapping[str, str], backend: Backend, function: str, workdir: Path) -> dict[str, str]:
    """What infra gives a deployed function (its settings, Powertools' names), pointed at moto."""
    from petrel import resources as r
    from petrel.observability import METRICS_FILE_ENV, service_name

    return {
        **base,
        **backend.environment,
        "AWS_ENDPOINT_URL": backend.endpoint,
        r.POWERTOOLS_SERVICE_NAME_ENV: service_name(function.replace("_", "-")),
        r.POWERTOOLS_LOG_LEVEL_ENV: "WARNING",
        METRICS_FILE_ENV: str(workdir / "metrics.jsonl"),
    }


# -- representative events --------------------------------------------------------------------------


def authorizer_event(api_key: str) -> dict[str, Any]:
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:000000000000:bench/api/POST/v1/emails",
        "resource": "/v1/{proxy+}",
        "path": "/v1/emails",
        "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    }


def send_event(authorizer_context: Mapping[str, Any], run: int) -> dict[str, Any]:
    """POST /v1/emails as API Gateway's REST proxy passes it, after the authorizer allowed it."""
    body = json.dumps(
        {"from": "Bench <a@petrel.test>", "to": f"r{run}@example.com", "subject": "bench", "text": "x" * 4000}
    ).encode()
    return {
        "resource": "/v1/{proxy+}",
        "path": "/v1/emails",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "queryStringParameters": None,
        "pathParameters": {"proxy": "emails"},
        "body": base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": True,
        "requestContext": {
            "requestId": f"bench-{run}",
            "stage": "api",
            "httpMethod": "POST",
            "authorizer": dict(authorizer_context),
        },
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": hashlib.md5(m["Body"].encode(), usedforsecurity=False).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "bench",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-01-01T00:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {},
    }


def receive_jobs(backend: Backend, count: int) -> list[dict[str, Any]]:
    """The send jobs the API's invocations queued (held invisible while the worker runs)."""
    from local.aws import LocalAws

    sqs = LocalAws(backend.endpoint, region=REGION).client("sqs")
    jobs: list[dict[str, Any]] = []
    for _ in range(20):
        got = sqs.receive_message(
            QueueUrl=backend.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=600,
        ).get("Messages", [])
        jobs += [dict(message) for message in got]
        if len(jobs) >= count:
            return jobs
    raise RuntimeError(f"the API queued {len(jobs)} jobs, expected {count}")


# -- the figures -------------------------------------------------------------------------------------


class Samples:
    """CPU seconds per figure, one sample per round: the rounds interleave every figure with its
    baselines, so load from elsewhere on the machine hits both alike."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)

    def __getitem__(self, name: str) -> float:
        return statistics.median(self.values[name])


def invoke(
    build: Build, function: str, event: dict[str, Any], env: Mapping[str, str], workdir: Path
) -> tuple[float, Any]:
    path = workdir / f"{function}-event.json"
    path.write_text(json.dumps(event))
    return child_cpu(["invoke", str(build.handler(function)), str(path)], env, workdir)


def measure(build: Build, base: Mapping[str, str], workdir: Path, samples: Samples) -> None:
    """RUNS rounds, each taking every figure once in a fresh interpreter. A round's first calls follow one
    email: the authorizer admits the key, the API accepts the email, the worker relays its job to the
    sink; then the sweeper runs."""
    with Sink() as sink, moto_server() as endpoint:
        backend = seed_backend(endpoint, sink.port, sink.ca_pem)
        envs = {fn: function_environment(base, backend, fn, workdir) for fn in FUNCTIONS}
        bare = {**base, "AWS_ENDPOINT_URL": backend.endpoint}
        for run in range(RUNS):
            samples.add("interpreter", child_cpu(["nothing"], bare, workdir)[0])
            samples.add("boto3-client", child_cpu(["boto3-client"], bare, workdir)[0])
            samples.add("boto3-call", child_cpu(["boto3-call"], bare, workdir)[0])
            samples.add("email_validator", child_cpu(["import-module", "email_validator"], bare, workdir)[0])
            samples.add("clients shared", child_cpu(["clients", "shared"], bare, workdir)[1])
            samples.add("clients separate", child_cpu(["clients", "separate"], bare, workdir)[1])
            for fn in FUNCTIONS:
                samples.add(f"import {fn}", child_cpu(["import", str(build.handler(fn))], envs[fn], workdir)[0])
            cpu, policy = invoke(build, "authorizer", authorizer_event(backend.api_key), envs["authorizer"], workdir)
            assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow", policy
            samples.add("first authorizer", cpu)
            context = {**policy["context"], "principalId": policy["principalId"]}
            cpu, response = invoke(build, "api", send_event(context, run), envs["api"], workdir)
            assert response["statusCode"] == 202, response
            samples.add("first api", cpu)
            [job] = receive_jobs(backend, 1)
            cpu, response = invoke(
                build, "send_worker", sqs_event([job], backend.queue_arn), envs["send_worker"], workdir
            )
            assert response == {"batchItemFailures": []}, response
            samples.add("first send_worker", cpu)
            samples.add("first sweeper", invoke(build, "sweeper", scheduled_event(), envs["sweeper"], workdir)[0])


def report(samples: Samples) -> bool:
    ms = 1000.0
    client, call = samples["boto3-client"], samples["boto3-call"]
    print(f"cold start (CPU, fresh interpreter, .pyc, median of {RUNS})")
    print(
        f"  baselines    python -c pass {samples['interpreter'] * ms:4.0f} ms"
        f" | import boto3 + one client {client * ms:4.0f} ms | + one DynamoDB call {call * ms:4.0f} ms"
    )
    print(f"  {'function':<12} {'cold import':>11} {'x boto3+client':>15} {'first call':>11} {'x boto3+call':>13}")
    for fn in FUNCTIONS:
        cold, first = samples[f"import {fn}"], samples[f"first {fn}"]
        print(f"  {fn:<12} {cold * ms:8.0f} ms {cold / client:14.2f}x {first * ms:8.0f} ms {first / call:12.2f}x")
    shared, separate = samples["clients shared"], samples["clients separate"]
    print(
        f"  4 boto3 clients: one session {shared * ms:.0f} ms | a session each {separate * ms:.0f} ms"
        f" | {separate / shared:.1f}x"
    )
    extra = samples["email_validator"] - samples["interpreter"]
    print(f"  import email_validator: +{extra * ms:.0f} ms over python -c pass (mail.addresses imports it on use)")
    worker = samples["import send_worker"] * ms
    ok = worker <= WORKER_IMPORT_TARGET_MS
    print(
        f"  send_worker cold import {worker:.0f} ms (<= {WORKER_IMPORT_TARGET_MS:.0f} ms): {'met' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="petrel-bench-") as tmp:
        root = Path(tmp)
        build = compiled_copy(root / "build")
        workdir = root / "work"
        workdir.mkdir()
        base = base_environment(build)
        samples = Samples()
        measure(build, base, workdir, samples)
    return 0 if report(samples) else 1


if __name__ == "__main__":
    sys.exit(main())
