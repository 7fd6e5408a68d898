"""`petrel tenant create|list|show|update|suspend|resume`: tenants and their settings, through the admin API."""

from __future__ import annotations

import argparse
from typing import Any

from cli.client import segment
from cli.command import Context, Groups, add_groups, add_parser, add_tenant_argument
from cli.errors import CliError
from petrel.models.records import Tenant
from petrel.services import tenants as limits

COLUMNS = ("tenant_id", "name", "status", "api_plan", "max_message_bytes", "max_age_hours", "created_at")
DETAIL_COLUMNS = (
    "tenant_id",
    "name",
    "status",
    "max_message_bytes",
    "max_age_hours",
    "daily_quota",
    "per_second_quota",
    "allow_unverified_domains",
    "api_plan",
    "send_rate_per_second",
    "suspended_reason",
    "created_at",
)
NO_LIMIT = "none"


def _default(field: str) -> Any:
    return Tenant.model_fields[field].default


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "tenant", "tenants and their settings"), "tenant commands")

    create = add_parser(commands, "create", "create a tenant (prints its id)")
    create.add_argument("name", help="a name for people to read")
    _settings_arguments(create, defaults=True)
    create.set_defaults(handler=create_tenant)

    add_parser(commands, "list", "list tenants").set_defaults(handler=list_tenants)

    show = add_parser(commands, "show", "show a tenant: its settings, quotas and whether it is suspended")
    add_tenant_argument(show)
    show.set_defaults(handler=show_tenant)

    change = add_parser(
        commands,
        "update",
        "change a tenant's settings",
        "Change some settings of a tenant; those not given stay as they are. Send workers see a change "
        "once their configuration cache expires (about a minute). `tenant set` is the same command.",
        aliases=("set",),
    )
    add_tenant_argument(change)
    change.add_argument("--name", help="a new name")
    _settings_arguments(change, defaults=False)
    change.set_defaults(handler=update_tenant)

    suspend = add_parser(
        commands,
        "suspend",
        "suspend a tenant: its sends are refused (403), its queued and scheduled mail waits",
        "Suspend a tenant: the API refuses its sends with a 403 problem, and its queued and scheduled mail "
        "is held (not lost) until `tenant resume`.",
    )
    add_tenant_argument(suspend)
    suspend.add_argument("--reason", help="why, for the operators and the 403's detail (default: none)")
    suspend.set_defaults(handler=suspend_tenant)

    resume = add_parser(commands, "resume", "resume a suspended tenant: its held mail goes out again")
    add_tenant_argument(resume)
    resume.set_defaults(handler=resume_tenant)

    enroll = add_parser(
        commands,
        "enroll",
        "put tenants' API keys in their API plans' usage plans",
        "Enroll a tenant (or, with --all, every tenant) in its API plan's API Gateway usage plan, which "
        "throttles its requests at the edge. New tenants and plan changes are enrolled by themselves; run "
        "`tenant enroll --all` once after upgrading, for tenants made before usage plans (API Gateway "
        "refuses their requests with 403 until then). Safe to repeat.",
    )
    which = enroll.add_mutually_exclusive_group(required=True)
    which.add_argument("tenant", nargs="?", help="the tenant's id")
    which.add_argument("--all", action="store_true", help="every tenant")
    enroll.set_defaults(handler=enroll_tenants)


def quota(value: str) -> int | None:
    """A quota argument: a positive count, or `none` for no limit."""
    if value.strip().lower() == NO_LIMIT:
        return None
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or {NO_LIMIT!r}: {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"a quota is at least 1 (or {NO_LIMIT!r} for no limit), not {count}")
    return count


def rate(value: str) -> float | None:
    """A rate argument: messages per second above 0, or `none` for no limit."""
    if value.strip().lower() == NO_LIMIT:
        return None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or {NO_LIMIT!r}: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"a rate is above 0 (or {NO_LIMIT!r} for no limit), not {value}")
    return number


def _settings_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    size, hours = _default("max_message_bytes"), _default("max_age_hours")
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        metavar="BYTES",
        help=f"largest message accepted, encoded, attachments included ({limits.MIN_MESSAGE_BYTES}-"
        f"{limits.MAX_MESSAGE_BYTES})" + (f" (default: {size}, 25 MiB)" if defaults else ""),
    )
    parser.add_argument(
        "--max-age-hours",
        type=int,
        metavar="HOURS",
        help="how long a message is retried before it fails as expired, at most the environment's "
        "max_message_age_hours" + (f" (default: {hours})" if defaults else ""),
    )
    unset = argparse.SUPPRESS  # absent from the namespace unless given: `none` is a value (no limit)
    parser.add_argument(
        "--daily-quota",
        type=quota,
        default=unset,
        metavar="N|none",
        help="recipients accepted per UTC day; none: no limit" + (" (default: none)" if defaults else ""),
    )
    parser.add_argument(
        "--per-second-quota",
        type=quota,
        default=unset,
        metavar="N|none",
        help="recipients accepted per second; none: no limit" + (" (default: none)" if defaults else ""),
    )
    parser.add_argument(
        "--api-plan",
        metavar="PLAN",
        help="the API plan whose usage plan throttles its requests (the environment's api_plans)"
        + (f" (default: {_default('api_plan')})" if defaults else ""),
    )
    parser.add_argument(
        "--send-rate",
        dest="send_rate_per_second",
        type=rate,
        default=unset,
        metavar="N|none",
        help="messages per second the workers relay for it, across its servers; none: only its servers' "
        "limits" + (" (default: none)" if defaults else ""),
    )
    verified = parser.add_mutually_exclusive_group()
    verified.add_argument(
        "--allow-unverified-domains",
        dest="allow_unverified_domains",
        action="store_const",
        const=True,
        help="let the tenant send from domains whose SPF and DKIM are not verified (testing only)",
    )
    verified.add_argument(
        "--require-verified-domains",
        dest="allow_unverified_domains",
        action="store_const",
        const=False,
        help="refuse sends from domains whose SPF and DKIM are not verified" + (" (the default)" if defaults else ""),
    )


def settings_body(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, and only those: a quota given as `none` is an explicit
    null (the admin API removes the limit), a setting not given is absent (left as it is)."""
    body: dict[str, Any] = {}
    for name in ("name", "max_message_bytes", "max_age_hours", "allow_unverified_domains", "api_plan"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    for name in ("daily_quota", "per_second_quota", "send_rate_per_second"):
        if hasattr(args, name):
            body[name] = getattr(args, name)
    return body


def tenant_path(tenant_id: str) -> str:
    return f"/tenants/{segment(tenant_id)}"


def create_tenant(args: argparse.Namespace, context: Context) -> int:
    tenant = context.client.post("/tenants", settings_body(args))
    context.output.record(tenant, DETAIL_COLUMNS)
    return 0


def list_tenants(args: argparse.Namespace, context: Context) -> int:
    answer = context.client.get("/tenants")
    context.output.rows(answer["tenants"], COLUMNS)
    return 0


def show_tenant(args: argparse.Namespace, context: Context) -> int:
    context.output.record(context.client.get(tenant_path(args.tenant)), DETAIL_COLUMNS)
    return 0


def update_tenant(args: argparse.Namespace, context: Context) -> int:
    body = settings_body(args)
    if not body:
        raise CliError("nothing to change: give at least one setting (see tenant update --help)")
    context.output.record(context.client.patch(tenant_path(args.tenant), body), DETAIL_COLUMNS)
    return 0


def suspend_tenant(args: argparse.Namespace, context: Context) -> int:
    body = {"reason": args.reason} if args.reason else {}
    tenant = context.client.post(f"{tenant_path(args.tenant)}/suspend", body)
    context.output.record(tenant, DETAIL_COLUMNS)
    return 0


def resume_tenant(args: argparse.Namespace, context: Context) -> int:
    answer = context.client.post(f"{tenant_path(args.tenant)}/resume")
    if context.output.as_json:
        context.output.json(answer)
        return 0
    context.output.record(answer["tenant"], DETAIL_COLUMNS)
    context.output.note(f"{answer.get('released', 0)} held message(s) released to the send queue")
    return 0


ENROLL_COLUMNS = ("tenant_id", "api_plan", "enrolled")


def enroll_tenants(args: argparse.Namespace, context: Context) -> int:
    """One request per tenant (each within API Gateway's 29 s, however many tenants there are); a
    tenant that fails is reported and the others still enrolled: exit status 1 then, and running it
    again finishes the job."""
    if not args.all:
        context.output.record(context.client.post(f"{tenant_path(args.tenant)}/enroll"), ENROLL_COLUMNS)
        return 0
    done: list[dict[str, Any]] = []
    failed = 0
    for tenant in context.client.get("/tenants")["tenants"]:
        try:
            done.append(context.client.post(f"{tenant_path(tenant['tenant_id'])}/enroll"))
        except CliError as refused:
            failed += 1
            done.append({"tenant_id": tenant["tenant_id"], "api_plan": tenant.get("api_plan"), "enrolled": False})
            context.output.note(f"{tenant['tenant_id']}: {refused}")
    context.output.rows(done, ENROLL_COLUMNS)
    if not failed and not any(e["enrolled"] for e in done) and done:
        context.output.note("this environment has no API Gateway usage plans: nothing to enroll")
    return 1 if failed else 0
