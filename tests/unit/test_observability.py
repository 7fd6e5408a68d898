"""petrel.observability: each function's lines and metrics carry its own labels, in one process and
across threads, and EMF goes where it is told."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from petrel.observability import METRICS_FILE_ENV, Telemetry, redact_address, service_name, telemetry


@dataclass
class Context:
    """The attributes of a Lambda context that Powertools reads."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:test"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (METRICS_FILE_ENV, "POWERTOOLS_METRICS_DISABLED", "POWERTOOLS_DEV", "POWERTOOLS_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")


def fresh(role: str, **kwargs: Any) -> Telemetry:
    """A telemetry under a name no other test used: Powertools keeps one Python logger per service, bound
    to the stdout of the test that created it."""
    return telemetry(f"{role}-{uuid.uuid4().hex[:8]}", **kwargs)


def documents(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def metric_names(document: dict[str, Any]) -> set[str]:
    return {m["Name"] for block in document["_aws"]["CloudWatchMetrics"] for m in block["Metrics"]}


def test_service_name_is_the_loggers_and_the_metrics() -> None:
    made = telemetry("send-worker")
    assert service_name("send-worker") == "petrel-send-worker"
    assert made.logger.service == "petrel-send-worker"
    assert made.metrics.service == "petrel-send-worker"


def test_two_functions_never_flush_each_others_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    api, worker = fresh("api", metrics_file=path), fresh("send-worker", metrics_file=path)
    api.metrics.add_metric(name="Accepted", unit="Count", value=1)
    worker.metrics.add_metric(name="Delivered", unit="Count", value=2)
    api.metrics.flush_metrics()
    worker.metrics.flush_metrics()

    first, second = documents(path)
    assert (first["service"], metric_names(first), first["Accepted"]) == (api.logger.service, {"Accepted"}, [1.0])
    assert (second["service"], metric_names(second), second["Delivered"]) == (
        worker.logger.service,
        {"Delivered"},
        [2.0],
    )


def test_metrics_file_keeps_emf_off_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    made = fresh("sweeper", metrics_file=path)
    made.metrics.add_metric(name="Repaired", unit="Count", value=3)
    made.metrics.flush_metrics()
    assert capsys.readouterr().out == ""
    [document] = documents(path)
    assert document["Repaired"] == [3.0] and document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Petrel"


def test_metrics_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv(METRICS_FILE_ENV, str(path))
    made = fresh("api")
    made.metrics.add_metric(name="Accepted", unit="Count", value=1)
    made.metrics.flush_metrics()
    assert [d["Accepted"] for d in documents(path)] == [[1.0]]


def test_without_a_file_emf_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    made = fresh("api")
    made.metrics.add_metric(name="Accepted", unit="Count", value=1)
    made.metrics.flush_metrics()
    [document] = lines(capsys.readouterr().out)
    assert document["Accepted"] == [1.0] and document["service"] == made.logger.service


def test_metrics_disabled_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    path = tmp_path / "metrics.jsonl"
    made = fresh("api", metrics_file=path)
    made.metrics.add_metric(name="Accepted", unit="Count", value=1)
    made.metrics.flush_metrics()
    assert not path.exists()


def test_the_hundredth_value_is_flushed_to_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metrics.jsonl"
    made = fresh("send-worker", metrics_file=path)
    for _ in range(150):
        made.metrics.add_metric(name="Delivered", unit="Count", value=1)
    made.metrics.flush_metrics()
    assert capsys.readouterr().out == ""
    assert sum(len(d["Delivered"]) for d in documents(path)) == 150


def test_each_thread_flushes_only_its_own_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    made = fresh("send-worker", metrics_file=path)
    added = threading.Event()
    made.metrics.add_metric(name="MainThread", unit="Count", value=1)

    def other() -> None:
        made.metrics.add_metric(name="OtherThread", unit="Count", value=1)
        made.metrics.flush_metrics()
        added.set()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert added.is_set()
    made.metrics.flush_metrics()
    assert [metric_names(d) for d in documents(path)] == [{"OtherThread"}, {"MainThread"}]


def test_default_dimensions_reach_every_thread(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    made = fresh("api", metrics_file=path)
    made.metrics.set_default_dimensions(environment="dev")

    def other() -> None:
        made.metrics.add_metric(name="Accepted", unit="Count", value=1)
        made.metrics.flush_metrics()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    [document] = documents(path)
    assert document["environment"] == "dev" and document["service"] == made.logger.service


def test_invocation_keys_label_its_lines_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    made = fresh("api", metrics_file=tmp_path / "m.jsonl")

    @made.handler
    def handle(event: dict[str, str], context: Context) -> str:
        made.logger.info("inside")
        return event["value"]

    assert handle({"value": "one"}, Context("petrel-dev-api", "req-1")) == "one"
    assert handle({"value": "two"}, Context("petrel-dev-api", "req-2")) == "two"
    made.logger.info("outside")
    first, second, outside = lines(capsys.readouterr().out)
    assert (first["function_name"], first["function_request_id"], first["cold_start"]) == (
        "petrel-dev-api",
        "req-1",
        True,
    )
    assert (second["function_request_id"], second["cold_start"]) == ("req-2", False)
    assert "function_request_id" not in outside and outside["service"] == made.logger.service


def test_cold_start_is_per_function(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, worker = fresh("api", metrics_file=tmp_path / "m"), fresh("send-worker", metrics_file=tmp_path / "m")

    def say_hi(made: Telemetry) -> Callable[[Any, Any], Any]:
        return made.handler(lambda _event, _context: made.logger.info("hi"))

    for handler in [say_hi(api), say_hi(worker), say_hi(api)]:
        handler({}, Context("fn", "req"))
    assert [line["cold_start"] for line in lines(capsys.readouterr().out)] == [True, True, False]


def test_record_keys_are_removed_after_the_record(capsys: pytest.CaptureFixture[str]) -> None:
    made = fresh("send-worker")
    with made.record(tenant_id="tn_1", message_id="msg_1", attempt=2):
        made.logger.info("delivery")
    made.logger.info("next")
    delivery, after = lines(capsys.readouterr().out)
    assert (delivery["tenant_id"], delivery["message_id"], delivery["attempt"]) == ("tn_1", "msg_1", 2)
    assert not {"tenant_id", "message_id", "attempt"} & after.keys()


def test_record_keys_stay_on_their_thread(capsys: pytest.CaptureFixture[str]) -> None:
    made = fresh("send-worker")
    inside, logged = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait(5)
        made.logger.info("other thread")
        logged.set()

    thread = threading.Thread(target=other)
    thread.start()
    with made.record(tenant_id="tn_main"):
        inside.set()
        logged.wait(5)
        made.logger.info("main thread")
    thread.join()
    by_message = {line["message"]: line for line in lines(capsys.readouterr().out)}
    assert by_message["main thread"]["tenant_id"] == "tn_main"
    assert "tenant_id" not in by_message["other thread"]


def test_two_functions_lines_carry_their_own_service(capsys: pytest.CaptureFixture[str]) -> None:
    api, worker = fresh("api"), fresh("send-worker")
    api.logger.info("from api")
    worker.logger.info("from worker")
    services = {line["message"]: line["service"] for line in lines(capsys.readouterr().out)}
    assert services == {"from api": api.logger.service, "from worker": worker.logger.service}


def test_redact_address() -> None:
    assert redact_address("jane@example.com") == "j***@example.com"
    assert redact_address("nobody") == "***"
