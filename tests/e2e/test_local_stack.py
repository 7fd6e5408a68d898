"""`make run` as a user runs it: `python -m local` comes up, serves the API, writes local.json,
delivers into the test mailbox, stops everything on Ctrl-C, and starts again in the same place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.mailu import find_processes
from tests.e2e.conftest import Api, read_mailbox

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="petrel-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(workdir: Path) -> tuple[subprocess.Popen[str], dict]:
    state = workdir / "local.json"
    state.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PETREL_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--workdir", str(workdir), "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        output.append(line)
        if "Ctrl-C stops everything" in line:
            break
        if time.monotonic() > deadline:
            break
    assert state.exists(), "".join(output)
    return process, json.loads(state.read_text())


def _stop(process: subprocess.Popen[str], sig: int) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0


def test_run_serves_delivers_and_stops_cleanly_twice(workdir: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        process, info = _start(workdir)
        try:
            for field in ("api_url", "api_key", "tenant_id", "from_address"):
                assert info[field]
            box = info["test_mailbox"]
            assert {"address", "imap_host", "imap_port", "imap_security", "username", "password", "ca_file"} <= set(box)
            api = Api(info["api_url"], info["api_key"])
            subject = f"make run {uuid.uuid4().hex[:8]}"
            status, sent = api.call(
                "POST",
                "/v1/emails",
                {"from": info["from_address"], "to": box["address"], "subject": subject, "text": "hi"},
            )
            assert status == 202, sent
            assert len(read_mailbox(box, subject=subject)) == 1
            view = api.wait_for(sent["id"], lambda v: v["recipients"][0]["status"] == "relayed")
            assert view["recipients"][0]["last_reply"]["code"] == 250

            cli = subprocess.run(  # noqa: PLW1510 - the return code is asserted below
                [sys.executable, "-m", "petrel.cli.main", "--workdir", str(workdir), "--json", "tenant", "list"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PETREL_"))},
            )
            assert cli.returncode == 0, cli.stderr
            assert [t["tenant_id"] for t in json.loads(cli.stdout)] == [info["tenant_id"]]
        finally:
            _stop(process, sig)
        assert find_processes(workdir) == [], "Postfix or Dovecot outlived the local stack"
