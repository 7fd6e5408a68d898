"""`make run` as a user runs it: `python -m local` comes up, serves the API, writes local.json (with
the stand-in's relay account), delivers into the test mailbox, prints a readable line per request and
delivery attempt (JSON with `--log-format json`), stops quietly and in order when the terminal's Ctrl-C
signals its whole process group, and starts again afresh in the same place."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.mailu import find_processes
from tests.e2e.support.api import Api, read_mailbox
from tests.e2e.support.tracking import SENT

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
READY = "Ctrl-C stops everything"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="petrel-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PETREL_", "POWERTOOLS_"))}


def _start(workdir: Path, *options: str) -> tuple[subprocess.Popen[str], dict, list[str]]:
    state = workdir / "local.json"
    state.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "local", "--workdir", str(workdir), "--port", "0", *options],
        cwd=REPO,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job has
    )
    assert process.stdout is not None
    output = []
    deadline = time.monotonic() + 60
    for line in process.stdout:
        output.append(line)
        if READY in line or time.monotonic() > deadline:
            break
    assert state.exists(), "".join(output)
    return process, json.loads(state.read_text()), output


def _stop(process: subprocess.Popen[str], sig: int) -> str:
    """Signal the whole process group, as Ctrl-C in a terminal does; what it printed from then on."""
    os.killpg(process.pid, sig)
    try:
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    return rest


def _relay_login(relay: dict) -> None:
    """The relay account in local.json works: STARTTLS verified against its CA, then AUTH."""
    context = ssl.create_default_context(cafile=relay["ca_file"])
    with smtplib.SMTP(relay["host"], relay["port"], timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.login(relay["username"], relay["password"])


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _check_text_console(output: str, info: dict, sent: dict) -> None:
    """The access line of the POST and the delivery attempt's line, as `make run` prints them."""
    time = r"\d\d:\d\d:\d\d\.\d{3}"
    access = (
        rf"^{time} INFO +api +request method=POST path=/v1/emails status=202 duration_ms=[\d.]+ "
        rf"tenant_id={info['tenant_id']}$"
    )
    attempt = (
        rf"^{time} INFO +send-worker +delivery attempt email_id={sent['id']} "
        rf"message_id={sent['recipients'][0]['id']} attempt=1 outcome=relayed smtp_code=250 "
        rf"smtp_enhanced_code=2\.0\.0 server_host=127\.0\.0\.1 duration_ms=\d+ tenant_id={info['tenant_id']} "
    )
    assert re.search(access, output, re.MULTILINE), output
    assert re.search(attempt, output, re.MULTILINE), output
    assert not _json_lines(output), "a JSON line on the text console"


def _check_json_console(output: str, sent: dict) -> None:
    """`--log-format json`: Powertools' JSON lines, as on Lambda."""
    lines = _json_lines(output)
    [access] = [line for line in lines if line["message"] == "request" and line["method"] == "POST"]
    assert (access["service"], access["status"]) == ("petrel-api", 202)
    [attempt] = [line for line in lines if line["message"] == "delivery attempt"]
    assert (attempt["service"], attempt["email_id"], attempt["outcome"]) == (
        "petrel-send-worker",
        sent["id"],
        "relayed",
    )


def test_run_serves_delivers_and_stops_quietly_twice(workdir: Path) -> None:
    for run, (sig, log_format) in enumerate(((signal.SIGINT, "text"), (signal.SIGTERM, "json"))):
        process, info, _ = _start(workdir, "--log-format", log_format)
        try:
            for field in ("api_url", "api_key", "tenant_id", "from_address"):
                assert info[field]
            box = info["test_mailbox"]
            assert {"address", "imap_host", "imap_port", "imap_security", "username", "password", "ca_file"} <= set(box)
            assert info["relay"]["security"] == "starttls" and info["relay"]["domain"] == "petrel.test"
            assert info["bounce_recipient"].endswith("@refuse.test") and info["poll_seconds"] > 0
            assert sorted(m["address"] for m in info["mailboxes"]) == ["bounces@petrel.test", "demo@petrel.test"]
            assert box["address"] == "inbox@recipient.test"
            _relay_login(info["relay"])
            api = Api(info["api_url"], info["api_key"])
            subject = f"make run {run} {uuid.uuid4().hex[:8]}"
            status, sent = api.call(
                "POST",
                "/v1/emails",
                {"from": info["from_address"], "to": box["address"], "subject": subject, "text": "hi"},
            )
            assert status == 202, sent
            assert len(read_mailbox(box, subject=subject)) == 1
            # A restart starts afresh: the first run's message is gone from the mailbox.
            assert [m["Subject"] for m in read_mailbox(box)] == [subject]
            view = api.wait_for(sent["id"], lambda v: v["recipients"][0]["status"] in SENT)
            assert view["recipients"][0]["attempt_log"][0]["reply"]["code"] == 250

            cli = subprocess.run(  # noqa: PLW1510 - the return code is asserted below
                [sys.executable, "-m", "cli", "--workdir", str(workdir), "--json", "tenant", "list"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                env=_clean_env(),
            )
            assert cli.returncode == 0, cli.stderr
            assert [t["tenant_id"] for t in json.loads(cli.stdout)] == [info["tenant_id"]]
        finally:
            after_signal = _stop(process, sig)
        before_stop, stopping, after_stop = after_signal.partition("stopping...\n")
        assert stopping and not after_stop.strip(), f"the stop printed more than it should:\n{after_stop}"
        assert "Traceback" not in before_stop and '{"_aws":' not in before_stop, before_stop
        if log_format == "text":
            _check_text_console(before_stop, info, sent)
        else:
            _check_json_console(before_stop, sent)
        assert find_processes(workdir) == [], "Postfix or Dovecot outlived the local stack"
    metrics = (workdir / "metrics.jsonl").read_text().splitlines()
    assert metrics and all(line.startswith('{"_aws":') for line in metrics), "EMF metrics belong in metrics.jsonl"
