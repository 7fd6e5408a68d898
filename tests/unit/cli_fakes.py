"""The `petrel` command against the admin API in process: an AdminClient whose transport checks the
request's SigV4 signature (local/sigv4.py, as the local front does) and hands it to the admin function's
application (petrel.api.admin) built on the in-memory fakes. No socket; the same bytes a real request
carries (the signed headers, the JSON body), so what a command sends is what the API validates."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.credentials import Credentials

from cli.client import AdminClient, HttpRequest, HttpResponse
from cli.command import Context
from cli.main import parser, run
from cli.output import Output
from cli.target import LOCAL, Target
from local.front import SIGNATURE_PROBLEM
from local.sigv4 import SignatureError, SignedRequest, SigningCredentials, verify
from petrel.api.admin import AdminApiApplication
from petrel.container.admin import AdminSettings
from petrel.models.admin import Step
from petrel.models.records import SmtpServer
from petrel.observability import Telemetry, telemetry
from petrel.ports import MailboxReader
from petrel.services.mailboxes import MailboxDeps
from petrel.services.tenants import AdminDeps
from tests.fakes.dns import FakeResolver
from tests.fakes.usage_plans import FakeUsagePlans
from tests.fakes.world import FakeWorld

REGION = "us-east-1"
BASE_URL = "http://admin.petrel.test"
LOCAL_KEYS = ("local", "local")
SETTINGS = AdminSettings(
    name_prefix="petrel-test",
    tenants_table="petrel-test-tenants",
    messages_table="petrel-test-messages",
    secrets_prefix="petrel-test/tenants/",
    region=REGION,
)

SmtpCheck = Callable[[SmtpServer, str, str, Callable[[Step], None]], Step | None]


def passing_check(server: SmtpServer, password: str, mail_from: str, report: Callable[[Step], None]) -> Step | None:
    """An SMTP check whose server takes any password: every step passes."""
    for step in (Step("connect", True, f"{server.host}:{server.port}"), Step("auth", True, f"as {server.username}")):
        report(step)
    report(Step("mail from", True, f"<{mail_from}>: 250 ok"))
    return None


class NoMailboxReader:
    def open(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no IMAP here: give the harness a reader")


@dataclass
class FakeAdminPorts:
    """petrel.api.admin.AdminApiPorts on the world's fakes."""

    world: FakeWorld
    max_age_hours_limit: int = 48
    resolver: FakeResolver = field(default_factory=FakeResolver)
    smtp_check: SmtpCheck = passing_check
    mailbox_reader: MailboxReader = field(default_factory=NoMailboxReader)
    telemetry: Telemetry = field(default_factory=lambda: telemetry("admin-api"))

    @property
    def tenants(self) -> Any:
        return self.world.tenants

    @property
    def clock(self) -> Any:
        return self.world.clock

    @cached_property
    def admin(self) -> AdminDeps:
        return AdminDeps(
            tenants=self.world.tenants,
            secrets=self.world.secrets,
            clock=self.world.clock,
            secrets_prefix=SETTINGS.secrets_prefix,
            max_age_hours_limit=self.max_age_hours_limit,
            api_plans={"standard": "petrel-test-plan-standard", "bulk": "petrel-test-plan-bulk"},
            usage_plans=self.usage_plans,
            usage_key_prefix="petrel-test",
        )

    @cached_property
    def usage_plans(self) -> FakeUsagePlans:
        return FakeUsagePlans(("petrel-test-plan-standard", "petrel-test-plan-bulk"))

    @cached_property
    def mailbox_admin(self) -> MailboxDeps:
        return MailboxDeps(
            tenants=self.world.tenants,
            mailboxes=self.world.mailboxes,
            secrets=self.world.secrets,
            clock=self.world.clock,
            secrets_prefix=SETTINGS.secrets_prefix,
        )

    @cached_property
    def domains(self) -> Any:
        from petrel.services.domains import DomainDeps

        return DomainDeps(
            tenants=self.world.tenants,
            secrets=self.world.secrets,
            resolver=self.resolver,
            clock=self.world.clock,
            secrets_prefix=SETTINGS.secrets_prefix,
            mailboxes=self.world.mailboxes,
        )

    @property
    def messages(self) -> Any:
        return self.world.messages

    @property
    def queue(self) -> Any:
        return self.world.queue


@dataclass
class InProcessTransport:
    """A request as the local front takes it: SigV4 checked (403 problem otherwise), then an API
    Gateway proxy event for the admin application. Each request is kept for the tests to look at."""

    app: Callable[[dict[str, Any], Any], dict[str, Any]]
    credentials: SigningCredentials = field(
        default_factory=lambda: SigningCredentials(LOCAL_KEYS[0], LOCAL_KEYS[1], REGION)
    )
    requests: list[HttpRequest] = field(default_factory=list)

    def __call__(self, request: HttpRequest, timeout: float) -> HttpResponse:
        self.requests.append(request)
        split = urlsplit(request.url)
        body = request.body or b""
        headers = {**request.headers, "Host": split.netloc}  # as urllib sends it
        try:
            verify(
                SignedRequest(request.method, split.netloc, split.path, split.query, headers, body), self.credentials
            )
        except SignatureError as exc:
            problem = {**SIGNATURE_PROBLEM, "detail": str(exc), "instance": split.path}  # the front's answer
            return HttpResponse(403, {"content-type": "application/problem+json"}, json.dumps(problem).encode())
        event = {
            "resource": "/v1/admin/{proxy+}",
            "path": unquote(split.path),
            "httpMethod": request.method,
            "headers": headers,
            "queryStringParameters": dict(parse_qsl(split.query)) or None,
            "pathParameters": {"proxy": unquote(split.path).removeprefix("/v1/admin/")},
            "body": body.decode() if body else None,
            "isBase64Encoded": False,
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "path": split.path,
                "identity": {"userArn": self.credentials.user_arn},
            },
        }
        result = self.app(event, None)
        answer_headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
        return HttpResponse(int(result["statusCode"]), answer_headers, str(result.get("body") or "").encode())


@dataclass
class Result:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    """`petrel ...` run in process against the admin application on `world`."""

    world: FakeWorld
    workdir: Path
    state: dict[str, object] = field(default_factory=dict)
    max_age_hours_limit: int = 48
    secret_key: str = LOCAL_KEYS[1]  # what the CLI signs with (another: the front refuses)

    @cached_property
    def ports(self) -> FakeAdminPorts:
        return FakeAdminPorts(self.world, max_age_hours_limit=self.max_age_hours_limit)

    @cached_property
    def transport(self) -> InProcessTransport:
        return InProcessTransport(AdminApiApplication(self.ports))

    def __call__(self, *argv: str) -> Result:
        args: argparse.Namespace = parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        client = AdminClient(BASE_URL, REGION, Credentials(LOCAL_KEYS[0], self.secret_key), transport=self.transport)
        context = Context(
            env=LOCAL,
            workdir=self.workdir,
            output=Output(as_json=args.json, out=out, err=err),
            target=Target(env=LOCAL, settings=SETTINGS, state=self.state),
            client=client,
        )
        status = run(args, context)
        return Result(status, out.getvalue(), err.getvalue())

    def tenant(self, *options: str) -> str:
        created = self("--json", "tenant", "create", "Acme", *options)
        assert created.status == 0, created.err
        tenant_id: str = created.json()["tenant_id"]
        return tenant_id

    def bodies(self) -> list[bytes]:
        """Every request body sent so far (to show what did, and did not, travel)."""
        return [request.body or b"" for request in self.transport.requests]


def one_line_refusal(result: Result, message: str) -> None:
    """Exit status 2, nothing on stdout, and one line on stderr that holds `message`."""
    assert (result.status, result.out) == (2, ""), result
    assert result.err.startswith("petrel: ") and message in result.err and result.err.count("\n") == 1, result.err


def stdin(monkeypatch: Any, text: str, *, tty: bool = False) -> None:
    """Standard input holding `text` (a terminal or a pipe)."""
    import sys

    class Input(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stdin", Input(text))
