"""Alarms: what each one watches, and that each one mails the environment's alarm topic."""

from __future__ import annotations

import re
from typing import Any

import pytest

import app as petrel_app
from infra.config import EnvironmentConfig
from petrel import resources

pytestmark = pytest.mark.infra

FIVE_MINUTES = 300


def _alarms(resources_of: Any) -> dict[str, dict[str, Any]]:
    return {a["Properties"]["AlarmName"]: a["Properties"] for a in resources_of("AWS::CloudWatch::Alarm").values()}


def _by_name(resources_of: Any, resource_type: str, key: str, name: str) -> str:
    [lid] = [lid for lid, r in resources_of(resource_type).items() if r["Properties"][key] == name]
    return lid


def _queue_id(resources_of: Any, name: str) -> str:
    return _by_name(resources_of, "AWS::SQS::Queue", "QueueName", name)


def _expected(resources_of: Any, config: EnvironmentConfig) -> dict[str, dict[str, Any]]:
    """Alarm name -> the properties that say what it watches."""
    name = config.physical_name
    worker_id = _by_name(resources_of, "AWS::Lambda::Function", "FunctionName", name("send-worker"))
    at_least_one = {"ComparisonOperator": "GreaterThanOrEqualToThreshold", "Threshold": 1, "Statistic": "Maximum"}
    above_zero = {"ComparisonOperator": "GreaterThanThreshold", "Threshold": 0, "Statistic": "Sum"}

    def queue_depth(queue_name: str) -> dict[str, Any]:
        dimension = {"Name": "QueueName", "Value": {"Fn::GetAtt": [_queue_id(resources_of, queue_name), "QueueName"]}}
        return {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [dimension],
            **at_least_one,
        }

    def worker(metric: str) -> dict[str, Any]:
        return {
            "Namespace": "AWS/Lambda",
            "MetricName": metric,
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": worker_id}}],
            **above_zero,
        }

    expected: dict[str, dict[str, Any]] = {}
    for queue in resources.QUEUES:  # the send queues and the ingest queue
        dlq = resources.dlq_name(queue)
        expected[name(f"{dlq}-not-empty")] = queue_depth(name(dlq))
        queue_dimension = {
            "Name": "QueueName",
            "Value": {"Fn::GetAtt": [_queue_id(resources_of, name(queue.name)), "QueueName"]},
        }
        expected[name(f"{queue.name}-oldest-message")] = {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateAgeOfOldestMessage",
            "Dimensions": [queue_dimension],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": config.oldest_message_alarm_seconds,
            "Statistic": "Maximum",
        }
    expected[name(f"{resources.SCHEDULES.dlq}-not-empty")] = queue_depth(name(resources.SCHEDULES.dlq))
    expected[name(f"{resources.SCHEDULES.group}-dead-letter-failed")] = {
        "Namespace": "AWS/Scheduler",
        "MetricName": "InvocationsFailedToBeSentToDeadLetterCount",
        "Dimensions": [{"Name": "ScheduleGroup", "Value": name(resources.SCHEDULES.group)}],
        **above_zero,
    }
    expected[name("send-worker-errors")] = worker("Errors")
    expected[name("send-worker-throttles")] = worker("Throttles")
    sweeper_id = _by_name(resources_of, "AWS::Lambda::Function", "FunctionName", name("sweeper"))
    expected[name("sweeper-errors")] = {
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": sweeper_id}}],
        **above_zero,
    }
    # Any SMTP server the send worker paused (its EMF metric): the alarm on paused servers.
    expected[name("send-worker-servers-paused")] = {
        "Namespace": "Petrel",
        "MetricName": resources.SERVERS_PAUSED_METRIC,
        "Dimensions": [{"Name": "service", "Value": "petrel-send-worker"}],
        **above_zero,
    }
    # Any message the sweeper had to repair (its Powertools EMF metric, by service).
    expected[name("sweeper-repaired")] = {
        "Namespace": "Petrel",
        "MetricName": resources.SWEEP_REPAIRED_METRIC,
        "Dimensions": [{"Name": "service", "Value": "petrel-sweeper"}],
        **above_zero,
    }
    # Any mailbox the poller could not read (its EMF metric), and invocations of the ingest side that
    # failed as a whole.
    expected[name("imap-poller-mailbox-errors")] = {
        "Namespace": "Petrel",
        "MetricName": resources.POLL_ERRORS_METRIC,
        "Dimensions": [{"Name": "service", "Value": "petrel-imap-poller"}],
        **above_zero,
    }
    # Any domain whose records the domain checker could not look up (its EMF metric).
    expected[name("domain-checker-dns-errors")] = {
        "Namespace": "Petrel",
        "MetricName": resources.DOMAIN_DNS_ERRORS_METRIC,
        "Dimensions": [{"Name": "service", "Value": "petrel-domain-checker"}],
        **above_zero,
    }
    # Any domain it could not re-check at all (an unexpected error the run survived).
    expected[name("domain-checker-check-errors")] = {
        "Namespace": "Petrel",
        "MetricName": "DomainCheckErrors",
        "Dimensions": [{"Name": "service", "Value": "petrel-domain-checker"}],
        **above_zero,
    }
    for slug in ("imap-poller", "ingest-worker", "domain-checker"):
        function_id = _by_name(resources_of, "AWS::Lambda::Function", "FunctionName", name(slug))
        expected[name(f"{slug}-errors")] = {
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            **above_zero,
        }
    return expected


def test_the_alarms_and_what_each_watches(resources_of: Any, config: EnvironmentConfig) -> None:
    alarms = _alarms(resources_of)
    expected = _expected(resources_of, config)
    assert set(alarms) == set(expected)
    for alarm_name, watches in expected.items():
        props = alarms[alarm_name]
        assert {key: props[key] for key in watches} == watches, alarm_name
        assert props["Period"] == FIVE_MINUTES, alarm_name
        assert props["EvaluationPeriods"] == 1, alarm_name


def test_every_alarm_mails_the_topic_and_ignores_missing_data(resources_of: Any, config: EnvironmentConfig) -> None:
    [(topic_id, topic)] = resources_of("AWS::SNS::Topic").items()
    assert topic["Properties"]["TopicName"] == config.physical_name("alarms")
    assert "KmsMasterKeyId" in topic["Properties"]
    [subscription] = resources_of("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == config.alarm_email
    assert subscription["Properties"]["TopicArn"] == {"Ref": topic_id}
    for alarm_name, props in _alarms(resources_of).items():
        assert props["AlarmActions"] == [{"Ref": topic_id}], alarm_name
        assert props["TreatMissingData"] == "notBreaching", alarm_name
        assert config.name_prefix in props["AlarmDescription"], alarm_name


def test_dlq_alarms_keep_their_first_logical_ids(resources_of: Any) -> None:
    """A new logical id with the same AlarmName would make CloudFormation delete the new alarm."""
    ids = set(resources_of("AWS::CloudWatch::Alarm"))
    for construct_id in ("SendTransactionalDlq", "SendBulkDlq", "IngestDlq"):
        assert any(re.fullmatch(f"Alarms{construct_id}[0-9A-F]{{8}}", lid) for lid in ids), construct_id


def test_oldest_message_threshold_is_per_environment(
    all_environments: tuple[Any, Any], environments: dict[str, EnvironmentConfig]
) -> None:
    _, assembly = all_environments
    for env_name, config in environments.items():
        found = assembly.get_stack_artifact(petrel_app.stack_id(env_name)).template["Resources"].values()
        thresholds = {
            r["Properties"]["Threshold"]
            for r in found
            if r["Type"] == "AWS::CloudWatch::Alarm"
            and r["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
        }
        assert thresholds == {config.oldest_message_alarm_seconds}, env_name
