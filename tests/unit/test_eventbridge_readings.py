"""An ambiguous EventBridge key (it holds '+' or '%') is reconciled under both readings, and the
reading that names no object costs a HEAD, never a write (Replicator over in-memory fakes)."""

from __future__ import annotations

import json

from crr.events import ChangeEvent, parse_notification
from crr.replication import Outcome, Replicator
from tests.support.events import load_event
from tests.support.fakes import FakeLedger, FakeProgress, FakeRules, FakeS3
from tests.support.rules import make_rule

SRC, DST = "crr-demo-source", "crr-demo-replica"
KEY = "logs/2026-11-25T10:00:00+00:00.log"  # '+' as a plus; decoded it would read as a space


def world() -> tuple[FakeS3, Replicator]:
    s3 = FakeS3(lambda: None)
    s3.create_bucket(SRC, "us-west-1", versioned=True)
    s3.create_bucket(DST, "us-east-1")
    rule = make_rule(
        rule_id="r1",
        source_bucket=SRC,
        destination_bucket=DST,
    )
    return s3, Replicator(FakeRules(rule), s3, FakeLedger(lambda: None), FakeProgress())


def readings(sample: str, key: str) -> list[ChangeEvent]:
    document = load_event(sample)
    document["region"] = "us-west-1"
    document["detail"]["object"]["key"] = key
    parsed = parse_notification(json.dumps(document))
    return [event for event in parsed if isinstance(event, ChangeEvent)]


def test_a_create_under_the_wrong_reading_deletes_nothing() -> None:
    # Given an object whose key holds '+', and EventBridge's Object Created for it
    s3, replicator = world()
    s3.put(SRC, KEY, b"log line")
    as_delivered, decoded = readings("eventbridge/object-created", KEY)
    # When both readings are applied
    outcomes = [replicator.apply(as_delivered).outcome, replicator.apply(decoded).outcome]
    # Then the object is copied under its key, and the other reading only cost a HEAD
    assert outcomes == [Outcome.COPIED, Outcome.READING_ABSENT]
    replica = s3.current(DST, KEY)
    assert replica is not None
    assert replica.body == b"log line"
    assert s3.calls.get("DeleteObject", 0) == 0


def test_a_delete_is_reconciled_under_both_readings() -> None:
    # Given a replicated object, then deleted at the source
    s3, replicator = world()
    s3.put(SRC, KEY, b"log line")
    for event in readings("eventbridge/object-created", KEY):
        replicator.apply(event)
    s3.delete(SRC, "us-west-1", KEY)
    # When EventBridge's Object Deleted is applied under both readings
    outcomes = {replicator.apply(event).outcome for event in readings("eventbridge/object-deleted", KEY)}
    # Then the replica is gone (deletes are never skipped: the delete may be about either key)
    assert s3.current(DST, KEY) is None
    assert outcomes == {Outcome.DELETED}
