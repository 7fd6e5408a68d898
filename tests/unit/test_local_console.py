"""The `make run` console (local.console): a function's Powertools lines as one short text line each,
with the keys a person looks for, and JSON again once the local stack stops."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from local.console import ConsoleLogs, console_line, stdlib_console_formatter
from petrel.observability import Telemetry, telemetry

TENANT = "tn_1"


def _telemetry(role: str) -> Telemetry:
    """A function of its own (a new service, so a new Powertools logger writing to this test's stdout)."""
    return telemetry(f"{role}-{uuid.uuid4().hex[:6]}")


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_an_access_line_reads_method_path_status_duration_and_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    api = _telemetry("api")
    console = ConsoleLogs()
    console.install([api.logger])
    try:
        api.logger.info(
            "request",
            extra={
                "method": "POST",
                "path": "/v1/emails",
                "status": 202,
                "duration_ms": 41.2,
                "tenant_id": TENANT,
                "request_id": "req-1",
            },
        )
    finally:
        console.restore()
    [line] = _lines(capsys)
    head, _, keys = line.partition(" request ")
    time, level, function = head.split()
    assert len(time) == len("12:34:56.789") and time[2] == ":" and time[8] == "."
    assert (level, function) == ("INFO", api.function)
    assert keys == "method=POST path=/v1/emails status=202 duration_ms=41.2 tenant_id=tn_1"


def test_a_delivery_attempt_line_carries_the_records_keys_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    worker = _telemetry("send-worker")
    console = ConsoleLogs()
    console.install([worker.logger])
    try:
        with worker.record(tenant_id=TENANT, email_id="em_1", message_id="msg_1"):
            worker.logger.info(
                "delivery attempt",
                extra={
                    "attempt": 2,
                    "recipient": "b***@example.org",
                    "outcome": "relayed",
                    "detail": None,
                    "server_id": "srv_1",
                    "server_host": "mail.example.com",
                    "smtp_code": 250,
                    "smtp_enhanced_code": "2.0.0",
                    "duration_ms": 12,
                },
            )
    finally:
        console.restore()
    [line] = _lines(capsys)
    assert line.split(" delivery attempt ")[1] == (
        "email_id=em_1 message_id=msg_1 attempt=2 outcome=relayed smtp_code=250 smtp_enhanced_code=2.0.0 "
        "server_host=mail.example.com duration_ms=12 tenant_id=tn_1 recipient=b***@example.org"
    )


def test_an_exception_follows_its_line_and_restore_brings_json_back(capsys: pytest.CaptureFixture[str]) -> None:
    worker = _telemetry("send-worker")
    console = ConsoleLogs()
    console.install([worker.logger])
    try:
        raise RuntimeError("relay exploded")
    except RuntimeError:
        worker.logger.exception("delivery attempt", extra={"outcome": "error", "detail": "RuntimeError"})
    console.restore()
    worker.logger.info("after", extra={"outcome": "relayed"})
    lines = _lines(capsys)
    assert lines[0].endswith("ERROR   " + f"{worker.function:<11} delivery attempt outcome=error detail=RuntimeError")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-2] == "RuntimeError: relay exploded"
    after = json.loads(lines[-1])
    assert (after["message"], after["outcome"], after["service"]) == ("after", "relayed", f"petrel-{worker.function}")


def test_values_with_spaces_are_quoted_and_the_stdlib_lines_are_labelled_by_logger() -> None:
    record = logging.LogRecord("petrel.local", logging.WARNING, __file__, 1, "queue %s gone", ("a",), None)
    record.queue = "send transactional"
    line = stdlib_console_formatter().format(record)
    assert line.split(" ", 1)[1] == 'WARNING petrel.local queue a gone queue="send transactional"'
    assert console_line({"level": "INFO", "service": "petrel-api", "message": "m", "note": {"a": 1}}) == (
        ' INFO    api         m note={"a":1}'
    )


def test_an_idle_poll_is_left_off_the_text_console_and_a_poll_that_found_mail_or_failed_is_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    poller = _telemetry("imap-poller")
    idle = {"folder": "INBOX", "fetched": 0, "queued": 0, "uidvalidity_reset": False, "conflict": False}
    console = ConsoleLogs()
    console.install([poller.logger])
    try:
        poller.logger.info("mailbox polled", extra={"fetched": 0, "error": None, "folders": [idle]})
        poller.logger.info("mailbox polled", extra={"fetched": 2, "error": None, "folders": [idle | {"fetched": 2}]})
        poller.logger.info("mailbox polled", extra={"fetched": 0, "folders": [idle | {"uidvalidity_reset": True}]})
        poller.logger.warning("mailbox poll failed", extra={"fetched": 0, "error": "login refused"})
    finally:
        console.restore()
    lines = _lines(capsys)
    assert len(lines) == 3, lines
    assert "fetched=2" in lines[0] and "uidvalidity_reset" in lines[1] and "login refused" in lines[2]
    poller.logger.info("mailbox polled", extra={"fetched": 0, "error": None, "folders": [idle]})
    [restored] = _lines(capsys)  # JSON once the stack stops: nothing filtered
    assert json.loads(restored)["message"] == "mailbox polled"


def test_a_stop_keeps_warnings_only_in_either_format_until_restore(capsys: pytest.CaptureFixture[str]) -> None:
    poller, worker = _telemetry("imap-poller"), _telemetry("ingest-worker")
    console = ConsoleLogs()
    console.install([poller.logger])  # text for one, JSON for the other: quiet covers both
    console.quiet([poller.logger, worker.logger])
    poller.logger.info("mailbox polled", extra={"fetched": 1})
    worker.logger.info("inbound", extra={"outcome": "delivered"})
    worker.logger.warning("ingest failed", extra={"detail": "RecordNotFound"})
    console.restore()
    worker.logger.info("after")

    lines = _lines(capsys)
    assert len(lines) == 2
    assert json.loads(lines[0])["message"] == "ingest failed" and json.loads(lines[1])["message"] == "after"
