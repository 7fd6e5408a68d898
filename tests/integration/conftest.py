"""Integration fixtures: a private CA, scripted SMTP submission servers on 127.0.0.1, a boto3 session for moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3
import pytest

from local.tls import TlsFiles, make_tls_files
from tests.integration.aws_env import REGION, clean_aws_environment
from tests.integration.smtp_server import RunningServer, start_server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_servers(tls_files: TlsFiles) -> Iterator[Callable[..., RunningServer]]:
    """Start servers with `smtp_servers(security="starttls" | "tls", dsn=False, pipelining=False)`; all stop
    after the test."""
    started: list[RunningServer] = []

    def start(security: str = "starttls", dsn: bool = False, pipelining: bool = False) -> RunningServer:
        server = start_server(tls_files, security=security, dsn=dsn, pipelining=pipelining)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def submission_server(smtp_servers: Callable[..., RunningServer]) -> RunningServer:
    """A STARTTLS + AUTH submission server (MailU's port 587)."""
    return smtp_servers("starttls")


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    """One session for the run: clients built from it load their service models once (about 0.15 s each).

    Build clients from it only where `clean_aws_environment` is in force (it reads the environment then).
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        clean_aws_environment(monkeypatch)
        return boto3.session.Session(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
