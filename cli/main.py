"""`petrel`: the parser of every command, the dispatch to its handler, and errors as one line each.

Exit status: 0 done; 1 a check that failed (`server test`) or an unexpected error; 2 a refusal the
operator can act on (bad arguments, an unknown tenant, the local stack not running, ...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from cli import dlq, dns, migrate
from cli.admin import domain, key, mailbox, server, tenant
from cli.command import Context, HelpFormatter, Parser, add_groups, handler_of
from cli.errors import CliError
from cli.output import Output
from cli.target import LOCAL, LOCAL_DOWN

COMMANDS: tuple[ModuleType, ...] = (tenant, key, domain, server, mailbox, dlq, dns, migrate)

DESCRIPTION = """\
Administer Petrel: tenants, API keys, sending domains, SMTP servers, the mailboxes Petrel reads;
check a server or a mailbox; list and redrive dead letters; migrate stored data between releases.

Works against the local stack (--env local, the default: reads <workdir>/local.json, written by
`make run`) or a deployed environment of cdk.json (--env dev|staging|prod, with the usual AWS
credentials). Add --help after any command for its options.

tenant, key, domain, server and mailbox are clients of the admin API (/v1/admin/..., IAM-authorized:
each request is signed with SigV4, locally with the local stack's credentials, deployed with yours,
at the URL of the stack's ApiUrl output). dlq works on the queues directly (an operation on AWS, not
the admin API), migrate on the tables, and so do dns (the local stack's DNS server) and the local
stack's seed (`make run`).
"""
EXAMPLES = """\
a first tenant on the local stack:
  petrel tenant create "Acme"
  petrel server add tn_... --local-relay
  petrel server test tn_... srv_...
  petrel domain add tn_... acme.example      (prints the DNS records to publish)
  petrel dns publish acme.example            (into the local DNS server)
  petrel domain verify tn_... acme.example
  petrel mailbox add tn_... --local
  petrel mailbox test tn_... mbx_...
  petrel key create tn_... --name first
"""

EXIT_REFUSED = 2
EXIT_FAILED = 1


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="petrel", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=HelpFormatter)
    root.add_argument(
        "--env", default=LOCAL, help="local, or an environment of cdk.json's context.environments (dev, staging, prod)"
    )
    root.add_argument("--workdir", default=".petrel", help="the local stack's state directory (holds local.json)")
    root.add_argument("--json", action="store_true", help="print JSON instead of tables")
    groups = add_groups(root, "commands")
    for command in COMMANDS:
        command.register(groups)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run(args, Context(env=args.env, workdir=Path(args.workdir), output=Output(as_json=args.json)))


def run(args: argparse.Namespace, context: Context) -> int:
    """Run the parsed command; every failure becomes one line on stderr and a non-zero status."""
    try:
        return handler_of(args)(args, context)
    except KeyboardInterrupt:
        context.output.note("petrel: interrupted")
        return EXIT_FAILED
    except Exception as exc:  # one line each, never a traceback
        message, status = explain(exc, local=context.env == LOCAL)
        context.output.note(f"petrel: {message}")
        return status


def explain(exc: Exception, *, local: bool) -> tuple[str, int]:
    """The one line an operator reads for `exc`, and the exit status."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError

    from cli.client import ApiError
    from petrel.errors import ConfigurationError, PetrelError
    from petrel.ports import PortError

    if isinstance(exc, ApiError) and exc.status >= 500:  # the admin API failed: not the operator's to fix
        return _first_line(exc), EXIT_FAILED
    if isinstance(exc, CliError | ConfigurationError | PetrelError | PortError):
        return _first_line(exc), EXIT_REFUSED
    if isinstance(exc, EndpointConnectionError):
        if local:
            return LOCAL_DOWN, EXIT_REFUSED
        return f"cannot reach AWS: {_first_line(exc)}", EXIT_FAILED
    if isinstance(exc, NoCredentialsError | NoRegionError):
        advice = "configure AWS credentials and a region (e.g. AWS_PROFILE)"
        return f"{_first_line(exc).rstrip('.')}: {advice}", EXIT_REFUSED
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"AWS {error.get('Code', 'error')}: {error.get('Message', '')}".strip(), EXIT_FAILED
    if isinstance(exc, OSError):
        return _first_line(exc), EXIT_REFUSED
    return f"{type(exc).__name__}: {_first_line(exc)}", EXIT_FAILED


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
