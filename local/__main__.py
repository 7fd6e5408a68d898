"""`python -m local`: bring the whole platform up on 127.0.0.1 until Ctrl-C (SIGINT or SIGTERM).

Ctrl-C in a terminal signals the whole process group: the platform then stops in order (the front, the
timers, the queue pumps, then moto and the stand-in) and prints nothing but "stopping...". A second
start begins afresh (empty moto, empty mailboxes).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.console import MetricsToFile
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
        "--metrics-on-console",
        action="store_true",
        help="print the functions' EMF metric JSON on the console (default: into WORKDIR/metrics.jsonl)",
    )
    return parser.parse_args(argv)


def _banner(info: dict[str, object], workdir: Path) -> str:
    box = info["test_mailbox"]
    relay = info["relay"]
    assert isinstance(box, dict) and isinstance(relay, dict)
    return (
        "\nPetrel is running.\n"
        f"  API        {info['api_url']}/v1   (OpenAPI: {info['api_url']}/v1/openapi.json)\n"
        f"  API key    {info['api_key']}\n"
        f"  tenant     {info['tenant_id']}   sending as {info['from_address']}\n"
        f"  mailbox    {box['address']} over IMAPS {box['imap_host']}:{box['imap_port']} (password in local.json)\n"
        f"  relay      {relay['username']} on {relay['host']}:{relay['port']} (`petrel server add`; local.json)\n"
        f"  state      {workdir / 'local.json'}\n"
        f"  metrics    {workdir / 'metrics.jsonl'}\n"
        "Ctrl-C stops everything.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.metrics_on_console:
        sys.stdout = MetricsToFile(sys.stdout, args.workdir / "metrics.jsonl")
    platform = LocalPlatform(LocalConfig(workdir=args.workdir, api_port=args.port, log_level=args.log_level))
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
