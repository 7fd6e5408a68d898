"""Job queues (send and ingest), their dead-letter queues, and the workers' event sources."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import EnvironmentConfig
from petrel import resources

pytestmark = pytest.mark.infra


def _by_name(queues: dict[str, dict[str, Any]], name: str) -> tuple[str, dict[str, Any]]:
    matches = [(lid, q) for lid, q in queues.items() if q["Properties"].get("QueueName") == name]
    assert len(matches) == 1, f"expected one queue named {name}, found {len(matches)}"
    return matches[0]


@pytest.mark.parametrize("spec", resources.QUEUES, ids=lambda spec: spec.name)
def test_each_queue_has_its_own_dlq_and_redrive(resources_of: Any, config: EnvironmentConfig, spec: Any) -> None:
    queues = resources_of("AWS::SQS::Queue")
    _, queue = _by_name(queues, resources.physical_name(config.name_prefix, spec.name))
    dlq_id, dlq = _by_name(queues, resources.physical_name(config.name_prefix, resources.dlq_name(spec)))

    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    assert redrive["maxReceiveCount"] == config.dlq_max_receive_count
    assert "RedrivePolicy" not in dlq["Properties"]
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_dead_letter_queues_are_not_shared(resources_of: Any) -> None:
    targets = [
        str(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for q in resources_of("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    ]
    assert len(targets) == len(resources.QUEUES) == len(set(targets))


def test_visibility_timeout_is_six_times_the_consumers_timeout(resources_of: Any, config: EnvironmentConfig) -> None:
    queues = resources_of("AWS::SQS::Queue")
    consumer_timeout = {spec.name: config.worker_timeout_seconds for spec in resources.SEND_QUEUES}
    consumer_timeout[resources.INGEST.name] = config.ingest_timeout_seconds
    assert config.ingest_timeout_seconds != config.worker_timeout_seconds  # dev tells them apart
    for spec in resources.QUEUES:
        _, queue = _by_name(queues, resources.physical_name(config.name_prefix, spec.name))
        assert spec.visibility_factor == 6
        assert queue["Properties"]["VisibilityTimeout"] == 6 * consumer_timeout[spec.name]


def test_every_queue_is_encrypted_and_tls_only(resources_of: Any) -> None:
    queues = resources_of("AWS::SQS::Queue")
    # each job queue and its dead-letter queue, and EventBridge Scheduler's dead-letter queue
    assert len(queues) == 2 * len(resources.QUEUES) + 1
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True

    protected: set[str] = set()
    for policy in resources_of("AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies_plain_http = any(
            s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )
        if denies_plain_http:
            protected.update(ref["Ref"] for ref in policy["Properties"]["Queues"])
    assert protected == set(queues)


def test_event_source_per_send_queue_with_partial_batch_failures(resources_of: Any, config: EnvironmentConfig) -> None:
    queues = resources_of("AWS::SQS::Queue")
    functions = resources_of("AWS::Lambda::Function")
    mappings = list(resources_of("AWS::Lambda::EventSourceMapping").values())
    assert len(mappings) == len(resources.QUEUES)  # each send queue and the ingest queue
    for spec in resources.SEND_QUEUES:
        queue_id, _ = _by_name(queues, resources.physical_name(config.name_prefix, spec.name))
        [mapping] = [m for m in mappings if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}]
        props = mapping["Properties"]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["BatchSize"] == config.batch_size
        assert props["ScalingConfig"]["MaximumConcurrency"] == config.max_concurrency[spec.name]
        assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
        window = props.get("MaximumBatchingWindowInSeconds", 0)
        assert window == config.max_batching_window_seconds
        worker = functions[props["FunctionName"]["Ref"]]
        assert worker["Properties"]["FunctionName"] == resources.physical_name(config.name_prefix, "send-worker")


def test_the_ingest_worker_consumes_the_ingest_queue_with_partial_batch_failures(
    resources_of: Any, config: EnvironmentConfig
) -> None:
    queue_id, _ = _by_name(resources_of("AWS::SQS::Queue"), config.physical_name(resources.INGEST.name))
    [mapping] = [
        m["Properties"]
        for m in resources_of("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    ]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == config.ingest_batch_size
    assert mapping["ScalingConfig"]["MaximumConcurrency"] == config.ingest_max_concurrency
    assert mapping.get("MaximumBatchingWindowInSeconds", 0) == config.max_batching_window_seconds
    worker = resources_of("AWS::Lambda::Function")[mapping["FunctionName"]["Ref"]]
    assert worker["Properties"]["FunctionName"] == config.physical_name("ingest-worker")
