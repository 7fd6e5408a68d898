"""Each local function as on Lambda: its own environment mapping, validated into its own settings model,
its own container (with its own boto3 session) and the handler its factory in `petrel.entrypoints`
makes of it. No function reads another's environment, and none reads the process's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from local.lambda_runtime import Handler

if TYPE_CHECKING:
    from petrel.container.admin_api import AdminApiContainer
    from petrel.container.api import ApiContainer
    from petrel.container.authorizer import AuthorizerContainer
    from petrel.container.base import AwsClients
    from petrel.container.domains import DomainCheckContainer
    from petrel.container.ingest import IngestContainer
    from petrel.container.poller import PollerContainer
    from petrel.container.sweeper import SweeperContainer
    from petrel.container.worker import WorkerContainer

C = TypeVar("C")


@dataclass(frozen=True)
class LocalFunction(Generic[C]):
    """One function: its container (tests reach its dependencies through it) and its handler."""

    name: str
    container: C
    handler: Handler


def api(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[ApiContainer]:
    from petrel.container.api import ApiContainer
    from petrel.entrypoints.api import create_api
    from petrel.settings import ApiSettings

    container = ApiContainer(ApiSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("api", container, create_api(container))


def authorizer(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[AuthorizerContainer]:
    from petrel.container.authorizer import AuthorizerContainer
    from petrel.entrypoints.authorizer import create_authorizer
    from petrel.settings import AuthorizerSettings

    container = AuthorizerContainer(AuthorizerSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("authorizer", container, create_authorizer(container))


def worker(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[WorkerContainer]:
    from petrel.container.worker import WorkerContainer
    from petrel.entrypoints.send_worker import create_worker
    from petrel.settings import SendWorkerSettings

    container = WorkerContainer(SendWorkerSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("send-worker", container, create_worker(container))


def sweeper(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[SweeperContainer]:
    from petrel.container.sweeper import SweeperContainer
    from petrel.entrypoints.sweeper import create_sweeper
    from petrel.settings import SweeperSettings

    container = SweeperContainer(SweeperSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("sweeper", container, create_sweeper(container))


def poller(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[PollerContainer]:
    from petrel.container.poller import PollerContainer
    from petrel.entrypoints.imap_poller import create_poller
    from petrel.settings import PollerSettings

    container = PollerContainer(PollerSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("imap-poller", container, create_poller(container))


def ingest_worker(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[IngestContainer]:
    from petrel.container.ingest import IngestContainer
    from petrel.entrypoints.ingest_worker import create_ingest_worker
    from petrel.settings import IngestWorkerSettings

    container = IngestContainer(IngestWorkerSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("ingest-worker", container, create_ingest_worker(container))


def admin_api(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[AdminApiContainer]:
    from petrel.container.admin_api import AdminApiContainer
    from petrel.entrypoints.admin_api import create_admin_api
    from petrel.settings import AdminApiSettings

    container = AdminApiContainer(AdminApiSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("admin-api", container, create_admin_api(container))


def domain_checker(env: Mapping[str, str], clients: AwsClients) -> LocalFunction[DomainCheckContainer]:
    from petrel.container.domains import DomainCheckContainer
    from petrel.entrypoints.domain_checker import create_domain_checker
    from petrel.settings import DomainCheckerSettings

    container = DomainCheckContainer(DomainCheckerSettings.model_validate(dict(env)), clients=clients)
    return LocalFunction("domain-checker", container, create_domain_checker(container))
