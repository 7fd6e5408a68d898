"""Embedded AWS for the local stack: moto's server in a process of its own (and, with the LocalStack
backend, LocalStack for the services it serves), and boto3 sessions bound to them explicitly (endpoint
per service, region, credentials), so nothing here depends on the caller's AWS settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3

    from petrel.container.base import AwsClients

REGION = "us-east-1"
REPOSITORY = Path(__file__).resolve().parent.parent
# The backends `make run BACKEND=...` knows: moto for every service, or LocalStack for the services it
# serves without Docker (local.localstack.SERVICES) and moto's server for the rest (DynamoDB).
BACKENDS = ("moto", "localstack")
# moto and LocalStack take any credentials; these say where they come from.
ACCESS_KEY_ID = "local"
SECRET_ACCESS_KEY = "local"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LocalAws:
    """The embedded AWS endpoints; every session and client of the local stack is built here.

    `endpoint_url` serves every service (moto's server); `service_endpoints` sends some services
    elsewhere (LocalStack's SQS, S3, Secrets Manager, Scheduler, IAM, STS with the LocalStack backend).
    """

    endpoint_url: str
    region: str = REGION
    service_endpoints: Mapping[str, str] = field(default_factory=dict)
    backend: str = "moto"

    def endpoint_for(self, service: str) -> str:
        """Where `service`'s calls go."""
        return self.service_endpoints.get(service, self.endpoint_url)

    def endpoints(self) -> dict[str, str]:
        """Every endpoint the stack uses, by service (those not named here go to `endpoint_url`)."""
        return {service: self.endpoint_for(service) for service in self._services}

    def environment(self) -> dict[str, str]:
        """The standard AWS_* variables that point boto3 at these endpoints (for a child process, or for
        code that still builds clients from the process environment): AWS_ENDPOINT_URL for all, and
        AWS_ENDPOINT_URL_<SERVICE> for each service that goes elsewhere."""
        overrides = {_endpoint_variable(service): url for service, url in self.service_endpoints.items()}
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **overrides,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def session(self) -> boto3.session.Session:
        """A new session with this endpoint's region and credentials (one per container, as on Lambda)."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=self.region
        )

    def clients(self) -> AwsClients:
        """A container's clients: one new session, every service on its endpoint."""
        from petrel.container.base import AwsClients

        return AwsClients(self.session(), endpoint_urls=self.endpoints())

    def client(self, service: str) -> Any:
        """A client of `service` on a session of its own (provisioning, tests' inspections)."""
        return self.session().client(service, endpoint_url=self.endpoint_for(service))  # type: ignore[call-overload]

    @cached_property
    def _services(self) -> tuple[str, ...]:
        return tuple(self.session().get_available_services())


def _endpoint_variable(service: str) -> str:
    """boto3's per-service endpoint variable: AWS_ENDPOINT_URL_<service id, upper case, `_` for spaces>
    (Secrets Manager's service id is "Secrets Manager": AWS_ENDPOINT_URL_SECRETS_MANAGER)."""
    from local.localstack import ENDPOINT_VARIABLES

    return ENDPOINT_VARIABLES.get(service) or f"AWS_ENDPOINT_URL_{service.upper()}"


class MotoServer:
    """moto's server in its own process: AWS's side of every call then runs on another core than the
    handlers (in-process, the two share one interpreter lock and halve the stack's throughput)."""

    def __init__(self, host: str, log_file: Path) -> None:
        self.host = host
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalAws:
        port = free_port(self.host)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "local.moto_server", "-H", self.host, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C in the terminal signals only the stack's process group, which
                # stops the handlers first and this server last (else their last polls fail on a dead server).
                start_new_session=True,
                cwd=REPOSITORY,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
                },
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}; see {self.log_file}")
            try:
                with socket.create_connection((self.host, port), timeout=0.2):
                    return LocalAws(f"http://{self.host}:{port}")
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not listen on port {port} within {timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
