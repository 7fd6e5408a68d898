"""The whole platform on 127.0.0.1: embedded AWS (moto server), the MailU stand-in (real Postfix +
Dovecot), the HTTP front, queue pumps and the same Lambda handlers that are deployed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.mailu import MailuStandIn, ensure_installed, install_packages
from local.provision import LocalResources, provision
from petrel import resources as r

log = logging.getLogger("petrel.local")
REGION = "us-east-1"
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalConfig:
    """Embedded defaults: `make run` needs no configuration."""

    workdir: Path
    host: str = "127.0.0.1"
    api_port: int = 8080
    prefix: str = "petrel-local"
    domain: str = "petrel.test"
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
    # that was not needed only adds a job that finds its attempt done.
    sweep_interval_seconds: float = 10.0
    sweep_grace_seconds: int = 30
    # Jobs on a send queue above which the sweeper leaves that pool's waiting messages alone (deployed
    # 1,000): about what the local workers drain within the grace.
    sweep_backlog_limit: int = 100
    # How often the schedule firer looks for due schedules (moto stores them, never fires them).
    schedule_poll_seconds: float = 0.25
    # How long a worker keeps tenant configuration (servers, passwords, domains; deployed 60 s): short,
    # so a change made with the CLI shows within seconds; a refused password is re-read at once anyway.
    config_cache_seconds: float = 2.0

    def worker_environment(self) -> dict[str, str]:
        """What the send worker reads (petrel.settings.SendWorkerSettings) that is not a resource name."""
        return {
            r.RETRY_DELAYS_ENV: self.retry_delays,
            r.RETRY_JITTER_ENV: str(self.retry_jitter),
            "PETREL_LEASE_SECONDS": str(self.lease_seconds),
            "PETREL_SMTP_TIMEOUT_SECONDS": str(self.smtp_timeout_seconds),
            "PETREL_SMTP_TRANSACTION_SECONDS": str(self.smtp_transaction_seconds),
            "PETREL_CONFIG_CACHE_SECONDS": str(self.config_cache_seconds),
            r.SWEEP_GRACE_ENV: str(self.sweep_grace_seconds),
            r.SWEEP_BACKLOG_LIMIT_ENV: str(self.sweep_backlog_limit),
            "PETREL_MAX_RECEIVE_COUNT": str(self.max_receive_count),
            "PETREL_INVOCATION_MARGIN_SECONDS": str(self.invocation_margin_seconds),
            "PETREL_HANDBACK_DELAY_SECONDS": str(self.handback_delay_seconds),
        }


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalPlatform:
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.workdir = config.workdir.absolute()
        self.mailu = MailuStandIn(self.workdir / "mailu", domain=config.domain)
        self._moto: Any = None
        self._front: Any = None
        self._pumps: list[Any] = []
        self.firer: Any = None
        self.sweeper: Any = None
        self.resources: LocalResources | None = None
        self.info: dict[str, Any] = {}
        self.relay_password = secrets.token_urlsafe(18)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # Postfix and Dovecot run as their own users below it
        missing = ensure_installed()
        if missing:
            log.warning("installing the MailU stand-in (missing: %s)", ", ".join(missing))
            install_packages()
        self.mailu.stop()  # a previous run that was killed may have left its daemons
        self.mailu.start()
        self._start_aws()
        self._start_handlers()
        self.info = self._seed()
        (self.workdir / "local.json").write_text(json.dumps(self.info, indent=2) + "\n")
        os.chmod(self.workdir / "local.json", 0o600)
        return self.info

    def stop(self) -> None:
        threads = [*self._pumps, *(t for t in (self.firer, self.sweeper) if t is not None)]
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(timeout=5)
        self._pumps = []
        self.firer = None
        self.sweeper = None
        if self._front is not None:
            self._front.stop()
            self._front = None
        if self._moto is not None:
            self._moto.terminate()
            try:
                self._moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._moto.kill()
                self._moto.wait()
            self._moto = None
        self.mailu.stop()

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pieces --------------------------------------------------------------------------------
    def _start_moto(self) -> int:
        """moto's server in its own process: AWS's side of every call then runs on another core than
        the handlers (in-process, the two share one interpreter lock and halve the stack's throughput)."""
        port = _free_port(self.config.host)
        log_file = (self.workdir / "moto.log").open("ab")
        self._moto = subprocess.Popen(
            [sys.executable, "-m", "local.moto_server", "-H", self.config.host, "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches only this process, which stops the
            # handlers first and the server last (else the pumps' last polls fail on a dead server).
            start_new_session=True,
            cwd=REPOSITORY,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
            },
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._moto.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._moto.returncode}; see {self.workdir / 'moto.log'}")
            try:
                with socket.create_connection((self.config.host, port), timeout=0.2):
                    return port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"moto server did not listen on port {port} within 30 s")

    def _start_aws(self) -> None:
        port = self._start_moto()
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": f"http://{self.config.host}:{port}",
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "POWERTOOLS_METRICS_NAMESPACE": "Petrel",
                "POWERTOOLS_SERVICE_NAME": "petrel-local",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                **self.config.worker_environment(),
            }
        )
        if self.config.visibility_timeout <= self.config.lease_seconds:
            log.warning(
                "visibility timeout %d s is not longer than the lease (%d s): SQS may redeliver a job that a "
                "worker still holds",
                self.config.visibility_timeout,
                self.config.lease_seconds,
            )
        from petrel import container
        from petrel.adapters.aws import client

        container.reset()
        self.resources = provision(
            client("dynamodb"),
            client("sqs"),
            client("s3"),
            prefix=self.config.prefix,
            visibility_timeout=self.config.visibility_timeout,
            max_receive_count=self.config.max_receive_count,
            scheduler=client("scheduler"),
            iam=client("iam"),
        )
        os.environ.update(self.resources.environment())

    def _start_handlers(self) -> None:
        from local.front import ApiFront
        from local.handlers import api_handler, authorizer_handler, sweeper_handler, worker_handler
        from local.lambda_runtime import QueuePump
        from local.scheduler import ScheduleFirer
        from local.timer import Every
        from petrel.adapters.aws import client

        assert self.resources is not None
        self._front = ApiFront(self.config.host, self.config.api_port, authorizer_handler(), api_handler())
        self._front.start()
        sqs = client("sqs")
        for name, url in self.resources.queue_urls.items():
            for _ in range(self.config.workers_per_queue):
                pump = QueuePump(
                    sqs,
                    url,
                    self.resources.queue_arns[name],
                    worker_handler(),
                    function_name=f"send-worker-{name}",
                    batch_size=self.config.batch_size,
                    timeout_seconds=self.config.lease_seconds,  # as deployed: the lease lasts the invocation
                )
                pump.start()
                self._pumps.append(pump)
        # What EventBridge Scheduler does deployed: put due retries (and send_at releases) on their queue.
        self.firer = ScheduleFirer(
            client("scheduler"), sqs, self.resources.schedule_group, poll_seconds=self.config.schedule_poll_seconds
        )
        self.firer.start()
        # What the sweeper's EventBridge rule does deployed: repair messages whose way forward was lost.
        self.sweeper = Every(
            sweeper_handler(), interval_seconds=self.config.sweep_interval_seconds, function_name="sweeper"
        )
        self.sweeper.start()

    def _seed(self) -> dict[str, Any]:
        """A demo tenant whose SMTP server is the stand-in, and a mailbox that receives test mail."""
        from petrel import container
        from petrel.services import tenants as admin

        assert self.resources is not None
        domain = self.config.domain
        relay_user = f"relay@{domain}"
        inbox = f"inbox@{domain}"
        inbox_password = secrets.token_urlsafe(18)
        self.mailu.add_users(
            {relay_user: self.relay_password, inbox: inbox_password, f"bounces@{domain}": secrets.token_urlsafe(18)}
        )
        deps = container.admin_deps(self.resources.tables["tenants"], self.resources.secrets_prefix)
        tenant = admin.create_tenant(deps, "Demo")
        admin.add_domain(deps, tenant.tenant_id, domain)
        server = admin.add_smtp_server(
            deps,
            tenant.tenant_id,
            host=self.mailu.host,
            port=self.mailu.submission_port,
            security="starttls",
            username=relay_user,
            password=self.relay_password,
            ca_bundle=self.mailu.ca_pem,
        )
        key = admin.create_api_key(deps, tenant.tenant_id, "local demo")
        return {
            "api_url": self._front.url,
            "api_key": key.secret,
            "tenant_id": tenant.tenant_id,
            "server_id": server.server_id,
            "from_address": f"demo@{domain}",
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
                "username": relay_user,
            },
            "aws": {
                "endpoint_url": os.environ["AWS_ENDPOINT_URL"],
                "region": REGION,
                "prefix": self.resources.prefix,
                "tables": self.resources.tables,
                "queues": self.resources.queue_urls,
                # Dead-letter queues by the name `petrel dlq` takes: each send queue's, and the schedules'.
                "dlqs": {**self.resources.dlq_urls, r.SCHEDULES.group: self.resources.schedules_dlq_url},
                "schedules": {
                    "group": self.resources.schedule_group,
                    "role_arn": self.resources.scheduler_role_arn,
                    "dlq": self.resources.schedules_dlq_url,
                },
                "bucket": self.resources.bucket,
                "secrets_prefix": self.resources.secrets_prefix,
            },
        }
