"""Hostile and odd message bodies (``events/bad``) through ReplicateFunction's handler over moto.

Each kind travels in a batch next to a valid notification for a real object. Whatever the kind:
the sibling replicates; the kind meets exactly its expected fate (acknowledged with a logged reason,
dead-lettered at once with its error code, or replicated from the source's current state); and the
destination never holds a key, or bytes, that the source does not.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pytest

from crr.adapters.dynamodb import DynamoRules
from crr.events import MAX_BODY_BYTES
from crr.observability import logger
from crr.rules import RuleStatus
from tests.support.aws import client, create_bucket, create_rules_table
from tests.support.events import EVENTS_DIR, load_event, load_raw_body, sqs_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.rules import make_rule

SRC, DST, TABLE = "crr-demo-source", "crr-demo-replica", "rules"
PAUSED_SRC, PREFIXED_SRC = "crr-paused-source", "crr-prefixed-source"
SIBLING_KEY, SIBLING_BYTES = "sibling/valid.txt", b"the sibling's bytes\n"

Fate = Literal["ack", "dlq", "dlq-record", "replicated"]

# kind (a file in events/bad) → ("ack", logged outcome or reason substring)
#                               ("dlq", crr-error-code) | ("replicated", key that must arrive)
#                               ("dlq-record", crr-error-code of the one bad record of several)
EXPECTED: dict[str, tuple[Fate, str]] = {
    # Not an S3 notification at all: nothing to act on, and retrying cannot change that.
    "invalid-json": ("dlq", "MalformedEvent"),
    "json-array": ("dlq", "MalformedEvent"),
    "json-string": ("dlq", "MalformedEvent"),
    "empty-body": ("dlq", "MalformedEvent"),
    "whitespace-body": ("dlq", "MalformedEvent"),
    "utf8-bom": ("dlq", "MalformedEvent"),
    "no-records": ("dlq", "MalformedEvent"),
    "empty-records": ("dlq", "MalformedEvent"),
    "records-not-a-list": ("dlq", "MalformedEvent"),
    "records-holding-null": ("dlq", "MalformedEvent"),
    "deeply-nested": ("dlq", "MalformedEvent"),
    "oversized-body": ("dlq", "MalformedEvent"),
    "sns-wrapped-garbage": ("dlq", "MalformedEvent"),
    "sns-message-not-a-string": ("dlq", "MalformedEvent"),
    "eventbridge-wrong-source": ("dlq", "MalformedEvent"),
    # Notification-shaped, but a field replication reads is wrong.
    "wrong-event-source": ("dlq", "MalformedEvent"),
    "invalid-bucket-name": ("dlq", "MalformedEvent"),
    "non-hex-sequencer": ("dlq", "MalformedEvent"),
    "forged-long-sequencer": ("dlq", "MalformedEvent"),
    "bad-percent-encoding": ("dlq", "MalformedEvent"),
    "lone-surrogate-key": ("dlq", "MalformedEvent"),
    "key-over-1024-bytes": ("dlq", "MalformedEvent"),
    "empty-key": ("dlq", "MalformedEvent"),
    "negative-size": ("dlq", "MalformedEvent"),
    "non-numeric-size": ("dlq", "MalformedEvent"),
    "garbage-event-time": ("dlq", "MalformedEvent"),
    "missing-s3-object": ("dlq", "MalformedEvent"),
    # Its first record is applied; only the malformed second one is dead-lettered, as a message of its own.
    "second-record-malformed": ("dlq-record", "MalformedEvent"),
    # Well formed but misrouted or forged: the rule has the bucket in another region.
    "bucket-in-other-region": ("dlq", "WrongRegion"),
    # Well formed, and there is nothing to do.
    "test-event": ("ack", "s3:TestEvent"),
    "unknown-event-name": ("ack", "does not change what replicates"),
    "lifecycle-expiration": ("ack", "does not change what replicates"),
    "eventbridge-restore-completed": ("ack", "does not change what replicates"),
    "bucket-without-rule": ("ack", "no_rule"),
    "paused-rule": ("ack", "rule_paused"),
    "key-outside-prefixes": ("ack", "outside_prefixes"),
    "duplicate-of-applied": ("ack", "duplicate"),
    "stale-sequencer": ("ack", "stale"),
    "delete-of-key-that-never-existed": ("ack", "deleted"),
    # Odd but valid: the replicator copies the source's current state, whatever the event says.
    "missing-sequencer": ("replicated", "hostile/no-sequencer.txt"),
    # The highest sequencer there is: a hint like any other, never a fence (issue 15.3).
    "forged-highest-sequencer": ("replicated", "hostile/fenced.txt"),
    "absurd-size": ("replicated", "hostile/absurd-size.bin"),
    "path-traversal-key": ("replicated", "../../etc/passwd"),
    "form-encoded-key": ("replicated", "hostile/a b+c d.txt"),
    "key-exactly-1024-bytes": ("replicated", "hostile/" + "k" * 1016),
    "nested-ignored-field": ("replicated", "hostile/nested-extra.txt"),
    "sns-wrapped-valid": ("replicated", "hostile/via-sns.txt"),
    "eventbridge-wrapped-valid": ("replicated", "hostile/via-eventbridge.txt"),
    "naive-event-time": ("replicated", "hostile/naive-time.txt"),
}


@dataclass
class Deployment:
    """ReplicateFunction with its buckets, rules and queues in moto, and its log lines."""

    handler: Any
    source: Any
    destination: Any
    sqs: Any
    log: io.StringIO

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        return dict(self.source.put_object(Bucket=SRC, Key=key, Body=body))

    def run(self, *bodies: str) -> tuple[list[str], dict[str, Any]]:
        """The handler's answer to one batch, and the message ids it was given (in order)."""
        event = sqs_event(*bodies)
        response = self.handler.lambda_handler(event, FakeLambdaContext(aws_request_id="req-hostile"))
        return [record["messageId"] for record in event["Records"]], response

    def dead_letters(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(
            QueueUrl=os.environ["DEAD_LETTER_QUEUE_URL"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        letters: list[dict[str, Any]] = answer.get("Messages", [])
        return letters

    def logged_for(self, message_id: str) -> list[dict[str, Any]]:
        entries = (json.loads(line) for line in self.log.getvalue().splitlines() if line.startswith("{"))
        return [entry for entry in entries if entry.get("message_id") == message_id]


def objects_in(s3: Any, bucket: str) -> dict[str, bytes]:
    """Every current object of ``bucket``, key → bytes."""
    contents: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            contents[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return contents


def put_notification(key: str) -> str:
    """The sample put notification, naming ``key`` (its version and ETag need not match: they are hints)."""
    document = load_event("s3/object-created-put")
    document["Records"][0]["s3"]["object"]["key"] = key
    return json.dumps(document)


def _first_delivery_copies(deployment: Deployment, body: str) -> None:
    [message_id], response = deployment.run(body)
    assert response["batchItemFailures"] == []
    assert [entry.get("outcome") for entry in deployment.logged_for(message_id)] == ["copied"]


def _naming(body: str, written: dict[str, Any]) -> str:
    """The record as S3 would send it for that write: its version id and ETag (a sequencer is recorded
    only when the source confirms the record)."""
    document = json.loads(body)
    document["Records"][0]["s3"]["object"].update(eTag=written["ETag"].strip('"'), versionId=written["VersionId"])
    return json.dumps(document)


def _applied_before(deployment: Deployment, body: str) -> str:
    """Given the very same record was applied already."""
    body = _naming(body, deployment.put("hostile/duplicate.txt", b"applied once\n"))
    _first_delivery_copies(deployment, body)
    return body


def _newer_applied_before(deployment: Deployment, body: str) -> str:
    """Given a newer change of the same key (a higher sequencer) was applied already."""
    body = _naming(body, deployment.put("hostile/stale.txt", b"newer state\n"))
    _first_delivery_copies(deployment, body.replace("0055AED6DCD9028500", "0055AED6DCD9028600"))
    return body


def _padded_past_the_limit(_: Deployment, body: str) -> str:
    """A valid notification whose ignored ``padding`` field takes it past the 1 MiB SQS limit."""
    padded = body.replace('"padding": ""', '"padding": "' + "x" * MAX_BODY_BYTES + '"')
    assert len(padded.encode("utf-8")) > MAX_BODY_BYTES
    return padded


# Kinds whose Given needs more than the file: what to do first, and the body to send.
PREPARE: dict[str, Callable[[Deployment, str], str]] = {
    "duplicate-of-applied": _applied_before,
    "stale-sequencer": _newer_applied_before,
    "oversized-body": _padded_past_the_limit,
}


@cache
def cached_client(service: str, region: str) -> Any:
    """Clients outlive one test's mock (the function's own do too): building one costs more than a test."""
    return client(service, region)


@pytest.fixture(params=[1, 8], ids=["one-at-a-time", "concurrent"])
def deployment(aws: None, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Deployment:
    # Each kind runs through a batch applied one message at a time and through one applied concurrently.
    monkeypatch.setenv("RECORD_CONCURRENCY", str(request.param))
    monkeypatch.setenv("RULES_TABLE_NAME", TABLE)
    monkeypatch.setenv("AWS_REGION", "us-west-1")
    # The warm service outlives a test: no rule cache, and progress flushed after every batch, so
    # nothing one test's rules or records leave in memory reaches the next test.
    monkeypatch.setenv("RULE_CACHE_SECONDS", "0")
    monkeypatch.setenv("PROGRESS_FLUSH_SECONDS", "0")
    sqs = cached_client("sqs", "us-west-1")
    monkeypatch.setenv("REPLICATION_QUEUE_URL", sqs.create_queue(QueueName="replication")["QueueUrl"])
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", sqs.create_queue(QueueName="replication-dlq")["QueueUrl"])
    source, destination = cached_client("s3", "us-west-1"), cached_client("s3", "us-east-1")
    create_bucket(source, SRC, "us-west-1", versioned=True)
    create_bucket(destination, DST, "us-east-1")
    dynamodb = cached_client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, TABLE)
    rules = DynamoRules(dynamodb, TABLE)
    rules.create(make_rule(rule_id="demo", source_bucket=SRC, destination_bucket=DST))
    rules.create(
        make_rule(
            rule_id="paused",
            source_bucket=PAUSED_SRC,
            destination_bucket="crr-paused-replica",
            status=RuleStatus.PAUSED,
        )
    )
    rules.create(
        make_rule(
            rule_id="prefixed",
            source_bucket=PREFIXED_SRC,
            destination_bucket="crr-prefixed-replica",
            prefixes=("incoming/",),
        )
    )
    # Powertools bound its handler to the stdout of import time; read its JSON lines from a buffer.
    log = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", log)
    from functions.replicate import handler

    return Deployment(handler, source, destination, sqs, log)


def kinds() -> list[str]:
    return list(EXPECTED)


def test_every_hostile_body_has_an_expected_outcome() -> None:
    # Given the corpus on disk and the table of expectations
    corpus = {path.stem for path in (EVENTS_DIR / "bad").glob("*.json")}
    # Then they name the same kinds, and there are enough of them to mean something
    assert corpus == set(EXPECTED)
    assert len(corpus) >= 30
    assert set(PREPARE) <= corpus


@pytest.mark.parametrize("kind", kinds())
def test_a_hostile_body_meets_its_fate_without_harming_its_sibling(kind: str, deployment: Deployment) -> None:
    fate, detail = EXPECTED[kind]
    # Given a real object with a valid notification, and the hostile body (its object too, if valid)
    deployment.put(SIBLING_KEY, SIBLING_BYTES)
    if fate == "replicated":
        deployment.put(detail, f"object named by {kind}\n".encode())
    body = load_raw_body(f"bad/{kind}")
    body = PREPARE[kind](deployment, body) if kind in PREPARE else body
    # When both arrive in one batch
    (hostile_id, _), response = deployment.run(body, put_notification(SIBLING_KEY))
    # Then neither is left to retry: the hostile body's fate is decided now
    assert response["batchItemFailures"] == []
    # And the sibling replicated
    replicas = objects_in(deployment.destination, DST)
    assert replicas.get(SIBLING_KEY) == SIBLING_BYTES
    # And the hostile body met its expected fate
    letters = deployment.dead_letters()
    if fate == "dlq":
        [letter] = letters
        attributes = letter["MessageAttributes"]
        assert attributes["crr-error-code"]["StringValue"] == detail
        assert attributes["crr-original-message-id"]["StringValue"] == hostile_id
        if "crr-body-truncated" in attributes:
            # Too large for any queue: its start and its size are kept with the reason
            assert attributes["crr-body-truncated"]["StringValue"] == str(len(body))
            assert body.startswith(letter["Body"])
        else:
            assert letter["Body"] == body
    elif fate == "dlq-record":
        [letter] = letters
        attributes = letter["MessageAttributes"]
        assert attributes["crr-error-code"]["StringValue"] == detail
        assert attributes["crr-original-message-id"]["StringValue"] == f"{hostile_id}#record-2"
        assert json.loads(letter["Body"])["Records"] == json.loads(body)["Records"][1:]
    else:
        assert letters == []
    if fate == "ack":
        logged = deployment.logged_for(hostile_id)
        assert any(entry.get("outcome") == detail or detail in str(entry.get("reason", "")) for entry in logged)
    if fate == "replicated":
        assert replicas.get(detail) == f"object named by {kind}\n".encode()
    # And the destination holds nothing the source does not
    originals = objects_in(deployment.source, SRC)
    assert set(replicas) <= set(originals)
    assert {key: data for key, data in replicas.items() if originals[key] != data} == {}
