"""Which environment a command acts on, and how to reach its AWS resources.

`--env local` (the default) reads the local stack's state file (`<workdir>/local.json`, written by
`make run`): the embedded AWS endpoint (and, with `make run BACKEND=localstack`, each service's own:
`aws.endpoint_urls`), its region and its resource names. Any other name is an
environment of cdk.json (`context.environments`), validated by `infra.config` (the same rules as
synthesis); its names derive from its `name_prefix`, and AWS is reached with the usual credentials.

The admin API (`AdminEndpoint`) is, locally, the front at local.json's `api_url`, signed with the local
credentials; deployed, the URL of the stack's `ApiUrl` output (the stack is named after the
environment's `name_prefix`), signed with the credentials of the usual boto3 chain.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.credentials import Credentials

from cli.errors import CliError
from petrel import resources
from petrel.container.admin import AdminSettings

LOCAL = "local"
LOCAL_DOWN = "the local stack is not running (start it with `make run`)"
CDK_JSON = "cdk.json"
# The embedded AWS (moto, LocalStack) accepts any credentials; these keep boto3 from looking for real
# ones (and are the ones the local stack uses: LocalStack keeps state per access key).
_LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
API_URL_OUTPUT = "ApiUrl"  # the stack output holding the API stage's URL (infra/stacks/petrel_stack.py)
DEFAULT_LOCAL_REGION = "us-east-1"


@dataclass(frozen=True)
class AdminEndpoint:
    """Where the admin API answers and how requests to it are signed."""

    base_url: str  # where `/v1/...` starts
    region: str
    credentials: Credentials
    local: bool


@dataclass(frozen=True)
class LocalRelay:
    """The local MailU stand-in's relay account, as local.json gives it (what `server add --local-relay` uses)."""

    host: str
    ports: dict[str, int]  # by security: starttls (submission), tls (implicit TLS)
    security: str  # the one local.json names, or starttls
    username: str
    password: str | None
    ca_file: str | None


@dataclass(frozen=True)
class Target:
    """A resolved environment: its settings, and (locally) the state file it came from."""

    env: str
    settings: AdminSettings
    state: dict[str, Any] | None = None  # local.json, for the local stack only

    @property
    def is_local(self) -> bool:
        return self.state is not None

    def session_arguments(self) -> dict[str, Any]:
        """Arguments of the boto3 Session that reaches this environment."""
        arguments: dict[str, Any] = {"region_name": self.settings.region} if self.settings.region else {}
        return {**arguments, **_LOCAL_CREDENTIALS} if self.is_local else arguments

    def check_reachable(self, timeout: float = 2.0) -> None:
        """Locally, fail at once with advice when nothing listens at the embedded AWS endpoint (rather
        than after boto3's retries, with an EndpointConnectionError): moto's, and LocalStack's if it has one."""
        if not self.is_local:
            return
        endpoints = {e for e in (self.settings.endpoint_url, *self.settings.endpoint_urls().values()) if e}
        for endpoint in sorted(endpoints):
            parsed = urlsplit(endpoint)
            try:
                socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout).close()
            except OSError:
                raise CliError(LOCAL_DOWN) from None

    def admin_endpoint(self) -> AdminEndpoint:
        """The admin API of this environment: local.json's `api_url`, or the deployed stack's output."""
        if self.state is not None:
            url = self.state.get("api_url")
            if not isinstance(url, str) or not url:
                raise CliError("local.json has no api_url: restart the local stack with `make run`")
            credentials = Credentials(
                _LOCAL_CREDENTIALS["aws_access_key_id"], _LOCAL_CREDENTIALS["aws_secret_access_key"]
            )
            return AdminEndpoint(url, self.settings.region or DEFAULT_LOCAL_REGION, credentials, local=True)
        import boto3

        session = boto3.session.Session(**self.session_arguments())
        found = session.get_credentials()
        if found is None:
            raise CliError("no AWS credentials found: configure them (e.g. AWS_PROFILE) to reach the admin API")
        if not session.region_name:
            raise CliError("no AWS region: set one in cdk.json's environment or AWS_REGION")
        url = stack_output(session.client("cloudformation"), self.settings.name_prefix, API_URL_OUTPUT)
        frozen = found.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise CliError("the AWS credentials found are incomplete: configure them (e.g. AWS_PROFILE)")
        credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        return AdminEndpoint(url, session.region_name, credentials, local=False)

    def local_relay(self) -> LocalRelay:
        """The stand-in's relay account, from local.json: its `relay` section (the account, its password
        and CA), completed by `smtp_server` (the stand-in's submission and implicit-TLS ports)."""
        if self.state is None:
            raise CliError("--local-relay needs the local stack (--env local)")
        sections = [self.state.get(name) for name in ("smtp_server", "relay")]
        section = {key: value for part in sections if isinstance(part, dict) for key, value in part.items()}
        if "host" not in section or "username" not in section:
            raise CliError("local.json has no relay account (`relay` section): restart the local stack with `make run`")
        security = str(section.get("security", "starttls"))
        ports = {
            "starttls": (section.get("port") if security == "starttls" else None) or section.get("submission_port"),
            "tls": (section.get("port") if security == "tls" else None) or section.get("smtps_port"),
        }
        ca_file = section.get("ca_file") or (self.state.get("test_mailbox") or {}).get("ca_file")
        return LocalRelay(
            host=str(section["host"]),
            ports={name: int(port) for name, port in ports.items() if port},
            security=security,
            username=str(section["username"]),
            password=section.get("password"),
            ca_file=str(ca_file) if ca_file else None,
        )


def stack_output(cloudformation: Any, stack_name: str, output: str) -> str:
    """One output of a deployed stack (CloudFormation's DescribeStacks), or one line of advice."""
    from botocore.exceptions import ClientError

    try:
        [stack] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if "does not exist" in message:
            raise CliError(f"stack {stack_name} is not deployed in this account and region (make deploy)") from None
        raise
    for item in stack.get("Outputs") or []:
        if item.get("OutputKey") == output:
            return str(item["OutputValue"])
    raise CliError(f"stack {stack_name} has no output {output}: deploy the current version (make deploy)")


def resolve(env: str, workdir: Path, cdk_json: Path | None = None) -> Target:
    """The target named by `--env` (and `--workdir` for the local stack)."""
    return local_target(workdir) if env == LOCAL else deployed_target(env, cdk_json or find_cdk_json())


def local_target(workdir: Path) -> Target:
    state_file = workdir / "local.json"
    if not state_file.exists():
        raise CliError(f"{state_file} not found: start the local stack with `make run` first")
    try:
        state = json.loads(state_file.read_text())
        aws = state["aws"]
        prefix = str(aws["prefix"])
        tables = aws["tables"]
        settings = AdminSettings(
            name_prefix=prefix,
            tenants_table=tables.get(resources.TENANTS.name) or resources.physical_name(prefix, resources.TENANTS.name),
            messages_table=tables.get(resources.MESSAGES.name)
            or resources.physical_name(prefix, resources.MESSAGES.name),
            secrets_prefix=aws.get("secrets_prefix") or resources.secrets_prefix(prefix),
            region=aws["region"],
            endpoint_url=aws["endpoint_url"],
            service_endpoint_urls={str(k): str(v) for k, v in (aws.get("endpoint_urls") or {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{state_file} is not the local stack's state ({type(exc).__name__}: {exc})") from None
    return Target(env=LOCAL, settings=settings, state=state)


def find_cdk_json() -> Path:
    """cdk.json of the working directory, else of the repository the CLI runs from."""
    from infra import REPO_ROOT

    here = Path.cwd() / CDK_JSON
    return here if here.exists() else REPO_ROOT / CDK_JSON


def deployed_target(env: str, cdk_json: Path) -> Target:
    """A deployed environment of cdk.json, validated by infra.config (as synthesis validates it)."""
    from infra.config import CONTEXT_KEY, ConfigError, select_environments

    try:
        context = json.loads(cdk_json.read_text()).get("context", {})
        [config] = select_environments(context.get(CONTEXT_KEY), env)
    except OSError as exc:
        raise CliError(f"cannot read {cdk_json}: {exc.strerror}") from None
    except ValueError as exc:  # ConfigError, or not JSON
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(first if isinstance(exc, ConfigError) else f"{cdk_json}: {first}") from None
    settings = AdminSettings.for_prefix(
        config.name_prefix, max_age_hours_limit=config.max_message_age_hours, region=config.region
    )
    return Target(env=env, settings=settings)
