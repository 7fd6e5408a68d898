"""LocalStack's free edition, without Docker, as a local AWS for SQS, S3, Secrets Manager and EventBridge
Scheduler.

Its Scheduler only stores schedules, like moto's (measured with 2026.3.0: an `at(...)` and a
`rate(1 minute)` schedule with an SQS target never fired in 75 s; LocalStack documents it as "mocked
functionality"), so the local ScheduleFirer (local/scheduler.py) fires them here too.

LocalStack runs from its own venv (`make localstack` builds `.localstack/venv` from
requirements-localstack.txt on Python >= 3.12), so its pins (its own boto3, moto-ext, ...) never meet
the project's. It is started as a child process on a loopback port, with its state under a directory
of its own and an environment of its own (nothing of the caller's AWS settings), and is stopped with
its whole process group.

What it needs besides its `[runtime]` extra (NOTES' recipe, re-measured): `GATEWAY_SERVER=hypercorn`,
`DNS_ADDRESS=0` (no DNS server on port 53), a certificate of ours at `CUSTOM_SSL_CERT_PATH` (its own
generator calls `X509.add_extensions`, which pyOpenSSL 26 removed, and crashes at start),
`SQS_ENDPOINT_STRATEGY=path` (queue URLs on 127.0.0.1, not on a name only public DNS resolves), and
`FILESYSTEM_ROOT`/`TMPDIR` so that nothing is written next to its installed package or in the shared /tmp.

    python -m local.localstack --port 4566 --data-dir .petrel/localstack
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".localstack" / "venv"
PYTHON_ENV = "PETREL_LOCALSTACK_PYTHON"  # another interpreter with localstack-core installed
# What Petrel asks of it; DynamoDB (it downloads Java at run time) and Lambda (Docker) are not among them.
SERVICES = ("sqs", "s3", "secretsmanager", "scheduler", "iam", "sts")
# The per-service endpoint variables boto3 reads (AWS_ENDPOINT_URL_<SERVICE>).
ENDPOINT_VARIABLES = {
    "sqs": "AWS_ENDPOINT_URL_SQS",
    "s3": "AWS_ENDPOINT_URL_S3",
    "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "scheduler": "AWS_ENDPOINT_URL_SCHEDULER",
    "iam": "AWS_ENDPOINT_URL_IAM",
    "sts": "AWS_ENDPOINT_URL_STS",
}


class LocalStackError(RuntimeError):
    """LocalStack is not installed, did not start, or stopped serving."""


def localstack_python() -> Path:
    """The interpreter of LocalStack's own venv (or `$PETREL_LOCALSTACK_PYTHON`); an error that says
    how to install it when there is none."""
    configured = os.environ.get(PYTHON_ENV)
    python = Path(configured) if configured else VENV / "bin" / "python"
    if not python.exists():
        raise LocalStackError(f"LocalStack is not installed ({python} is missing): run `make localstack`")
    return python


@dataclass
class LocalStack:
    """One LocalStack process: `start()` returns once every service in `services` says it is available."""

    port: int
    data_dir: Path
    host: str = "127.0.0.1"
    services: tuple[str, ...] = SERVICES
    python: Path = field(default_factory=localstack_python)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "localstack.log"

    def endpoints(self) -> dict[str, str]:
        """AWS_ENDPOINT_URL_<SERVICE> for each service it serves: boto3 sends those services here and
        every other one (DynamoDB) where it would have anyway."""
        return {ENDPOINT_VARIABLES[service]: self.endpoint for service in self.services}

    def environment(self) -> dict[str, str]:
        """The process's whole environment: nothing of the caller's (no AWS_* endpoint or profile leaks in)."""
        tmp = self.data_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "LANG": "C.UTF-8",
            "TMPDIR": str(tmp),
            "FILESYSTEM_ROOT": str(self.data_dir / "filesystem"),
            "GATEWAY_LISTEN": f"{self.host}:{self.port}",
            "LOCALSTACK_HOST": f"{self.host}:{self.port}",
            # Queue URLs on our host and port (`/queue/<region>/<account>/<name>`), not on
            # `sqs.<region>.localhost.localstack.cloud`, a name only public DNS resolves.
            "SQS_ENDPOINT_STRATEGY": "path",
            "GATEWAY_SERVER": "hypercorn",
            "DNS_ADDRESS": "0",
            "SERVICES": ",".join(self.services),
            "CUSTOM_SSL_CERT_PATH": str(self._certificate()),
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",  # no analytics calls home
            # PYTHONDONTWRITEBYTECODE is left out on purpose: .pyc files in its own venv halve its start.
        }

    def _certificate(self) -> Path:
        """Key and certificate in one PEM, as LocalStack reads it (HTTPS on its port; we speak HTTP)."""
        from local.tls import issue_server_certificate  # cryptography's x509: only when starting one

        path = self.data_dir / "server.test.pem"
        if not path.exists():
            issued = issue_server_certificate(ca_common_name="Petrel LocalStack CA", dns_names=["localhost"])
            path.write_text(issued.key_pem + issued.cert_pem)
        return path

    def start(self, timeout: float = 120.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            [str(self.python), "-m", "localstack.runtime.main"],
            env=self.environment(),
            cwd=self.data_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        try:
            self._wait_until_available(timeout)
        except BaseException:
            self.stop()
            raise

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=5) as response:
            found: dict[str, Any] = json.load(response)
            return found

    def health(self) -> dict[str, str]:
        """Each service's state from `/_localstack/health` ("available", "running", "disabled", ...)."""
        services: dict[str, str] = self._get("/_localstack/health").get("services", {})
        return services

    def ready(self) -> bool:
        """Its READY stage is complete (it says `Ready.`) and every service of ours is available."""
        stages = self._get("/_localstack/init").get("completed", {})
        states = self.health()
        return bool(stages.get("READY")) and all(states.get(s) in ("available", "running") for s in self.services)

    def _wait_until_available(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise LocalStackError(f"LocalStack exited with {self._process.returncode}; see {self.log_file}")
            try:
                if self.ready():
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass  # not listening yet
            time.sleep(0.1)
        raise LocalStackError(f"LocalStack did not come up within {timeout:.0f} s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT to its process group (its Ctrl-C path stops in about 1 s; on SIGTERM it once did not stop
        within 20 s here), then SIGKILL if it is still there after `timeout`."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run LocalStack in the foreground until Ctrl-C (prints its endpoint variables once it is up)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".petrel" / "localstack")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with LocalStack(args.port, args.data_dir.absolute()) as localstack:
        print(f"LocalStack up in {time.monotonic() - started:.1f} s at {localstack.endpoint}", file=sys.stderr)
        for name, value in localstack.endpoints().items():
            print(f"export {name}={value}")
        sys.stdout.flush()
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the start: the child must not inherit it
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
