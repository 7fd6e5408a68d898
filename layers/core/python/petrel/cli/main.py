"""`petrel`: administer tenants, API keys, sending domains and SMTP servers; list and redrive dead letters.

Works against the local stack (`--env local`, reads .petrel/local.json) or a deployed environment
(`--env dev|staging|prod`, resource names from cdk.json and the usual AWS credentials).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from petrel import resources
from petrel.adapters.dead_letters import DeadLetter, dead_letter_queues
from petrel.errors import ConfigurationError
from petrel.models.jobs import SendJob


class CliError(Exception):
    """Printed as one line, exit status 2."""


def _local_aws(args: argparse.Namespace) -> dict[str, Any]:
    """The `aws` section of the local stack's local.json; points boto3 at its endpoint."""
    state = Path(args.workdir) / "local.json"
    if not state.exists():
        raise CliError(f"{state} not found: start the local stack with `make run` first")
    aws: dict[str, Any] = json.loads(state.read_text())["aws"]
    os.environ.setdefault("AWS_ENDPOINT_URL", aws["endpoint_url"])
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", aws["region"])
    return aws


def _deployed_prefix(env: str) -> str:
    """The name prefix of a deployed environment (cdk.json context), e.g. `petrel-dev`."""
    prefix = f"petrel-{env}"
    cdk_json = Path("cdk.json")
    if cdk_json.exists():
        envs = json.loads(cdk_json.read_text()).get("context", {}).get("environments", {})
        if env not in envs:
            raise CliError(f"environment {env!r} is not in cdk.json (known: {', '.join(envs)})")
        prefix = envs[env].get("name_prefix", prefix)
    return prefix


def _prefix(args: argparse.Namespace) -> str:
    """The resource name prefix of the chosen environment; sets the AWS endpoint for local."""
    return str(_local_aws(args)["prefix"]) if args.env == "local" else _deployed_prefix(args.env)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """(tenants table, secrets prefix) of the chosen environment; sets the AWS endpoint for local."""
    if args.env == "local":
        aws = _local_aws(args)
        return aws["tables"]["tenants"], aws["secrets_prefix"]
    prefix = _deployed_prefix(args.env)
    return resources.physical_name(prefix, resources.TENANTS.name), resources.secrets_prefix(prefix)


def _messages_table(args: argparse.Namespace, prefix: str) -> str:
    """The messages table of the chosen environment (a redrive reopens what the worker gave up on)."""
    if args.env == "local":
        return str(_local_aws(args)["tables"][resources.MESSAGES.name])
    return resources.physical_name(prefix, resources.MESSAGES.name)


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise CliError(f"environment variable {args.password_env} is empty or not set")
        return value
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise CliError("no password on standard input")
        return value
    raise CliError("give the password with --password-env VAR or --password-stdin (never on the command line)")


def _print(args: argparse.Namespace, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    for row in rows:
        print("  ".join(f"{row.get(c, '')}" for c in columns))


def _duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _letter_line(letter: DeadLetter, now: datetime) -> str:
    age = letter.age(now)
    parts = [
        letter.message_id,
        f"received {letter.receive_count}x",
        f"sent {_time(letter.sent_at)}",
        f"first received {_time(letter.first_received_at)}",
        f"age {_duration(age) if age is not None else '-'}",
    ]
    job = letter.job
    if isinstance(job, SendJob):
        parts.append(f"tenant={job.tenant_id} email={job.email_id} message={job.message_id}")
        parts.append(f"attempt={job.attempt} pool={job.pool}")
    elif job is not None:  # a scheduled email's release
        parts.append(f"tenant={job.tenant_id} email={job.email_id} release pool={job.pool}")
    else:
        parts.append(f"unparseable body: {letter.body[:80]!r}")
    line = "  ".join(parts)
    if error := letter.scheduler_error:
        shown = {k: v for k, v in error.items() if k in ("ERROR_CODE", "ERROR_MESSAGE", "RETRY_ATTEMPTS")} or error
        line += "\n    scheduler error: " + "  ".join(f"{k}={v}" for k, v in shown.items())
    return line


def run_dlq(args: argparse.Namespace) -> None:
    """`petrel dlq list|redrive QUEUE`: what failed, and putting it back (petrel.adapters.dead_letters)."""
    from petrel import container
    from petrel.adapters import aws
    from petrel.adapters.dead_letters import SqsDeadLetters
    from petrel.services.redrive import reopen_for_redrive

    prefix = _prefix(args)
    letters = SqsDeadLetters(aws.client("sqs"), prefix)
    dlq_name = resources.physical_name(prefix, letters.queue(args.queue).dlq)
    now = datetime.now(UTC)
    if args.action == "list":
        depth = letters.depth(args.queue)
        shown = letters.peek(args.queue, args.limit)
        if args.json:
            out = {
                "queue": dlq_name,
                "approximate_depth": {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed},
                "messages": [letter.summary(now) for letter in shown],
            }
            print(json.dumps(out, indent=2))
            return
        print(
            f"{dlq_name}: about {depth.total} message(s) ({depth.visible} visible, {depth.in_flight} in flight, "
            f"{depth.delayed} delayed); showing {len(shown)}"
        )
        for letter in shown:
            print(_letter_line(letter, now))
    elif args.action == "redrive":
        redrive = container.redrive_deps(_messages_table(args, prefix))
        report = letters.redrive(args.queue, args.limit, prepare=lambda job: reopen_for_redrive(redrive, job))
        if args.json:
            out = {
                "queue": dlq_name,
                "moved": [
                    {"sqs_message_id": m.letter.message_id, "queue": m.queue, "new_sqs_message_id": m.new_message_id}
                    for m in report.moved
                ],
                "left": [{"sqs_message_id": left.letter.message_id, "reason": left.reason} for left in report.left],
            }
            print(json.dumps(out, indent=2))
            return
        per_queue: dict[str, int] = {}
        for moved in report.moved:
            per_queue[moved.queue] = per_queue.get(moved.queue, 0) + 1
        where = ", ".join(f"{count} to {queue}" for queue, count in sorted(per_queue.items()))
        print(
            f"{dlq_name}: moved {len(report.moved)}" + (f" ({where})" if where else "") + f", left {len(report.left)}"
        )
        for left in report.left:
            print(f"  left {left.letter.message_id}: {left.reason}")


def run(args: argparse.Namespace) -> None:
    from petrel import container
    from petrel.services import tenants as admin

    if args.group == "dlq":
        run_dlq(args)
        return
    table, secrets_prefix = _target(args)
    deps = container.admin_deps(table, secrets_prefix)
    store = deps.tenants
    command = f"{args.group} {args.action}"
    if command == "tenant create":
        tenant = admin.create_tenant(deps, args.name, args.max_message_bytes)
        _print(args, [tenant.model_dump(mode="json")], ["tenant_id", "name"])
    elif command == "tenant list":
        _print(args, [t.model_dump(mode="json") for t in store.list_tenants()], ["tenant_id", "name", "created_at"])
    elif command == "key create":
        minted = admin.create_api_key(deps, args.tenant, args.name)
        _print(args, [{"key_id": minted.key.key_id, "api_key": minted.secret}], ["key_id", "api_key"])
        if not args.json:
            print("Store the key now: it is shown once and kept only as a hash.", file=sys.stderr)
    elif command == "key list":
        rows = [k.model_dump(mode="json", exclude={"key_hash"}) for k in store.list_api_keys(args.tenant)]
        _print(args, rows, ["key_id", "prefix", "name", "created_at", "revoked_at"])
    elif command == "key revoke":
        admin.revoke_api_key(deps, args.tenant, args.key_id)
        print(f"revoked {args.key_id} (API Gateway may accept it for up to its cache TTL, 60 s)")
    elif command == "domain add":
        domain = admin.add_domain(deps, args.tenant, args.domain, args.return_path_domain)
        _print(args, [domain.model_dump(mode="json")], ["domain", "return_path_domain"])
    elif command == "domain list":
        _print(
            args, [d.model_dump(mode="json") for d in store.list_domains(args.tenant)], ["domain", "return_path_domain"]
        )
    elif command == "server add":
        ca = Path(args.ca_file).read_text() if args.ca_file else None
        server = admin.add_smtp_server(
            deps,
            args.tenant,
            host=args.host,
            port=args.port,
            security=args.security,
            username=args.username,
            password=_password(args),
            pool=args.pool,
            weight=args.weight,
            ca_bundle=ca,
        )
        _print(args, [server.model_dump(mode="json", exclude={"ca_bundle"})], ["server_id", "host", "port", "pool"])
    elif command == "server list":
        rows = [s.model_dump(mode="json", exclude={"ca_bundle"}) for s in store.list_servers(args.tenant)]
        _print(args, rows, ["server_id", "host", "port", "security", "username", "pool", "weight", "enabled"])
    elif command == "server set-password":
        admin.set_smtp_password(deps, args.tenant, args.server_id, _password(args))
        print(f"password of {args.server_id} updated")
    elif command == "server remove":
        admin.remove_smtp_server(deps, args.tenant, args.server_id)
        print(f"removed {args.server_id}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="petrel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--env", default="local", help="local (default), or an environment of cdk.json: dev, staging, prod")
    p.add_argument("--workdir", default=".petrel", help="the local stack's state directory (default .petrel)")
    p.add_argument("--json", action="store_true", help="print JSON")
    groups = p.add_subparsers(dest="group", required=True)

    tenant = groups.add_parser("tenant", help="tenants").add_subparsers(dest="action", required=True)
    create = tenant.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--max-message-bytes", type=int, default=None)
    tenant.add_parser("list", help="list tenants")

    key = groups.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    kc = key.add_parser("create", help="mint a key (shown once)")
    kc.add_argument("tenant")
    kc.add_argument("--name", default="")
    key.add_parser("list", help="list a tenant's keys").add_argument("tenant")
    kr = key.add_parser("revoke", help="revoke a key")
    kr.add_argument("tenant")
    kr.add_argument("key_id")

    domain = groups.add_parser("domain", help="sending domains").add_subparsers(dest="action", required=True)
    da = domain.add_parser("add", help="add a sending domain")
    da.add_argument("tenant")
    da.add_argument("domain")
    da.add_argument("--return-path-domain", default=None, help="bounce domain for VERP (default: the domain)")
    domain.add_parser("list", help="list sending domains").add_argument("tenant")

    server = groups.add_parser("server", help="MailU SMTP servers").add_subparsers(dest="action", required=True)
    sa = server.add_parser("add", help="add a MailU submission server")
    sa.add_argument("tenant")
    sa.add_argument("--host", required=True)
    sa.add_argument("--port", type=int, default=587)
    sa.add_argument("--security", choices=["starttls", "tls"], default="starttls")
    sa.add_argument("--username", required=True)
    sa.add_argument("--pool", choices=["transactional", "bulk"], default="transactional")
    sa.add_argument("--weight", type=int, default=1)
    sa.add_argument("--ca-file", default=None, help="PEM bundle to trust (a self-signed MailU certificate)")
    for sub in (sa, _with_server_id(server.add_parser("set-password", help="rotate the SMTP password"))):
        sub.add_argument("--password-env", default=None, help="read the password from this environment variable")
        sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    server.add_parser("list", help="list SMTP servers").add_argument("tenant")
    _with_server_id(server.add_parser("remove", help="remove a server and its secret"))

    names = list(dead_letter_queues())
    dlq = groups.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="action", required=True)
    dl = dlq.add_parser(
        "list",
        help="show what a dead-letter queue holds (the messages stay, visible)",
        description="Print the DLQ's approximate depth, then one line per message. Messages are received "
        "briefly and made visible again at once, so a redrive right after sees them.",
    )
    dl.add_argument("queue", choices=names, help="whose dead-letter queue")
    dl.add_argument("--limit", type=_positive, default=50, help="show at most N messages (default 50)")
    dr = dlq.add_parser(
        "redrive",
        help="move dead letters back to their send queue",
        description="Send each dead letter back (a send DLQ to its send queue, the schedules DLQ to the send "
        "queue of the job's pool), then delete it from the DLQ. A message the worker ended failed/worker-error "
        "is first reopened (queued again at its attempt), so its job runs once more. Safe to repeat: a job "
        "whose attempt is done does nothing. What cannot be placed (an unparseable schedules-DLQ body) is "
        "left and reported.",
    )
    dr.add_argument("queue", choices=names, help="whose dead-letter queue")
    dr.add_argument("--limit", type=_positive, default=None, help="take at most N messages off the DLQ (default: all)")
    for sub in (dl, dr):
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return p


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _with_server_id(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("tenant")
    sub.add_argument("server_id")
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except (CliError, ConfigurationError, OSError) as exc:
        print(f"petrel: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # botocore errors and the like: one line, not a traceback
        print(f"petrel: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
