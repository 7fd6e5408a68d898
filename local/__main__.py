"""`python -m local`: bring the whole platform up on 127.0.0.1 until Ctrl-C (SIGINT or SIGTERM).

Ctrl-C in a terminal signals the whole process group: the platform then stops in order (the front, the
timers, the queue pumps, then moto, LocalStack and the stand-in) and prints nothing but "stopping...".
A second start begins afresh (empty moto and LocalStack, empty mailboxes).

`--backend localstack` puts SQS, S3, Secrets Manager and Scheduler on LocalStack (`make localstack`
installs it), DynamoDB stays on moto's server. `--log-format text` (the default) prints one short line
per log record; `json` prints Powertools' JSON, as on Lambda.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.aws import BACKENDS
from local.console import LOG_FORMATS, MetricsToFile, stdlib_console_formatter
from local.platform import LocalConfig, LocalPlatform

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(".petrel"), help="state and local.json (default .petrel)")
    parser.add_argument("--port", type=int, default=8080, help="API port on 127.0.0.1 (default 8080; 0: any free port)")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="the functions' and the local stack's log level (default INFO: a line per request and delivery attempt)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: one short line per log record (default); json: Powertools' JSON lines, as on Lambda",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="moto",
        help="moto: moto's server for every AWS service (default); localstack: LocalStack (`make localstack`) "
        "for SQS, S3, Secrets Manager and Scheduler, moto's server for DynamoDB",
    )
    parser.add_argument(
        "--metrics-on-console",
        action="store_true",
        help="print the functions' EMF metric JSON on the console (default: into WORKDIR/metrics.jsonl)",
    )
    return parser.parse_args(argv)


def _aws_line(info: dict[str, object]) -> str:
    """Where AWS is: moto's endpoint, and LocalStack's with the services sent there."""
    aws = info["aws"]
    assert isinstance(aws, dict)
    default = str(aws["endpoint_url"])
    elsewhere: dict[str, list[str]] = {}
    for service, url in dict(aws.get("endpoint_urls") or {}).items():
        if url != default:
            elsewhere.setdefault(str(url), []).append(str(service))
    others = "".join(f"; LocalStack {url} for {', '.join(names)}" for url, names in elsewhere.items())
    return f"  AWS        moto {default}{' for the rest' if others else ''}{others}\n"


def _dns_line(info: dict[str, object]) -> str:
    """Where the sending domains' records are served (local.knot), and how to publish a new domain's."""
    dns = info.get("dns")
    if not isinstance(dns, dict):
        return ""
    return f"  DNS        Knot {dns['host']}:{dns['port']} (new domain's records: `petrel dns publish <domain>`)\n"


def _banner(info: dict[str, object], workdir: Path) -> str:
    box = info["test_mailbox"]
    relay = info["relay"]
    mailboxes = info["mailboxes"]
    assert isinstance(box, dict) and isinstance(relay, dict) and isinstance(mailboxes, list)
    return (
        "\nPetrel is running.\n"
        f"  API        {info['api_url']}/v1   (Swagger UI: {info['api_url']}/v1/docs; "
        f"OpenAPI: {info['api_url']}/v1/openapi.json)\n"
        f"  API key    {info['api_key']}\n"
        f"  tenant     {info['tenant_id']}   sending as {info['from_address']}\n"
        f"  mailbox    {box['address']} over IMAPS {box['imap_host']}:{box['imap_port']} (password in local.json)\n"
        f"  reads      {', '.join(str(m['address']) for m in mailboxes)} every {info['poll_seconds']} s "
        f"(reports, replies); mail to {info['bounce_recipient']} bounces\n"
        f"  relay      {relay['username']} on {relay['host']}:{relay['port']} (`petrel server add`; local.json)\n"
        f"{_aws_line(info)}"
        f"{_dns_line(info)}"
        f"  state      {workdir / 'local.json'}\n"
        f"  metrics    {workdir / 'metrics.jsonl'}\n"
        "Ctrl-C stops everything.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_format == "text":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(stdlib_console_formatter())
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.metrics_on_console:
        sys.stdout = MetricsToFile(sys.stdout, args.workdir / "metrics.jsonl")
    config = LocalConfig(
        workdir=args.workdir,
        api_port=args.port,
        log_level=args.log_level,
        log_format=args.log_format,
        backend=args.backend,
    )
    platform = LocalPlatform(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        info = platform.start()
    except Exception as exc:
        platform.stop()
        print(f"petrel: the local stack did not start: {exc}", file=sys.stderr)
        return 1
    if not stop.is_set():  # a Ctrl-C during the start stops it right after
        print(_banner(info, args.workdir), flush=True)
    try:
        stop.wait()
    finally:
        print("stopping...", flush=True)
        platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
