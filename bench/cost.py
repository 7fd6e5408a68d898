"""`make bench`: the cost model. AWS requests, DynamoDB units and dollars per million emails.

`python -m bench.cost` runs, in-process under `moto.mock_aws`, the real API handler (the authorizer's
answer passed as the local front passes it) and the real send worker (through the local queue pump,
as Lambda's event source runs it) against a local SMTP sink:
  (a) single: N single-recipient emails through `POST /v1/emails`, then the worker relays them;
  (b) batch: the same N through `POST /v1/emails/batch`, 100 per request, then the worker;
  (c) the worker's share of each, on its own.
Every AWS request of each function is counted by botocore hooks (bench.meter), DynamoDB's units by
AWS's rules; dollars come from bench.prices alone. Lambda duration is modelled as each function's
measured CPU time (moto's own work and the meter's excluded) at its prod memory (infra/config.py,
cdk.json): a lower bound, since deployed a function also waits on the network. Logs count what each
function writes, Lambda's own lines and API Gateway's access log line per call. COST_EMAILS sets N
(default 100; the batch path needs 100 for a full batch). It exits 1 while a target is missed.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import prices
from bench.meter import CpuWindows, Meter, Tally
from bench.moto_session import REGION, moto_session
from bench.sink import PASSWORD, USER, Sink

if TYPE_CHECKING:
    from infra.config import EnvironmentConfig
    from local.lambda_runtime import Handler

ApiCall = Callable[[str, Mapping[str, Any]], dict[str, Any]]

REPO = Path(__file__).resolve().parents[1]
EMAILS = int(os.environ.get("COST_EMAILS", "100"))
BATCH = 100
ENVIRONMENT = "prod"
# What Lambda itself writes to a function's log group per invocation (START, END and REPORT lines,
# about 70 + 50 + 140 bytes): modelled, not captured (Lambda's runtime writes them, not Petrel).
LAMBDA_PLATFORM_LOG_BYTES = 260
# API Gateway's access log (one line per API call, infra/access_log.py), by this name among the logs.
GATEWAY_ACCESS_LOG = "api-gateway-access"
# The targets of issue 11, and the figures this bench measured before it (main at 7a11b50, with the
# DynamoDB adapter's float fix, 100 emails, on 2026-11-30): the baseline each target is printed beside.
# The counts are deterministic; the dollars move by a few cents with the measured CPU time.
TARGET_WRU = 8.0
TARGET_SINGLE_DOLLARS = 8.0
TARGET_BATCH_DOLLARS = 5.0
BASELINE = {"wru": 28.0, "single": 23.22, "batch": 18.90}


# -- a realistic email: a ~3 KB receipt, text and HTML ------------------------------------------------


def receipt(i: int) -> dict[str, Any]:
    """A transactional email as a shop's backend sends it: a receipt with five lines, text and HTML."""
    lines = [(f"Item {n} - stoneware mug, speckled glaze, 350 ml", 1 + n % 3, 12.5 + n) for n in range(5)]
    total = sum(qty * price for _, qty, price in lines)
    text_rows = "\n".join(f"  {name:<52} x{qty}  {qty * price:8.2f} EUR" for name, qty, price in lines)
    text = (
        f"Hello Jo,\n\nThank you for your order #{100000 + i}. Here is your receipt.\n\n{text_rows}\n\n"
        f"  Total{'':>50}{total:8.2f} EUR\n\nYour parcel leaves our workshop within two working days; "
        "we will send you its tracking link then.\n\nQuestions? Reply to this email.\n\n-- Petrel Pottery\n"
    )
    html_rows = "".join(
        f'<tr><td style="padding:4px 8px">{name}</td><td style="padding:4px 8px">{qty}</td>'
        f'<td style="padding:4px 8px;text-align:right">{qty * price:.2f}&nbsp;EUR</td></tr>'
        for name, qty, price in lines
    )
    html = (
        '<!doctype html><html><body style="font-family:Helvetica,Arial,sans-serif;color:#222">'
        f"<p>Hello Jo,</p><p>Thank you for your order <b>#{100000 + i}</b>. Here is your receipt.</p>"
        f'<table style="border-collapse:collapse">{html_rows}'
        f'<tr><td style="padding:4px 8px"><b>Total</b></td><td></td>'
        f'<td style="padding:4px 8px;text-align:right"><b>{total:.2f}&nbsp;EUR</b></td></tr></table>'
        "<p>Your parcel leaves our workshop within two working days; we will send you its tracking link "
        "then.</p><p>Questions? Reply to this email.</p><p>-- Petrel Pottery</p></body></html>"
    )
    return {
        "from": "receipts@petrel.test",
        "to": f"customer{i}@example.com",
        "subject": f"Your receipt for order #{100000 + i}",
        "text": text,
        "html": html,
    }


# -- what the functions wrote to their logs ---------------------------------------------------------


class LogBytes(io.TextIOBase):
    """Stands for stdout while the functions run: counts the UTF-8 bytes written, by `function`."""

    def __init__(self) -> None:
        self.function = "other"
        self.written: dict[str, int] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.written[self.function] = self.written.get(self.function, 0) + len(text.encode())
        return len(text)


@dataclass
class FunctionRun:
    """One function's invocations in a scenario: its AWS requests, its CPU per invocation, its logs."""

    name: str
    memory_mb: int
    tally: Tally = field(default_factory=Tally)
    cpu: list[float] = field(default_factory=list)

    @property
    def invocations(self) -> int:
        return len(self.cpu)

    def warm_cpu(self) -> list[float]:
        """CPU seconds per invocation in a warm container: the first invocation (which also wires the
        container: a cold start, rare at volume) counted as the median of the others."""
        if len(self.cpu) < 2:
            return list(self.cpu)
        return [statistics.median(self.cpu[1:]), *self.cpu[1:]]

    def billed_gb_seconds(self) -> float:
        """Lambda bills each invocation's duration rounded up to the millisecond."""
        return sum(math.ceil(seconds * 1000) / 1000 for seconds in self.warm_cpu()) * self.memory_mb / 1024


@dataclass
class Scenario:
    name: str
    emails: int
    api_calls: int
    functions: dict[str, FunctionRun]
    event_source: Tally
    log_bytes: dict[str, int]

    def side(self, *names: str) -> Tally:
        total = Tally()
        for name in names:
            total.add(self.functions[name].tally if name in self.functions else self.event_source)
        return total


class Harness:
    """Runs functions as Lambda would, metering each: its own boto3 session (hooked), its CPU per
    invocation (process CPU less moto's and the meter's), its log bytes."""

    def __init__(self, meter: Meter, cpu: CpuWindows, logs: LogBytes, log_level: str) -> None:
        self.meter = meter
        self.cpu = cpu
        self.logs = logs
        self.log_level = log_level

    def unmetered_session(self) -> Any:
        """A session for moto, the functions logging as deployed (their log lines and EMF metrics are
        billed as log ingestion), where bench.moto_session quiets them."""
        from petrel import resources as r

        session = moto_session()
        os.environ[r.POWERTOOLS_LOG_LEVEL_ENV] = self.log_level
        os.environ[r.POWERTOOLS_METRICS_DISABLED_ENV] = "false"
        return session

    def session(self) -> Any:
        session = self.unmetered_session()
        self.meter.attach(session)
        return session

    def wrap(self, run: FunctionRun, handler: Handler) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            with self.invocation(run):
                return handler(event, context)

        return invoke

    @contextmanager
    def invocation(self, run: FunctionRun) -> Iterator[None]:
        previous = self.logs.function
        self.logs.function = run.name
        started, excluded = time.process_time(), self.cpu.excluded
        try:
            with self.meter.side(run.tally):
                yield
        finally:
            run.cpu.append((time.process_time() - started) - (self.cpu.excluded - excluded))
            self.logs.function = previous


def prod_config() -> EnvironmentConfig:
    from infra.config import CONTEXT_KEY, parse_environments

    raw = json.loads((REPO / "cdk.json").read_text())["context"][CONTEXT_KEY]
    return parse_environments(raw)[ENVIRONMENT]


def lambda_architecture() -> str:
    """The architecture every function is deployed on: `LAMBDA_ARCHITECTURE` of infra/layers.py, read
    from its source (importing it would start CDK's node runtime): "arm64" or "x86_64"."""
    import ast

    tree = ast.parse((REPO / "infra" / "layers.py").read_text())
    for node in ast.walk(tree):
        named = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "LAMBDA_ARCHITECTURE" for t in node.targets
        )
        if named and isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute):
            return "arm64" if node.value.attr == "ARM_64" else "x86_64"
    raise LookupError("infra/layers.py names no LAMBDA_ARCHITECTURE")


def run_scenario(
    name: str, sink: Sink, config: EnvironmentConfig, harness: Harness, submit: Callable[[ApiCall, str, int], int]
) -> Scenario:
    """Provision a fresh mock, seed a tenant, submit EMAILS through the API with `submit` (the API
    handler, the tenant's key; it returns the API calls it made), then drain the send queue."""
    from moto import mock_aws

    from petrel import resources as r

    functions = {
        "api": FunctionRun("api", config.api_memory_mb),
        "authorizer": FunctionRun("authorizer", config.authorizer_memory_mb),
        "send-worker": FunctionRun("send-worker", config.worker_memory_mb),
    }
    event_source = Tally()
    operator_session = harness.unmetered_session()
    with mock_aws():
        from local import handlers
        from local.lambda_runtime import LocalContext, QueuePump
        from local.provision import provision
        from local.seed import RelayAccount, seed_tenant
        from petrel.container.admin import AdminContainer
        from petrel.container.base import AwsClients

        operator = AwsClients(operator_session)
        res = provision(
            operator.dynamodb(),
            operator.sqs(),
            operator.s3(),
            prefix="cost",
            visibility_timeout=30,
            max_receive_count=5,
            scheduler=operator.scheduler(),
            iam=operator.client("iam"),
        )
        harness.meter.bind_tables({res.tables[spec.name]: spec for spec in r.TABLES})
        env = res.environment()
        admin = AdminContainer(res.admin_settings(region=REGION), clients=operator)
        relay = RelayAccount(host="127.0.0.1", port=sink.port, username=USER, password=PASSWORD, ca_bundle=sink.ca_pem)
        seeded = seed_tenant(admin.admin, "cost", domain="petrel.test", relay=relay)
        _verify_with_dkim(admin, seeded.tenant_id, "petrel.test")
        _warm_servers(admin, seeded.tenant_id)

        authorizer = handlers.authorizer(env, AwsClients(harness.session()))
        api = handlers.api(_deployed_api_environment(env), AwsClients(harness.session()))
        worker = handlers.worker(env, AwsClients(harness.session()))
        policy = harness.wrap(functions["authorizer"], authorizer.handler)(
            _authorizer_event(seeded.api_key), LocalContext("authorizer")
        )
        assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow", policy
        answer = {**policy.get("context", {}), "principalId": policy.get("principalId")}

        access_bytes: list[int] = []

        def call_api(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
            event = _api_event(path, body, seeded.api_key, answer)
            result: dict[str, Any] = harness.wrap(functions["api"], api.handler)(event, LocalContext("api"))
            assert int(result["statusCode"]) in (200, 201, 202, 207), result
            access_bytes.append(_gateway_access_bytes(path, result, answer))
            return result

        api_calls = submit(call_api, seeded.api_key, EMAILS)
        pump = QueuePump(
            AwsClients(harness.session()).sqs(),
            res.queue_urls[r.SEND_TRANSACTIONAL.name],
            res.queue_arns[r.SEND_TRANSACTIONAL.name],
            harness.wrap(functions["send-worker"], worker.handler),
            function_name="send-worker",
            batch_size=config.batch_size,
        )
        with harness.meter.side(event_source):
            while pump.poll_once():
                pass
        worker.container.deliver.relay.close()  # the sessions it keeps for a next invocation
        sent = _count_relayed_first_try(admin, seeded.tenant_id)
        assert sent == EMAILS, f"{sent} of {EMAILS} emails were relayed first try"
    logs = dict(harness.logs.written)
    logs[GATEWAY_ACCESS_LOG] = sum(access_bytes)
    return Scenario(name, EMAILS, api_calls, functions, event_source, logs)


def _deployed_api_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The API's environment as deployed where it differs from the local stack's in what it logs: no
    access line of its own (infra/access_log.py; infra/constructs/functions.py sets the same)."""
    from infra.access_log import api_function_environment

    return {**env, **api_function_environment()}


def _gateway_access_bytes(path: str, result: Mapping[str, Any], answer: Mapping[str, Any]) -> int:
    """The bytes of the line API Gateway's access log (infra/access_log.py) gets for this call: modelled
    (API Gateway writes it, not Petrel) from the call's own path, status, response length, tenant and
    key, with typical values for the request id, address, time and latencies."""
    from infra.access_log import access_log_line

    values = {
        "$context.requestId": "6f1c2a9e-3b7d-4c1e-9a2f-0d4e5b6c7a8b",
        "$context.identity.sourceIp": "203.0.113.10",
        "$context.requestTime": "01/Dec/2026:11:45:23 +0000",
        "$context.httpMethod": "POST",
        "$context.resourcePath": path,
        "$context.path": path,
        "$context.status": str(result["statusCode"]),
        "$context.responseLength": str(len(str(result.get("body") or ""))),
        "$context.responseLatency": "48",
        "$context.integrationLatency": "45",
        "$context.authorizer.tenant_id": str(answer.get("tenant_id", "-")),
        "$context.authorizer.principalId": str(answer.get("principalId", "-")),
    }
    return len(access_log_line(values).encode()) + 1  # and its newline


def _count_relayed_first_try(admin: Any, tenant_id: str) -> int:
    """The tenant's messages the worker recorded relayed on attempt 1 (read unmetered, from the store)."""
    from boto3.dynamodb.conditions import Attr

    from petrel import resources as r
    from petrel.models.records import MessageStatus

    table = admin.clients.session.resource("dynamodb").Table(admin.settings.messages_table)
    mine = Attr("pk").begins_with(f"{tenant_id}#")
    wanted = Attr("status").eq(MessageStatus.RELAYED.value) & mine & Attr("attempt").eq(1)
    kwargs: dict[str, Any] = {"FilterExpression": wanted}
    relayed = 0
    while True:
        page = table.scan(**kwargs)
        relayed += sum(1 for item in page.get("Items", []) if str(item["sk"]).startswith(r.MESSAGE_SK_PREFIX))
        if "LastEvaluatedKey" not in page:
            return relayed
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _warm_servers(admin: Any, tenant_id: str) -> None:
    """The tenant's servers warm (no warm-up cap) and with rates the run never reaches: what is measured
    is the cost of shaping when tokens are there (every email relayed on its first try), not waiting."""
    from petrel.models.records import ServerShaping

    fast = ServerShaping(
        rate_per_second=100_000, burst=100_000, provider_rate_per_second=100_000, provider_burst=100_000, warmup=()
    )
    for server in admin.tenants.list_servers(tenant_id):
        admin.tenants.put_server(server.model_copy(update={"shaping": fast}))


def _verify_with_dkim(admin: Any, tenant_id: str, domain: str) -> None:
    """The seeded domain verified, with one active RSA-2048 key: mail is signed, as in production."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from petrel.models.records import DomainKey, DomainStatus

    pem = (
        rsa.generate_private_key(65537, 2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    deps = admin.admin
    name = f"{deps.secrets_prefix}{tenant_id}/dkim/{domain}/cost"
    deps.secrets.put_secret(name, pem)
    sending = deps.tenants.get_domain(tenant_id, domain)
    assert sending is not None
    key = DomainKey(selector="cost", secret_name=name, created_at=datetime.now(UTC))
    deps.tenants.put_domain(sending.model_copy(update={"keys": (key,), "status": DomainStatus.VERIFIED}))


def _authorizer_event(api_key: str) -> dict[str, Any]:
    return {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:000000000000:local/api/POST/v1/emails",
        "resource": "/v1/{proxy+}",
        "path": "/v1/emails",
        "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {api_key}"},
    }


def _api_event(path: str, body: Mapping[str, Any], api_key: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A REST proxy event as API Gateway (and the local front) gives it, the authorizer's answer in it."""
    raw = json.dumps(body).encode()
    return {
        "resource": "/v1/{proxy+}",
        "path": path,
        "httpMethod": "POST",
        "headers": {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        "queryStringParameters": None,
        "pathParameters": {"proxy": path.removeprefix("/v1/")},
        "body": base64.b64encode(raw).decode("ascii"),
        "isBase64Encoded": True,
        "requestContext": {
            "requestId": f"req-{time.monotonic_ns()}",
            "stage": "api",
            "httpMethod": "POST",
            "path": path,
            "authorizer": dict(answer),
        },
    }


def submit_single(call: ApiCall, api_key: str, count: int) -> int:
    for i in range(count):
        call("/v1/emails", receipt(i))
    return count


def submit_batch(call: ApiCall, api_key: str, count: int) -> int:
    calls = 0
    for start in range(0, count, BATCH):
        result = call("/v1/emails/batch", {"emails": [receipt(i) for i in range(start, min(count, start + BATCH))]})
        refused = [item for item in json.loads(result["body"])["results"] if item["status"] != 202]
        assert not refused, refused[:3]
        calls += 1
    return calls


# -- dollars ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """Dollars per million emails, by line item."""

    lines: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.lines.values())


def costs(scenario: Scenario, architecture: str, *, sides: tuple[str, ...]) -> Costs:
    """$ per million emails of the functions named in `sides` (and "event-source": Lambda's SQS polling),
    API Gateway counted when "api" is among them."""
    million = 1_000_000 / scenario.emails
    tally = scenario.side(*sides)
    runs = [scenario.functions[name] for name in sides if name in scenario.functions]
    gb_second = prices.LAMBDA_GB_SECOND_ARM64 if architecture == "arm64" else prices.LAMBDA_GB_SECOND_X86
    s3_puts = tally.count("s3", "PutObject", "CopyObject", "ListObjectsV2", "CreateMultipartUpload", "UploadPart")
    s3_gets = tally.count("s3") - s3_puts
    log_bytes = sum(scenario.log_bytes.get(run.name, 0) + LAMBDA_PLATFORM_LOG_BYTES * run.invocations for run in runs)
    if "api" in sides:
        log_bytes += scenario.log_bytes.get(GATEWAY_ACCESS_LOG, 0)
    lines = {
        "API Gateway": (scenario.api_calls if "api" in sides else 0) * prices.API_GATEWAY_REST.per_unit,
        "Lambda requests": sum(run.invocations for run in runs) * prices.LAMBDA_REQUESTS.per_unit,
        "Lambda GB-s": sum(run.billed_gb_seconds() for run in runs) * gb_second.per_unit,
        "DynamoDB writes": tally.total_wru * prices.DYNAMODB_WRITE.per_unit,
        "DynamoDB reads": tally.total_rru * prices.DYNAMODB_READ.per_unit,
        "SQS": tally.sqs_requests * prices.SQS_STANDARD.per_unit,
        "Scheduler": tally.count("scheduler", "CreateSchedule") * prices.SCHEDULER_INVOCATIONS.per_unit,
        "S3": s3_puts * prices.S3_PUT.per_unit + s3_gets * prices.S3_GET.per_unit,
        "Secrets Manager": tally.count("secretsmanager") * prices.SECRETS_MANAGER_CALLS.per_unit,
        "CloudWatch Logs": log_bytes * prices.LOGS_INGESTION.per_unit,
    }
    return Costs({name: dollars * million for name, dollars in lines.items()})


# -- the report -------------------------------------------------------------------------------------


def _per(value: float, emails: int) -> str:
    return f"{value / emails:7.3f}"


def print_side(title: str, tally: Tally, emails: int) -> None:
    print(f"  {title}: AWS requests per email")
    for name, n in sorted(tally.calls.items()):
        print(f"    {name:<40} {_per(n, emails)}")
    print(f"    {'SQS billed requests (64 KB chunks)':<40} {_per(tally.sqs_requests, emails)}")
    if tally.wru:
        print(f"  {title}: DynamoDB write units per email, by table/index, then by step")
        for where, units in sorted(tally.wru.items()):
            print(f"    {where:<40} {_per(units, emails)}")
        for step, units in sorted(tally.wru_steps.items(), key=lambda kv: -kv[1]):
            print(f"    {'. ' + step:<58} {_per(units, emails)}")
    if tally.rru:
        print(f"  {title}: DynamoDB read units per email")
        for where, read in sorted(tally.rru.items()):
            print(f"    {where:<40} {_per(read, emails)}")


def print_scenario(scenario: Scenario, architecture: str) -> Costs:
    n = scenario.emails
    print(f"\n== {scenario.name}: {n} single-recipient ~3 KB emails, {scenario.api_calls} API calls ==")
    print_side("API side (api function)", scenario.side("api"), n)
    print_side("authorizer (once per run)", scenario.side("authorizer"), n)
    print_side("worker side (send worker)", scenario.side("send-worker"), n)
    print_side("event source (Lambda's SQS polling of the send queue)", scenario.side("event-source"), n)
    gateway = scenario.log_bytes.get(GATEWAY_ACCESS_LOG, 0)
    print(f"  API Gateway access log: {gateway / max(scenario.api_calls, 1):.0f} B per API call (modelled)")
    for run in scenario.functions.values():
        cpu = sum(run.warm_cpu())
        print(
            f"  {run.name:<12} {run.invocations:4d} invocations, {cpu / n * 1000:6.2f} ms CPU per email warm"
            f" ({run.memory_mb} MB), logs {scenario.log_bytes.get(run.name, 0) / n:6.0f} B/email"
        )
    everything = ("api", "authorizer", "send-worker", "event-source")
    whole = costs(scenario, architecture, sides=everything)
    worker = costs(scenario, architecture, sides=("send-worker", "event-source"))
    print(f"  $ per million emails            {'whole':>8} {'worker':>8}")
    for line, dollars in whole.lines.items():
        print(f"    {line:<30} {dollars:8.3f} {worker.lines[line]:8.3f}")
    print(f"    {'total':<30} {whole.total:8.2f} {worker.total:8.2f}   (Amazon SES: {_ses():.2f})")
    return whole


def _ses() -> float:
    return prices.SES_OUTBOUND.per_unit * 1_000_000


def _target(label: str, figure: float, target: float, baseline: float, unit: str) -> bool:
    ok = figure <= target
    ratio = f"{figure / baseline:.2f}x of today's {baseline:.2f}" if baseline else "no baseline"
    print(f"  {label:<48} {figure:7.2f} {unit} (<= {target:g}) {'PASS' if ok else 'FAIL'} | {ratio}")
    return ok


def main() -> int:
    import moto  # noqa: F401  (first: moto's stubber is in every client made from here on)

    started = time.perf_counter()
    config = prod_config()
    architecture = lambda_architecture()
    cpu = CpuWindows()
    cpu.install()
    logs = LogBytes()

    with Sink() as sink:
        raw = moto_session()  # unhooked: the meter's own reads
        scenarios = []
        for name, submit in (
            ("single: POST /v1/emails", submit_single),
            ("batch: POST /v1/emails/batch", submit_batch),
        ):
            logs.written.clear()
            meter = Meter(raw.client("dynamodb"), {}, cpu)
            harness = Harness(meter, cpu, logs, config.log_level)
            with redirect_stdout(logs):
                scenarios.append(run_scenario(name, sink, config, harness, submit))
    print(
        f"Cost model ({ENVIRONMENT} settings: {architecture}; memory api {config.api_memory_mb} MB, worker"
        f" {config.worker_memory_mb} MB, authorizer {config.authorizer_memory_mb} MB; log level {config.log_level})."
    )
    print(
        "Lambda duration = each function's measured CPU time per warm invocation (moto's and the meter's"
        " excluded), billed at its memory: a lower bound (deployed, a function also waits on the network)."
    )
    print(
        "The authorizer runs once per run: API Gateway caches its answer 60 s per key. Logs include"
        f" {LAMBDA_PLATFORM_LOG_BYTES} B of Lambda's START/END/REPORT lines per invocation and API Gateway's"
        " access log line per API call (modelled)."
    )
    single, batch = (print_scenario(s, architecture) for s in scenarios)
    wru = scenarios[0].side("api", "send-worker", "event-source").total_wru / scenarios[0].emails
    print("\nTargets (issue 11)")
    results = [
        _target("DynamoDB WRU per email relayed first try", wru, TARGET_WRU, BASELINE["wru"], "WRU"),
        _target("$ per million via POST /v1/emails", single.total, TARGET_SINGLE_DOLLARS, BASELINE["single"], "$"),
        _target("$ per million via /v1/emails/batch", batch.total, TARGET_BATCH_DOLLARS, BASELINE["batch"], "$"),
    ]
    print(f"  beside Amazon SES's ${_ses():.0f} per million; took {time.perf_counter() - started:.1f} s")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
