"""ReplicateFunction's handler in process over moto: batch in, partial batch response out."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from crr.adapters.dynamodb import DynamoRules
from crr.composition import forget_warm_objects
from crr.rules import RuleStatus
from tests.support.aws import client, create_bucket, create_rules_table
from tests.support.events import load_body, load_event, sqs_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.rules import make_rule

SRC, DST, TABLE = "crr-demo-source", "crr-demo-replica", "rules"


@pytest.fixture
def deployed(aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("RULES_TABLE_NAME", TABLE)
    monkeypatch.setenv("AWS_REGION", "us-west-1")
    sqs = client("sqs", "us-west-1")
    monkeypatch.setenv("REPLICATION_QUEUE_URL", sqs.create_queue(QueueName="replication")["QueueUrl"])
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", sqs.create_queue(QueueName="replication-dlq")["QueueUrl"])
    s3 = client("s3", "us-west-1")
    create_bucket(s3, SRC, "us-west-1", versioned=True)
    create_bucket(client("s3", "us-east-1"), DST, "us-east-1")
    dynamodb = client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, TABLE)
    DynamoRules(dynamodb, TABLE).create(
        make_rule(
            rule_id="demo",
            source_bucket=SRC,
            destination_bucket=DST,
        )
    )
    from functions.replicate import handler

    return handler, s3


def notification_for(s3: Any, key: str) -> str:
    """The sample put notification, pointed at an object that really exists."""
    head = s3.head_object(Bucket=SRC, Key=key)
    document = load_event("s3/object-created-put")
    obj = document["Records"][0]["s3"]["object"]
    obj.update(key=key, versionId=head["VersionId"], eTag=head["ETag"].strip('"'))
    return json.dumps(document)


def test_a_batch_replicates_its_objects_and_dead_letters_the_malformed_record_with_its_reason(deployed: Any) -> None:
    handler, s3 = deployed
    # Given an object in the source and a batch holding its notification, a test event and garbage
    s3.put_object(Bucket=SRC, Key="reports/2026/summary.csv", Body=b"a,b\n", ContentType="text/csv")
    event = sqs_event(notification_for(s3, "reports/2026/summary.csv"), load_body("s3/test-event"), "{garbage")
    # When the handler runs
    response = handler.lambda_handler(event, FakeLambdaContext())
    # Then no record is left to retry: the garbage went straight to the DLQ, saying why
    assert response["batchItemFailures"] == []
    sqs = client("sqs", "us-west-1")
    dead = sqs.receive_message(QueueUrl=os.environ["DEAD_LETTER_QUEUE_URL"], MessageAttributeNames=["All"])
    [letter] = dead["Messages"]
    assert letter["Body"] == "{garbage"
    assert letter["MessageAttributes"]["crr-error-code"]["StringValue"] == "MalformedEvent"
    assert letter["MessageAttributes"]["crr-original-message-id"]["StringValue"] == event["Records"][2]["messageId"]
    # And the object is in the destination
    replica = client("s3", "us-east-1").get_object(Bucket=DST, Key="reports/2026/summary.csv")
    assert replica["Body"].read() == b"a,b\n"
    assert replica["ContentType"] == "text/csv"


def test_a_paused_rule_writes_no_replica_even_after_an_enabled_rule_warmed_the_process(deployed: Any) -> None:
    """The isolation guard, in one test so that no test distribution can split it: what an enabled rule
    warmed in this process (clients, the rule cache) must not answer once the warm objects are forgotten,
    as tests/conftest.py forgets them between tests."""
    handler, s3 = deployed
    destination = client("s3", "us-east-1")
    # Given the enabled rule replicated an object in this process, warming its rule cache
    s3.put_object(Bucket=SRC, Key="warm/first.csv", Body=b"a,b\n")
    assert handler.lambda_handler(sqs_event(notification_for(s3, "warm/first.csv")), FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert [o["Key"] for o in destination.list_objects_v2(Bucket=DST)["Contents"]] == ["warm/first.csv"]
    # And the boundary between two tests passes, then the rule is paused and another object written
    forget_warm_objects()
    DynamoRules(client("dynamodb", "us-west-1"), TABLE).set_status("demo", RuleStatus.PAUSED)
    s3.put_object(Bucket=SRC, Key="reports/2026/summary.csv", Body=b"a,b\n")
    # When the handler runs for the new object
    response = handler.lambda_handler(sqs_event(notification_for(s3, "reports/2026/summary.csv")), FakeLambdaContext())
    # Then the record is acknowledged and no replica of it is written
    assert response["batchItemFailures"] == []
    assert [o["Key"] for o in destination.list_objects_v2(Bucket=DST)["Contents"]] == ["warm/first.csv"]


def test_a_dead_letter_dates_its_first_failure_from_the_first_delivery(deployed: Any) -> None:
    handler, _ = deployed
    # Given a malformed message SQS first delivered at the sample event's ApproximateFirstReceiveTimestamp
    event = sqs_event("{garbage")
    first = datetime.fromtimestamp(
        int(event["Records"][0]["attributes"]["ApproximateFirstReceiveTimestamp"]) / 1000, UTC
    )
    # When the handler dead-letters it
    assert handler.lambda_handler(event, FakeLambdaContext())["batchItemFailures"] == []
    # Then its reason says when it first failed and how many deliveries it took
    dead = client("sqs", "us-west-1").receive_message(
        QueueUrl=os.environ["DEAD_LETTER_QUEUE_URL"], MessageAttributeNames=["All"]
    )
    [letter] = dead["Messages"]
    assert letter["MessageAttributes"]["crr-first-failure"]["StringValue"] == first.isoformat()
    assert letter["MessageAttributes"]["crr-attempts"]["StringValue"] == "1"


def test_a_record_for_a_bucket_without_a_rule_is_acknowledged(deployed: Any) -> None:
    handler, _ = deployed
    document = load_event("s3/object-created-put")
    document["Records"][0]["s3"]["bucket"]["name"] = "unruled-bucket"
    response = handler.lambda_handler(sqs_event(json.dumps(document)), FakeLambdaContext())
    # Then it is neither retried nor dead-lettered (a failure would be one or the other)
    assert response["batchItemFailures"] == []
    dead = client("sqs", "us-west-1").receive_message(QueueUrl=os.environ["DEAD_LETTER_QUEUE_URL"])
    assert dead.get("Messages", []) == []


def test_a_missing_table_setting_fails_the_invocation_clearly(deployed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    handler, _ = deployed
    monkeypatch.delenv("RULES_TABLE_NAME")
    from crr.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="RULES_TABLE_NAME"):
        handler.lambda_handler(sqs_event(load_body("s3/test-event")), FakeLambdaContext())


def test_metrics_are_emitted_per_rule_once_per_batch(deployed: Any, capsys: pytest.CaptureFixture[str]) -> None:
    handler, s3 = deployed
    # Given two objects replicated in one batch
    for key in ("m/1", "m/2"):
        s3.put_object(Bucket=SRC, Key=key, Body=b"12345")
    capsys.readouterr()
    handler.lambda_handler(sqs_event(notification_for(s3, "m/1"), notification_for(s3, "m/2")), FakeLambdaContext())
    # Then one EMF document carries the rule's dimension and both objects' figures
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    per_rule = [doc for doc in documents if doc.get("rule") == "demo"]
    assert len(per_rule) == 1
    assert per_rule[0]["ObjectsReplicated"] == [1.0, 1.0]
    assert per_rule[0]["BytesReplicated"] == [5.0, 5.0]
    assert ["rule", "service"] in per_rule[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]


def test_an_overwrite_of_a_replicated_key_is_counted_for_the_overwrite_alarm(
    deployed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handler, s3 = deployed

    def replicated_metrics(sequencer: str) -> dict[str, Any]:
        document = json.loads(notification_for(s3, "o/1"))
        document["Records"][0]["s3"]["object"]["sequencer"] = sequencer
        capsys.readouterr()
        handler.lambda_handler(sqs_event(json.dumps(document)), FakeLambdaContext())
        lines = capsys.readouterr().out.splitlines()
        documents: list[dict[str, Any]] = [json.loads(line) for line in lines if line.startswith('{"_aws"')]
        [per_rule] = [doc for doc in documents if doc.get("rule") == "demo"]
        return per_rule

    # Given a new object replicated: it is a copy, not an overwrite
    s3.put_object(Bucket=SRC, Key="o/1", Body=b"original")
    assert "OverwritesReplicated" not in replicated_metrics("0055AED6DCD90281E5")
    # When it is rewritten in place and replicated again, Then the copy counts as an overwrite
    s3.put_object(Bucket=SRC, Key="o/1", Body=b"encrypted junk")
    assert replicated_metrics("0055AED6DCD90281F0")["OverwritesReplicated"] == [1.0]


def test_logs_hold_neither_object_contents_nor_credentials(
    deployed: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, s3 = deployed
    # Given an object with a recognisable body and a recognisable secret key in the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET-abcdef0123456789")
    from io import StringIO

    from crr.observability import logger

    log = StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    s3.put_object(Bucket=SRC, Key="contents/check.txt", Body=b"BODY-should-never-be-logged")
    capsys.readouterr()
    # When it is replicated, and a malformed record fails next to it (error paths log the most)
    handler.lambda_handler(sqs_event(notification_for(s3, "contents/check.txt"), "{garbage"), FakeLambdaContext())
    logged = capsys.readouterr()
    # Then the logs name the key, and hold neither the bytes nor the secret
    output = logged.out + logged.err + log.getvalue()
    assert "contents/check.txt" in output
    assert "BODY-should-never-be-logged" not in output
    assert "SECRET-abcdef0123456789" not in output


def test_a_batch_with_no_working_time_is_handed_back_unstarted_instead_of_failing(deployed: Any) -> None:
    handler, s3 = deployed
    # Given two notifications, and an invocation that starts with less time than its reserve
    s3.put_object(Bucket=SRC, Key="late/one.txt", Body=b"1")
    s3.put_object(Bucket=SRC, Key="late/two.txt", Body=b"2")
    bodies = [notification_for(s3, "late/one.txt"), notification_for(s3, "late/two.txt")]
    # When the handler runs
    near_its_end = FakeLambdaContext(remaining_millis=300)  # less than the reserve: no working time at all
    response = handler.lambda_handler(sqs_event(*bodies), near_its_end)
    # Then it answers (no error for an entirely failed batch), acknowledging both
    assert response["batchItemFailures"] == []
    # And both went back to the replication queue unstarted, as new messages
    sqs = client("sqs", "us-west-1")
    queued = sqs.receive_message(QueueUrl=os.environ["REPLICATION_QUEUE_URL"], MaxNumberOfMessages=10)["Messages"]
    assert sorted(message["Body"] for message in queued) == sorted(bodies)
    assert "Contents" not in client("s3", "us-east-1").list_objects_v2(Bucket=DST)


def test_the_handler_answers_with_an_injected_message_handler_without_reading_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.replicate import handler
    from tests.support.fakes import FakeS3
    from tests.unit.test_failures import message_handler_with
    from tests.unit.test_replication import DST as FAKE_DESTINATION

    # Given no function settings at all, and a message handler over in-memory fakes holding one source object
    for name in ("RULES_TABLE_NAME", "REPLICATION_QUEUE_URL", "DEAD_LETTER_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    s3 = FakeS3()
    s3.create_bucket("crr-demo-source", "us-west-1")
    s3.create_bucket(FAKE_DESTINATION, "us-east-1")
    s3.put("crr-demo-source", "reports/2026/summary.csv", b"a,b\n")
    message_handler, failures, _ = message_handler_with(s3)
    # When the handler runs a batch with that message handler injected
    response = handler.lambda_handler(
        sqs_event(load_body("s3/object-created-put")), FakeLambdaContext(), message_handler=message_handler
    )
    # Then the injected message handler replicated the object, and nothing failed
    assert response["batchItemFailures"] == []
    assert failures.recorded == []
    replica = s3.buckets[FAKE_DESTINATION].current("reports/2026/summary.csv")
    assert replica is not None
    assert replica.body == b"a,b\n"
