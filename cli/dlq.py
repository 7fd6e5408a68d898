"""`petrel dlq list|redrive QUEUE`: what the workers gave up on, and putting it back
(petrel.adapters.dead_letters; petrel.services.redrive reopens what the send worker ended
`worker-error`). QUEUE is a send queue, `ingest` (incoming mail the ingest worker failed) or
`schedules` (retries EventBridge Scheduler could not deliver)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from cli.command import Context, Groups, add_groups, add_parser
from petrel import resources
from petrel.adapters.dead_letters import DeadLetter, dead_letter_queues
from petrel.models.inbound import IngestJob
from petrel.models.jobs import SendJob


def register(groups: Groups[argparse.ArgumentParser]) -> None:
    commands = add_groups(add_parser(groups, "dlq", "dead-letter queues"), "dlq commands")
    names = list(dead_letter_queues())
    listing = add_parser(
        commands,
        "list",
        "show what a dead-letter queue holds (the messages stay, visible)",
        "Print the DLQ's approximate depth, then one line per message: a send job's tenant, email, "
        "message, attempt and pool; an ingest job's tenant, inbound id, source (imap, push, local), "
        "mailbox and received time. A body that is not what the queue carries is flagged. Messages are "
        "received briefly and made visible again at once, so a redrive right after sees them.",
    )
    listing.add_argument("queue", choices=names, help="whose dead-letter queue")
    listing.add_argument("--limit", type=positive, default=50, help="show at most N messages")
    listing.set_defaults(handler=list_letters)
    redrive = add_parser(
        commands,
        "redrive",
        "move dead letters back to the queue they came from",
        "Send each dead letter back (a send DLQ to its send queue, the ingest DLQ to the ingest queue, the "
        "schedules DLQ to the send queue of the job's pool), then delete it from the DLQ; a crash in "
        "between leaves a copy in both, never none. A message the send worker ended failed/worker-error "
        "is first reopened (queued again at its attempt), so its job runs once more. Ingest letters go "
        "back unchanged: ingest is idempotent per inbound id, so redriving a letter whose message was "
        "meanwhile ingested is harmless (it finds its record). Safe to repeat: a job whose attempt is "
        "done does nothing. What cannot be placed (an unparseable schedules-DLQ body) is left and "
        "reported.",
    )
    redrive.add_argument("queue", choices=names, help="whose dead-letter queue")
    redrive.add_argument("--limit", type=positive, default=None, help="take at most N messages (default: all)")
    redrive.set_defaults(handler=redrive_letters)
    for sub in (listing, redrive):
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _dlq_name(context: Context, queue: str) -> str:
    letters = context.services.dead_letters
    return resources.physical_name(context.target.settings.name_prefix, letters.queue(queue).dlq)


def list_letters(args: argparse.Namespace, context: Context) -> int:
    letters = context.services.dead_letters
    name = _dlq_name(context, args.queue)
    now = datetime.now(UTC)
    depth = letters.depth(args.queue)
    shown = letters.peek(args.queue, args.limit)
    if context.output.as_json:
        context.output.json(
            {
                "queue": name,
                "approximate_depth": {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed},
                "messages": [letter.summary(now) for letter in shown],
            }
        )
        return 0
    context.output.line(
        f"{name}: about {depth.total} message(s) ({depth.visible} visible, {depth.in_flight} in flight, "
        f"{depth.delayed} delayed); showing {len(shown)}"
    )
    for letter in shown:
        context.output.line(letter_line(letter, now))
    return 0


def redrive_letters(args: argparse.Namespace, context: Context) -> int:
    from petrel.services.redrive import reopen_for_redrive

    letters = context.services.dead_letters
    name = _dlq_name(context, args.queue)
    if letters.queue(args.queue).kind == "send":
        redrive = context.services.redrive
        report = letters.redrive(args.queue, args.limit, prepare=lambda job: reopen_for_redrive(redrive, job))
    else:  # ingest jobs go back as they are: no message record to reopen
        report = letters.redrive(args.queue, args.limit)
    if context.output.as_json:
        context.output.json(
            {
                "queue": name,
                "moved": [
                    {"sqs_message_id": m.letter.message_id, "queue": m.queue, "new_sqs_message_id": m.new_message_id}
                    for m in report.moved
                ],
                "left": [{"sqs_message_id": left.letter.message_id, "reason": left.reason} for left in report.left],
            }
        )
        return 0
    per_queue: dict[str, int] = {}
    for moved in report.moved:
        per_queue[moved.queue] = per_queue.get(moved.queue, 0) + 1
    where = ", ".join(f"{count} to {queue}" for queue, count in sorted(per_queue.items()))
    context.output.line(
        f"{name}: moved {len(report.moved)}" + (f" ({where})" if where else "") + f", left {len(report.left)}"
    )
    for left in report.left:
        context.output.line(f"  left {left.letter.message_id}: {left.reason}")
    return 0


def duration(span: timedelta) -> str:
    """A short age: 7s, 1m05s, 3h02m, 2d01h."""
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
    """A moment in UTC to the second (a naive one is taken as UTC already)."""
    if moment is None:
        return "-"
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def letter_line(letter: DeadLetter, now: datetime) -> str:
    """One dead letter in one line (its job's ids, never a parsed body), plus the scheduler's error if any."""
    age = letter.age(now)
    parts = [
        letter.message_id,
        f"received {letter.receive_count}x",
        f"sent {_time(letter.sent_at)}",
        f"first received {_time(letter.first_received_at)}",
        f"age {duration(age) if age is not None else '-'}",
    ]
    job = letter.parsed
    if isinstance(job, IngestJob):
        parts.append(ingest_fields(job))
    elif isinstance(job, SendJob):
        parts.append(f"tenant={job.tenant_id} email={job.email_id} message={job.message_id}")
        parts.append(f"attempt={job.attempt} pool={job.pool}")
    elif job is not None:  # a scheduled email's release
        parts.append(f"tenant={job.tenant_id} email={job.email_id} release pool={job.pool}")
    elif letter.kind == "ingest":
        parts.append(f"not an ingest job: {letter.body[:80]!r}")
    else:
        parts.append(f"unparseable body: {letter.body[:80]!r}")
    line = "  ".join(parts)
    if error := letter.scheduler_error:
        shown = {k: v for k, v in error.items() if k in ("ERROR_CODE", "ERROR_MESSAGE", "RETRY_ATTEMPTS")} or error
        line += "\n    scheduler error: " + "  ".join(f"{k}={v}" for k, v in shown.items())
    return line


def ingest_fields(job: IngestJob) -> str:
    """Where an ingest job's message came from, enough to find it in its mailbox or with the inbound API."""
    where = f"mailbox={job.mailbox_id or '-'}"
    if job.folder is not None:
        where += f" folder={job.folder}"
    if job.uid is not None:
        where += f" uid={job.uid}"
    return (
        f"tenant={job.tenant_id} inbound={job.inbound_id} source={job.source} {where}  "
        f"received {_time(job.received_at)}"
    )
