"""`python -m local`: bring the whole platform up on 127.0.0.1 until Ctrl-C (SIGINT or SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.platform import LocalConfig, LocalPlatform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".petrel"), help="state and local.json (default .petrel)")
    parser.add_argument("--port", type=int, default=8080, help="API port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    platform = LocalPlatform(LocalConfig(workdir=args.workdir, api_port=args.port))
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
    box = info["test_mailbox"]
    print(
        "\nPetrel is running.\n"
        f"  API        {info['api_url']}/v1   (OpenAPI: {info['api_url']}/v1/openapi.json)\n"
        f"  API key    {info['api_key']}\n"
        f"  tenant     {info['tenant_id']}   sending as {info['from_address']}\n"
        f"  mailbox    {box['address']} over IMAPS {box['imap_host']}:{box['imap_port']} (password in local.json)\n"
        f"  state      {args.workdir / 'local.json'}\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        print("stopping...", flush=True)
        platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
