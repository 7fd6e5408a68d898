"""What every command module shares: the help formatter, the context a handler runs in, registration.

A command module exposes `register(groups)`: it adds its parsers and sets `handler` on each leaf
(`parser.set_defaults(handler=...)`); `main` parses, builds a Context and calls that handler.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from cli.output import Output

if TYPE_CHECKING:
    from cli.client import AdminClient
    from cli.target import Target
    from petrel.adapters.dead_letters import SqsDeadLetters
    from petrel.services.mailboxes import MailboxDeps
    from petrel.services.redrive import RedriveDeps
    from petrel.services.tenants import AdminDeps

Groups = argparse._SubParsersAction  # the object `add_subparsers()` returns


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and each option's default in its help (unless it has none, is a flag,
    or its help already explains it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # A flag (store_true, store_false: no argument) says what it does; "(default: True)" would mislead.
        if action.nargs == 0 or action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line too (the full usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_parser(
    groups: Groups[argparse.ArgumentParser],
    name: str,
    help_text: str,
    description: str = "",
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand parser with Petrel's help formatter (`aliases`: older names that keep working)."""
    return groups.add_parser(
        name,
        help=help_text,
        description=description or help_text[:1].upper() + help_text[1:] + ".",
        formatter_class=HelpFormatter,
        aliases=list(aliases),
    )


def add_tenant_argument(parser: argparse.ArgumentParser) -> None:
    """The positional tenant id every per-tenant command takes first."""
    parser.add_argument("tenant", help="the tenant id (tn_...)")


def add_groups(parser: argparse.ArgumentParser, title: str) -> Groups[argparse.ArgumentParser]:
    """The subcommands of `parser` (one is required)."""
    return parser.add_subparsers(title=title, metavar="COMMAND", required=True)


class AdminServices(Protocol):
    """What the commands use from a container (petrel.container.admin.AdminContainer; tests: fakes)."""

    @property
    def admin(self) -> AdminDeps: ...

    @property
    def mailbox_admin(self) -> MailboxDeps: ...

    @property
    def redrive(self) -> RedriveDeps: ...

    @property
    def dead_letters(self) -> SqsDeadLetters: ...

    def backfill_listing(self) -> int:
        """`petrel migrate listing` (petrel.adapters.dynamodb.DynamoMessageStore.backfill_listing)."""
        ...


class Context:
    """What a handler runs against. The target, the admin API's client and the container are built on
    first use, so `--help` and argument errors never touch the environment; tests pass their own.

    `client` (the admin API, SigV4-signed) is what the tenant, key, domain, server and mailbox commands
    use; `services` (AWS directly) is left to bootstrapping and queue operations (`dlq`)."""

    def __init__(
        self,
        env: str,
        workdir: Path,
        output: Output | None = None,
        *,
        target: Target | None = None,
        services: AdminServices | None = None,
        client: AdminClient | None = None,
    ) -> None:
        self.env = env
        self.workdir = workdir
        self.output = output or Output()
        self._target = target
        self._services = services
        self._client = client

    @property
    def target(self) -> Target:
        if self._target is None:
            from cli.target import resolve

            self._target = resolve(self.env, self.workdir)
        return self._target

    @property
    def client(self) -> AdminClient:
        if self._client is None:
            from cli.client import AdminClient
            from cli.target import LOCAL_DOWN

            endpoint = self.target.admin_endpoint()
            self._client = AdminClient(
                endpoint.base_url,
                endpoint.region,
                endpoint.credentials,
                unreachable_advice=LOCAL_DOWN if endpoint.local else None,
            )
        return self._client

    @property
    def services(self) -> AdminServices:
        if self._services is None:
            import boto3

            from petrel.container.admin import AdminContainer
            from petrel.container.base import AwsClients

            self.target.check_reachable()
            settings = self.target.settings
            session = boto3.session.Session(**self.target.session_arguments())
            clients = AwsClients(session, endpoint_urls=settings.endpoint_urls())
            self._services = AdminContainer(settings, clients=clients)
        return self._services

    @property
    def admin(self) -> AdminDeps:
        return self.services.admin


Handler = Callable[[argparse.Namespace, Context], int]


def handler_of(args: argparse.Namespace) -> Handler:
    found: Any = getattr(args, "handler", None)
    if found is None:
        raise TypeError("the parsed command has no handler")
    handler: Handler = found
    return handler
