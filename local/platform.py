"""The whole platform on 127.0.0.1: embedded AWS (moto server), the MailU stand-in (real Postfix +
Dovecot), the HTTP front, queue pumps and the same Lambda handlers that are deployed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.mailu import MailuStandIn, ensure_installed, install_packages
from local.provision import LocalResources, provision

log = logging.getLogger("petrel.local")
REGION = "us-east-1"


@dataclass(frozen=True)
class LocalConfig:
    """Embedded defaults: `make run` needs no configuration."""

    workdir: Path
    host: str = "127.0.0.1"
    api_port: int = 8080
    prefix: str = "petrel-local"
    domain: str = "petrel.test"
    # Short locally so a deferred message comes back in seconds, not minutes.
    visibility_timeout: int = 5
    max_receive_count: int = 20
    batch_size: int = 10


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
        for pump in self._pumps:
            pump.stop()
        for pump in self._pumps:
            pump.join(timeout=5)
        self._pumps = []
        if self._front is not None:
            self._front.stop()
            self._front = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self.mailu.stop()

    def __enter__(self) -> LocalPlatform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pieces --------------------------------------------------------------------------------
    def _start_aws(self) -> None:
        from moto.server import ThreadedMotoServer

        port = _free_port(self.config.host)
        self._moto = ThreadedMotoServer(ip_address=self.config.host, port=port, verbose=False)
        self._moto.start()
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
                "PETREL_LEASE_SECONDS": "60",
                "PETREL_SMTP_TIMEOUT_SECONDS": "10",
                "PETREL_CONFIG_CACHE_SECONDS": "0",
            }
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
        )
        os.environ.update(self.resources.environment())

    def _start_handlers(self) -> None:
        from local.front import ApiFront
        from local.handlers import api_handler, authorizer_handler, worker_handler
        from local.lambda_runtime import QueuePump
        from petrel.adapters.aws import client

        assert self.resources is not None
        self._front = ApiFront(self.config.host, self.config.api_port, authorizer_handler(), api_handler())
        self._front.start()
        sqs = client("sqs")
        for name, url in self.resources.queue_urls.items():
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            pump = QueuePump(
                sqs, url, arn, worker_handler(), function_name=f"send-worker-{name}", batch_size=self.config.batch_size
            )
            pump.start()
            self._pumps.append(pump)

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
                "dlqs": self.resources.dlq_urls,
                "bucket": self.resources.bucket,
                "secrets_prefix": self.resources.secrets_prefix,
            },
        }
