"""The whole platform on 127.0.0.1: embedded AWS (moto server, or LocalStack for the services it serves
and moto's server for DynamoDB: `backend`), the MailU stand-in (real Postfix + Dovecot) with a next hop
that refuses (so Postfix writes real delivery reports), the HTTP front, queue pumps, timers and the same
Lambda handlers that are deployed.

The loop closes as deployed: the send worker relays through the stand-in with a VERP envelope sender
and NOTIFY=SUCCESS,FAILURE,DELAY; Postfix's reports land in the demo tenant's bounce mailbox; the IMAP
poller (on a timer, every `poll_seconds`) reads its registered mailboxes into the ingest queue; the
ingest worker turns each report into `delivered` or `bounced`, and a reply into `email.replied`.

Each function runs as on Lambda, with its own environment (`LocalConfig.environments`), its own
settings, container and boto3 session. The platform changes the process environment only for what is
the same for every function (the AWS endpoint, credentials and region; Powertools' namespace and log
level), and puts back what was there when it stops.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.config import DEFAULT_API_PLANS, ApiPlan
from local import handlers
from local.aws import BACKENDS, LocalAws, MotoServer, free_port
from local.console import LOG_FORMATS, ConsoleLogs
from local.knot import KnotServer, install_knot
from local.mailu import MailuStandIn, ensure_installed, install_packages
from local.nexthop import RefusingNextHop
from local.provision import LocalResources, provision
from local.seed import (
    ImapAccount,
    RelayAccount,
    SeededTenant,
    publish_and_verify,
    register_mailbox,
    seed_tenant,
)
from petrel import resources as r
from petrel.models.records import Tenant
from petrel.services.tenants import MAX_AGE_HOURS_CEILING

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from local.front import ApiFront
    from local.lambda_runtime import FairBuffer, QueuePump
    from local.localstack import LocalStack
    from local.scheduler import ScheduleFirer
    from local.timer import Every
    from petrel.container.admin import AdminContainer
    from petrel.container.admin_api import AdminApiContainer
    from petrel.container.api import ApiContainer
    from petrel.container.authorizer import AuthorizerContainer
    from petrel.container.domains import DomainCheckContainer
    from petrel.container.ingest import IngestContainer
    from petrel.container.poller import PollerContainer
    from petrel.container.sweeper import SweeperContainer
    from petrel.container.worker import WorkerContainer
    from petrel.models.records import Mailbox
    from petrel.services.domains import DomainDeps

log = logging.getLogger("petrel.local")
FUNCTIONS = (
    "api",
    "authorizer",
    "send-worker",
    "sweeper",
    "imap-poller",
    "ingest-worker",
    "admin-api",
    "domain-checker",
)
# The AWS services Petrel's functions, its CLI and the local stack call: local.json names each one's endpoint.
SERVICES = ("dynamodb", "iam", "s3", "scheduler", "secretsmanager", "sqs", "sts")


@dataclass(frozen=True)
class LocalConfig:
    """Embedded defaults: `make run` needs no configuration."""

    workdir: Path
    host: str = "127.0.0.1"
    api_port: int = 8080
    prefix: str = "petrel-local"
    # The demo tenant's own domain: it sends from demo@ and reads two mailboxes there, bounces@ (where the
    # VERP return path bounces+<message id>@ ends) and demo@ (its inbox, where replies arrive). Petrel
    # delivers mail to a domain where the tenant has a mailbox locally, without SMTP.
    domain: str = "petrel.test"
    # An outside recipient's domain that the stand-in also hosts: the test mailbox (inbox@) is there, so
    # mail to it is relayed, delivered by Postfix and answered by a success report (NOTIFY=SUCCESS).
    recipient_domain: str = "recipient.test"
    # A domain the stand-in routes to the refusing next hop (local.nexthop): Postfix takes a recipient
    # there with 250, is refused with 550 5.1.1, and bounces the message with a real report.
    refusing_domain: str = "refuse.test"
    # Powertools' log level for every function (POWERTOOLS_LOG_LEVEL); `make run LOG_LEVEL=...`.
    log_level: str = "INFO"
    # How the functions' log lines read: "json" (Powertools' JSON, as on Lambda) or "text" (one short
    # line each, local.console; `make run` uses it unless LOG_FORMAT=json).
    log_format: str = "json"
    # Where AWS is: "moto" (moto's server for every service) or "localstack" (LocalStack from
    # .localstack/venv for SQS, S3, Secrets Manager, Scheduler, IAM and STS; moto's server for DynamoDB,
    # whose LocalStack implementation needs Java). `make run BACKEND=localstack`.
    backend: str = "moto"
    # The worker's knobs, shortened so that what takes hours deployed takes seconds here.
    # The retry ladder (PETREL_RETRY_DELAYS: seconds after the 1st, 2nd, ... failed attempt, the last
    # repeating; deployed it is 1 m, 5 m, 15 m, 1 h, ...): a deferred message comes back while you watch.
    retry_delays: str = "2,4,8,15,30,60"
    retry_jitter: float = 0.1  # as deployed (±10 %): schedules of one burst still spread out
    # Seconds a socket operation of an SMTP transaction may take (deployed 30): a stand-in that hangs
    # is noticed (and the message deferred) quickly.
    smtp_timeout_seconds: float = 4.0
    # Seconds a whole SMTP transaction may take, connect to the reply to DATA (deployed 45): a stand-in
    # that trickles its replies a byte at a time cannot hold a worker for longer. With the lease (the
    # invocation's time) below, it leaves an invocation 15 - (6 + 1) = 8 s to start records in.
    smtp_transaction_seconds: float = 6.0
    # How long a worker holds a message it is sending (PETREL_LEASE_SECONDS; deployed 120): longer than
    # a stall at any one SMTP step (smtp_timeout_seconds), so no one else may take it over meanwhile.
    lease_seconds: int = 15
    # The send queues' visibility timeout: longer than the lease, so SQS does not hand a job to a second
    # worker while the first may still hold its lease (that receive would only come back as "retry" and
    # count towards max_receive_count). Retries do not wait on it: they come back through schedules.
    visibility_timeout: int = 20
    # Receives before a job goes to its queue's DLQ: a poison message gets there in about
    # max_receive_count x visibility_timeout (~100 s), not in many minutes. The worker knows it too
    # (PETREL_MAX_RECEIVE_COUNT): on the last receive its message ends `failed`/`worker-error`.
    max_receive_count: int = 5
    # A send worker invocation's time (Lambda's timeout; deployed it equals the lease) and the budget
    # kept at its end (PETREL_INVOCATION_MARGIN_SECONDS): a record starts only while
    # smtp_transaction_seconds + this margin are left; the rest go back to the queue after
    # handback_delay_seconds (PETREL_HANDBACK_DELAY_SECONDS).
    invocation_margin_seconds: float = 1.0
    handback_delay_seconds: int = 1
    batch_size: int = 10
    # Concurrent invocations of the send worker per queue (Lambda's maximum concurrency), as threads.
    workers_per_queue: int = 2
    # The sweeper (deployed: an EventBridge rule every 5 minutes, grace 900 s): how often its timer runs
    # it, and how long past its due time a message's way forward is given before it is put back on its
    # queue (PETREL_SWEEP_GRACE_SECONDS). Longer than the lease and a normal queue backlog; a repair
    # that was not needed only adds a job that finds its attempt done. Every run queries each tenant's
    # creation shard and each due shard, and the embedded moto answers an index query by reading the
    # whole table: a run every 30 s keeps that below a third of its time with the e2e suite's tenants.
    sweep_interval_seconds: float = 30.0
    sweep_grace_seconds: int = 30
    # Jobs on a send queue above which the sweeper leaves that pool's waiting messages alone (deployed
    # 1,000): about what the local workers drain within the grace.
    sweep_backlog_limit: int = 100
    # Entries of waiting messages one run looks at (PETREL_SWEEP_MAX_MESSAGES; deployed 5,000). Behind a
    # backlog each run reads its waiting entries again up to this many: the embedded moto answers each
    # page of the due index by reading the whole table, so here it is kept to a few pages.
    sweep_max_messages: int = 500
    # The tenants' API plans, as cdk.json's `api_plans` (infra.config; the same defaults): the front
    # throttles each tenant by its plan's rate and burst, as API Gateway's usage plans do deployed.
    api_plans: Mapping[str, ApiPlan] = field(default_factory=lambda: dict(DEFAULT_API_PLANS))
    # How often the schedule firer looks for due schedules (moto stores them, never fires them).
    schedule_poll_seconds: float = 0.25
    # How long a worker keeps tenant configuration (servers, passwords, domains; deployed 60 s), and the
    # API's send routes what lets an email through (deployed 5 s): short, so a change made with the CLI
    # shows within seconds; a refused password is re-read at once anyway.
    config_cache_seconds: float = 2.0
    # The IMAP poller (deployed: an EventBridge rule every minute): how often its timer runs it, its
    # invocation's time (Lambda's timeout), the time it keeps at the end of one (no new batch starts
    # within it: PETREL_INVOCATION_MARGIN_SECONDS) and each IMAP operation's timeout.
    poll_seconds: float = 3.0
    poll_timeout_seconds: int = 30
    poll_margin_seconds: float = 5.0
    imap_timeout_seconds: float = 5.0
    # The ingest worker: concurrent invocations on the ingest queue (threads), and each one's time.
    ingest_workers: int = 1
    ingest_timeout_seconds: int = 15
    # The domain checker (deployed: a scheduled rule): how often its timer re-checks every sending domain's
    # DNS records in the local DNS server (Knot), so a record removed there fails its domain within a minute.
    domain_check_seconds: float = 60.0
    # The local environment's max_message_age_hours (a deployed one's is cdk.json's, infra.config): the
    # longest max_age_hours the admin API (and the bootstrapping container) lets a tenant have. Like a
    # cdk.json environment that does not set it: a tenant's default max_age_hours.
    max_message_age_hours: int = Tenant.model_fields["max_age_hours"].default

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r} (one of {', '.join(BACKENDS)})")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {self.log_format!r} (one of {', '.join(LOG_FORMATS)})")
        if len({self.domain, self.recipient_domain, self.refusing_domain}) != 3:
            raise ValueError("domain, recipient_domain and refusing_domain must be three different domains")
        if self.poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, not {self.poll_seconds}")
        if not 1 <= self.max_message_age_hours <= MAX_AGE_HOURS_CEILING:
            raise ValueError(
                f"max_message_age_hours must be between 1 and {MAX_AGE_HOURS_CEILING}, not {self.max_message_age_hours}"
            )

    @property
    def bounce_recipient(self) -> str:
        """An address whose mail Postfix accepts and then bounces with a real DSN (the refusing next hop)."""
        return f"nobody@{self.refusing_domain}"

    def worker_environment(self) -> dict[str, str]:
        """What the send worker reads (petrel.settings.SendWorkerSettings) that is not a resource name."""
        return {
            r.RETRY_DELAYS_ENV: self.retry_delays,
            r.RETRY_JITTER_ENV: str(self.retry_jitter),
            r.LEASE_SECONDS_ENV: str(self.lease_seconds),
            r.SMTP_TIMEOUT_ENV: str(self.smtp_timeout_seconds),
            r.SMTP_TRANSACTION_ENV: str(self.smtp_transaction_seconds),
            r.CONFIG_CACHE_ENV: str(self.config_cache_seconds),
            r.MAX_RECEIVE_COUNT_ENV: str(self.max_receive_count),
            r.INVOCATION_MARGIN_ENV: str(self.invocation_margin_seconds),
            r.HANDBACK_DELAY_ENV: str(self.handback_delay_seconds),
            # A person reads the local console: a line for every attempt, relayed ones too.
            r.LOG_EACH_ATTEMPT_ENV: "true",
            # No session kept from one invocation to the next: the stand-in MailU's users are Postfix
            # lookup tables, which a session open before a user was added never re-reads (a real
            # MailU's database is read by every session). Within an invocation sessions are shared.
            r.KEEP_SESSIONS_ENV: "false",
        }

    def poller_environment(self) -> dict[str, str]:
        """What the IMAP poller reads (petrel.settings.PollerSettings) that is not a resource name."""
        return {
            r.IMAP_TIMEOUT_ENV: str(self.imap_timeout_seconds),
            r.INVOCATION_MARGIN_ENV: str(self.poll_margin_seconds),
        }

    def ingest_environment(self) -> dict[str, str]:
        """What the ingest worker reads (petrel.settings.IngestWorkerSettings) that is not a resource name:
        the ingest queue's receive count (provisioned like the send queues'), so it knows its last try."""
        return {r.MAX_RECEIVE_COUNT_ENV: str(self.max_receive_count)}

    def sweeper_environment(self) -> dict[str, str]:
        """What the sweeper reads (petrel.settings.SweeperSettings) that is not a resource name."""
        return {
            r.SWEEP_GRACE_ENV: str(self.sweep_grace_seconds),
            r.SWEEP_BACKLOG_LIMIT_ENV: str(self.sweep_backlog_limit),
            r.SWEEP_MAX_MESSAGES_ENV: str(self.sweep_max_messages),
        }

    def admin_api_environment(self) -> dict[str, str]:
        """What the admin API reads (petrel.settings.AdminApiSettings) that is not a resource name: the
        bound of a tenant's max_age_hours, as infra's construct sets it from cdk.json deployed."""
        return {
            r.MAX_MESSAGE_AGE_HOURS_ENV: str(self.max_message_age_hours),
            # The plan names a tenant may be given; no usage plan ids: the front throttles locally.
            r.API_PLANS_ENV: json.dumps({name: "" for name in sorted(self.api_plans)}),
            r.USAGE_KEY_PREFIX_ENV: self.prefix,
        }

    def environments(self, resources: LocalResources) -> dict[str, dict[str, str]]:
        """Each function's own environment, as its CDK construct sets it deployed: the resources' names
        and the function's own knobs. A new dict each: no function sees another's."""
        names = resources.environment()
        return {
            "api": names | {r.SENDER_CACHE_ENV: str(self.config_cache_seconds)},
            "authorizer": names | {r.USAGE_KEY_PREFIX_ENV: self.prefix},
            "send-worker": names | self.worker_environment(),
            "sweeper": names | self.sweeper_environment(),
            "imap-poller": names | self.poller_environment(),
            "ingest-worker": names | self.ingest_environment(),
            # The admin API (behind the front's SigV4 check): the API's names, and max_age_hours' bound.
            "admin-api": names | self.admin_api_environment(),
            "domain-checker": dict(names),
        }

    def process_environment(self) -> dict[str, str]:
        """What Powertools reads from the process environment, the same for every function."""
        return {
            r.POWERTOOLS_METRICS_NAMESPACE_ENV: r.METRICS_NAMESPACE,
            r.POWERTOOLS_LOG_LEVEL_ENV: self.log_level.upper(),
        }


def _plan_reader(authorizer: AuthorizerContainer) -> Callable[[str], str | None]:
    """A tenant's API plan from the tenants table the authorizer reads (None: no such tenant)."""

    def plan_of(tenant_id: str) -> str | None:
        tenant = authorizer.tenants.get_tenant(tenant_id)
        return tenant.api_plan if tenant is not None else None

    return plan_of


class ProcessEnvironment:
    """Changes to os.environ that can be undone exactly: `set` remembers each variable's old value the
    first time it changes it; `restore` puts every one back (or removes it)."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()


@dataclass(frozen=True)
class LocalFunctions:
    """The functions of the running platform, each with its container and handler."""

    api: handlers.LocalFunction[ApiContainer]
    authorizer: handlers.LocalFunction[AuthorizerContainer]
    worker: handlers.LocalFunction[WorkerContainer]
    sweeper: handlers.LocalFunction[SweeperContainer]
    poller: handlers.LocalFunction[PollerContainer]
    ingest: handlers.LocalFunction[IngestContainer]
    admin: handlers.LocalFunction[AdminApiContainer]
    domain_checker: handlers.LocalFunction[DomainCheckContainer]

    def all(self) -> tuple[handlers.LocalFunction[Any], ...]:
        return (
            self.api,
            self.authorizer,
            self.worker,
            self.sweeper,
            self.poller,
            self.ingest,
            self.admin,
            self.domain_checker,
        )


class LocalPlatform:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.workdir = config.workdir.absolute()
        self.mailu = MailuStandIn(self.workdir / "mailu", domain=config.domain)
        self.next_hop = RefusingNextHop(host=config.host, hostname=f"mx.{config.refusing_domain}")
        # The authoritative DNS server of the sending domains' records (local.knot): every function asks it.
        self.dns = KnotServer(self.workdir / "knot", host=config.host)
        self.relay_password = secrets.token_urlsafe(18)
        self.aws: LocalAws | None = None
        self.resources: LocalResources | None = None
        self.functions: LocalFunctions | None = None
        self.admin: AdminContainer | None = None
        self.info: dict[str, Any] = {}
        self._moto = MotoServer(config.host, self.workdir / "moto.log")
        self._localstack: LocalStack | None = None
        self._console = ConsoleLogs()
        self._environment = ProcessEnvironment()
        self._front: ApiFront | None = None
        self._pumps: list[QueuePump] = []
        self._buffers: list[FairBuffer] = []
        self._timers: list[ScheduleFirer | Every] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start everything afresh (the stand-in's old mail and queue are deleted, moto starts empty),
        seed the demo tenant and write local.json; returns what local.json holds."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # Postfix and Dovecot run as their own users below it
        missing = ensure_installed()
        if missing:
            log.warning("installing the MailU stand-in (missing: %s)", ", ".join(missing))
            install_packages()
        self.next_hop.start()
        self.mailu.route_domain(self.config.refusing_domain, self.next_hop.host, self.next_hop.port)
        self.mailu.start()  # stops what a killed earlier run left in this work dir first
        install_knot()  # a no-op when knotd is there
        self.dns.start()  # afresh: no zones until the seed publishes the demo domain's
        self.aws = self._start_aws()
        self._environment.set(self.aws.environment() | self.config.process_environment())
        self.resources = replace(self._provision(self.aws), dns_resolvers=self.dns.address)
        self.admin = self._admin(self.aws, self.resources)
        self.functions = self._build_functions(self.aws, self.resources)
        if self.config.log_format == "text":
            self._console.install(self._loggers(self.functions))
        self._start_drivers(self.aws, self.resources, self.functions)
        self.info = self._seed(self.aws, self.resources)
        state = self.workdir / "local.json"
        state.write_text(json.dumps(self.info, indent=2) + "\n")
        os.chmod(state, 0o600)
        return self.info

    def stop(self) -> None:
        """Stop in order, each part before what it calls: the front (no new requests), the timers
        (the schedule firer, the sweeper and the poller), the queue pumps (each finishes its invocation),
        then moto, LocalStack, the stand-in and its next hop. Nothing is left polling a server that is gone,
        so a stop prints nothing: the functions' work still in flight (a poll, an ingest) finishes
        without its INFO line."""
        if self.functions is not None:
            self._console.quiet(self._loggers(self.functions))
        if self._front is not None:
            self._front.stop()
            self._front = None
        for group in (self._timers, self._pumps):
            threads: list[Any] = list(group)
            for thread in threads:
                thread.stop()
            for thread in threads:
                thread.join(timeout=max(self.config.lease_seconds, self.config.poll_timeout_seconds) + 5)
            group.clear()
        for buffer in self._buffers:  # what the pumps received ahead is visible again at once
            buffer.release()
        self._buffers.clear()
        self._moto.stop()
        if self._localstack is not None:
            self._localstack.stop()
            self._localstack = None
        self.mailu.stop()
        self.next_hop.stop()
        self.dns.stop()
        self._console.restore()
        self._environment.restore()
        self.functions = None

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests and the CLI reach ----------------------------------------------------------
    @property
    def relay_account(self) -> RelayAccount:
        """The stand-in's relay account: what a tenant's SMTP server should use to send through it."""
        return RelayAccount(
            host=self.mailu.host,
            port=self.mailu.submission_port,
            username=f"relay@{self.config.domain}",
            password=self.relay_password,
            ca_bundle=self.mailu.ca_pem,
        )

    def running(self) -> LocalFunctions:
        if self.functions is None:
            raise RuntimeError("the local platform is not running")
        return self.functions

    # -- pieces --------------------------------------------------------------------------------
    def _start_aws(self) -> LocalAws:
        """moto's server, and with the LocalStack backend LocalStack too (afresh: its state directory is
        emptied first), each service's calls sent to the one that serves it."""
        moto = self._moto.start()
        if self.config.backend != "localstack":
            return moto
        from local.localstack import SERVICES as LOCALSTACK_SERVICES
        from local.localstack import LocalStack

        data_dir = self.workdir / "localstack"
        shutil.rmtree(data_dir, ignore_errors=True)
        self._localstack = LocalStack(port=free_port(self.config.host), data_dir=data_dir, host=self.config.host)
        self._localstack.start()
        return LocalAws(
            moto.endpoint_url,
            region=moto.region,
            service_endpoints=dict.fromkeys(LOCALSTACK_SERVICES, self._localstack.endpoint),
            backend="localstack",
        )

    @staticmethod
    def _loggers(functions: LocalFunctions) -> list[Logger]:
        """Each function's Powertools logger (its container's telemetry)."""
        return [function.container.telemetry.logger for function in functions.all()]

    def _provision(self, aws: LocalAws) -> LocalResources:
        if self.config.visibility_timeout <= self.config.lease_seconds:
            log.warning(
                "visibility timeout %d s is not longer than the lease (%d s): SQS may redeliver a job that a "
                "worker still holds",
                self.config.visibility_timeout,
                self.config.lease_seconds,
            )
        return provision(
            aws.client("dynamodb"),
            aws.client("sqs"),
            aws.client("s3"),
            prefix=self.config.prefix,
            visibility_timeout=self.config.visibility_timeout,
            max_receive_count=self.config.max_receive_count,
            scheduler=aws.client("scheduler"),
            iam=aws.client("iam"),
        )

    def _admin(self, aws: LocalAws, resources: LocalResources) -> AdminContainer:
        from petrel.container.admin import AdminContainer

        settings = resources.admin_settings(
            max_age_hours_limit=self.config.max_message_age_hours,
            region=aws.region,
            endpoint_url=aws.endpoint_url,
            service_endpoint_urls=dict(aws.service_endpoints),
        )
        return AdminContainer(settings, clients=aws.clients())

    def _build_functions(self, aws: LocalAws, resources: LocalResources) -> LocalFunctions:
        env = self.config.environments(resources)
        return LocalFunctions(
            api=handlers.api(env["api"], aws.clients()),
            authorizer=handlers.authorizer(env["authorizer"], aws.clients()),
            worker=handlers.worker(env["send-worker"], aws.clients()),
            sweeper=handlers.sweeper(env["sweeper"], aws.clients()),
            poller=handlers.poller(env["imap-poller"], aws.clients()),
            ingest=handlers.ingest_worker(env["ingest-worker"], aws.clients()),
            admin=handlers.admin_api(env["admin-api"], aws.clients()),
            domain_checker=handlers.domain_checker(env["domain-checker"], aws.clients()),
        )

    def _start_drivers(self, aws: LocalAws, resources: LocalResources, functions: LocalFunctions) -> None:
        """What invokes the functions deployed: API Gateway, the SQS event sources, Scheduler, the rule."""
        from local.aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY
        from local.front import ApiFront, PlanLimits, TenantThrottle
        from local.lambda_runtime import FairBuffer, QueuePump
        from local.scheduler import ScheduleFirer
        from local.sigv4 import SigningCredentials
        from local.timer import Every

        self._front = ApiFront(
            self.config.host,
            self.config.api_port,
            functions.authorizer.handler,
            functions.api.handler,
            # /v1/admin: the admin function, behind the SigV4 check with the stack's own credentials.
            admin=functions.admin.handler,
            credentials=SigningCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY, aws.region),
            # Each tenant limited by its API plan, its plan read from the tenants table (as deployed,
            # where API Gateway reads the usage plan its key is in).
            throttle=TenantThrottle(
                {name: PlanLimits(plan.rate_per_second, plan.burst) for name, plan in self.config.api_plans.items()},
                _plan_reader(functions.authorizer.container),
            ),
        )
        self._front.start()
        sqs = aws.client("sqs")
        for queue in r.SEND_QUEUES:
            # One buffer per send queue, shared by its pumps: the fair-queue view SQS has of the backlog.
            buffer = FairBuffer(sqs, resources.queue_urls[queue.name])
            self._buffers.append(buffer)
            for _ in range(self.config.workers_per_queue):
                pump = QueuePump(
                    sqs,
                    resources.queue_urls[queue.name],
                    resources.queue_arns[queue.name],
                    functions.worker.handler,
                    function_name=f"send-worker-{queue.name}",
                    batch_size=self.config.batch_size,
                    timeout_seconds=self.config.lease_seconds,  # as deployed: the lease lasts the invocation
                    buffer=buffer,
                )
                pump.start()
                self._pumps.append(pump)
        # The ingest queue's event source: the ingest worker takes what the poller, POST /v1/inbound/raw
        # and the send worker's local deliveries put there.
        for _ in range(self.config.ingest_workers):
            pump = QueuePump(
                sqs,
                resources.queue_urls[r.INGEST.name],
                resources.queue_arns[r.INGEST.name],
                functions.ingest.handler,
                function_name="ingest-worker",
                batch_size=self.config.batch_size,
                timeout_seconds=self.config.ingest_timeout_seconds,
            )
            pump.start()
            self._pumps.append(pump)
        # What EventBridge Scheduler does deployed: put due retries (and send_at releases) on their queue.
        firer = ScheduleFirer(
            aws.client("scheduler"), sqs, resources.schedule_group, poll_seconds=self.config.schedule_poll_seconds
        )
        # What the sweeper's EventBridge rule does deployed: repair messages whose way forward was lost.
        sweeper = Every(
            functions.sweeper.handler, interval_seconds=self.config.sweep_interval_seconds, function_name="sweeper"
        )
        # What the poller's EventBridge rule does deployed: read every tenant's registered mailboxes.
        poller = Every(
            functions.poller.handler,
            interval_seconds=self.config.poll_seconds,
            function_name="imap-poller",
            timeout_seconds=self.config.poll_timeout_seconds,
        )
        # What the domain checker's rule does deployed: re-check every domain's records (drift).
        domain_checker = Every(
            functions.domain_checker.handler,
            interval_seconds=self.config.domain_check_seconds,
            function_name="domain-checker",
        )
        for timer in (firer, sweeper, poller, domain_checker):
            timer.start()
            self._timers.append(timer)

    def _seed(self, aws: LocalAws, resources: LocalResources) -> dict[str, Any]:
        """A demo tenant whose SMTP server is the stand-in, with its bounce mailbox and its inbox registered
        for the poller, and a test mailbox on another domain that receives what the demo tenant sends."""
        assert self.admin is not None and self._front is not None
        domain = self.config.domain
        relay = self.relay_account
        inbox = f"inbox@{self.config.recipient_domain}"
        inbox_password = secrets.token_urlsafe(18)
        tenant_boxes = {f"bounces@{domain}": secrets.token_urlsafe(18), f"demo@{domain}": secrets.token_urlsafe(18)}
        self.mailu.add_users({relay.username: relay.password, inbox: inbox_password} | tenant_boxes)
        demo = seed_tenant(self.admin.admin, "Demo", domain=domain, relay=relay, key_name="local demo")
        self._publish_demo_domain(demo, resources)
        mailboxes = [
            register_mailbox(self.admin.mailbox_admin, demo.tenant_id, self._imap_account(address, password))
            for address, password in tenant_boxes.items()
        ]
        return self._state(demo, aws, resources, inbox=inbox, inbox_password=inbox_password, mailboxes=mailboxes)

    def domain_deps(self, resources: LocalResources) -> DomainDeps:
        """The domain service on the local stores, looking records up in the local DNS server."""
        from petrel.adapters.dns import DnsPythonResolver
        from petrel.services.domains import DomainDeps

        assert self.admin is not None
        return DomainDeps(
            tenants=self.admin.tenants,
            secrets=self.admin.secrets,
            resolver=DnsPythonResolver([(self.dns.host, self.dns.port)], timeout=2.0),
            clock=self.admin.clock,
            secrets_prefix=resources.secrets_prefix,
            mailboxes=self.admin.mailboxes,
        )

    def _publish_demo_domain(self, demo: SeededTenant, resources: LocalResources) -> None:
        """The demo domain's records into the local DNS server, then verified: the demo tenant sends
        signed mail from a verified domain out of the box."""
        domain = publish_and_verify(self.domain_deps(resources), self.dns.client, demo.tenant_id, demo.domain)
        if not domain.sendable:
            failing = [f"{r.purpose} {r.status}" for r in domain.records if r.required and r.status != "verified"]
            log.warning(
                "the demo domain %s is %s after publishing its records: %s", demo.domain, domain.status, failing
            )

    def _imap_account(self, address: str, password: str) -> ImapAccount:
        """A stand-in user as the poller reads it: IMAPS, verified against the stand-in's CA."""
        return ImapAccount(
            address=address,
            password=password,
            host=self.mailu.host,
            port=self.mailu.imaps_port,
            security="tls",
            ca_bundle=self.mailu.ca_pem,
        )

    def _state(
        self,
        demo: SeededTenant,
        aws: LocalAws,
        resources: LocalResources,
        *,
        inbox: str,
        inbox_password: str,
        mailboxes: list[Mailbox],
    ) -> dict[str, Any]:
        """local.json: the demo tenant and its mailboxes, the test mailbox, where mail bounces, the
        stand-in's relay account, the AWS names."""
        assert self._front is not None
        relay = self.relay_account
        return {
            "backend": aws.backend,
            "api_url": self._front.url,
            "api_key": demo.api_key,
            "tenant_id": demo.tenant_id,
            "server_id": demo.server_id,
            "from_address": demo.address("demo"),
            # Mail to it is accepted by the stand-in, refused by its next hop and bounced by Postfix with a
            # real DSN to the VERP address: the message ends `bounced` (5.1.1) once the poller reads it.
            "bounce_recipient": self.config.bounce_recipient,
            # How often the poller reads the mailboxes below (seconds).
            "poll_seconds": self.config.poll_seconds,
            # The demo tenant's registered mailboxes (passwords in Secrets Manager only).
            "mailboxes": [
                {"mailbox_id": box.mailbox_id, "address": box.address, "folders": list(box.folders)}
                for box in mailboxes
            ],
            "test_mailbox": {
                "address": inbox,
                "imap_host": self.mailu.host,
                "imap_port": self.mailu.imaps_port,
                "imap_security": "tls",
                "username": inbox,
                "password": inbox_password,
                "ca_file": str(self.mailu.ca_file),
            },
            "smtp_server": {
                "host": self.mailu.host,
                "submission_port": self.mailu.submission_port,
                "smtps_port": self.mailu.smtps_port,
                "username": relay.username,
            },
            # What a new tenant's server needs to relay through the stand-in (`petrel server add`):
            # host, port and security, the relay account's username and password, and the CA to trust.
            "relay": {
                "host": relay.host,
                "port": relay.port,
                "security": relay.security,
                "username": relay.username,
                "password": relay.password,
                "ca_file": str(self.mailu.ca_file),
                "domain": self.config.domain,
            },
            # The local DNS server (Knot) every function asks: its address, and what `petrel dns publish`
            # needs to change its zones (the TSIG key and the control socket).
            "dns": self.dns.info(),
            "aws": {
                "endpoint_url": aws.endpoint_url,
                # Each service's endpoint (LocalStack's for some with the LocalStack backend); the CLI's
                # `--env local` follows them.
                "endpoint_urls": {service: aws.endpoint_for(service) for service in SERVICES},
                "region": aws.region,
                "prefix": resources.prefix,
                "tables": resources.tables,
                "queues": resources.queue_urls,
                # Dead-letter queues by the name `petrel dlq` takes: each queue's (send and ingest), and the
                # schedules'.
                "dlqs": {**resources.dlq_urls, r.SCHEDULES.group: resources.schedules_dlq_url},
                "schedules": {
                    "group": resources.schedule_group,
                    "role_arn": resources.scheduler_role_arn,
                    "dlq": resources.schedules_dlq_url,
                },
                "bucket": resources.bucket,
                "secrets_prefix": resources.secrets_prefix,
            },
        }
