"""Parsing queue message bodies into change events, over the sample events in events/."""

from __future__ import annotations

import json

import pytest

from crr.errors import MalformedEventError
from crr.events import ChangeEvent, ChangeKind, IgnoredNotification, decode_key, parse_notification
from tests.support.events import load_body, load_event


def only_change(body: str) -> ChangeEvent:
    [event] = parse_notification(body)
    assert isinstance(event, ChangeEvent)
    return event


def test_a_put_record_yields_bucket_key_sequencer_version_and_etag() -> None:
    # Given a real-shaped ObjectCreated:Put notification, When it is parsed
    event = only_change(load_body("s3/object-created-put"))
    # Then the fields replication reads are there
    assert (event.bucket, event.key, event.kind) == ("crr-demo-source", "reports/2026/summary.csv", ChangeKind.CREATED)
    assert event.sequencer == "0055AED6DCD90281E5"
    assert event.version_id == "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
    assert event.size == 1024
    assert event.etag == "d41d8cd98f00b204e9800998ecf8427e"


def test_keys_are_form_url_decoded() -> None:
    # Given a key with '+' for spaces, %2F, %2B, %20, %25 and a UTF-8 escape
    event = only_change(load_body("s3/object-created-encoded-key"))
    # Then the key is the one S3 holds
    assert event.key == "my photos/red flower+1 %done✓.jpg"


@pytest.mark.parametrize(
    ("raw", "decoded"), [("a+b", "a b"), ("a%2Bb", "a+b"), ("a%2Fb", "a/b"), ("a%20b", "a b"), ("%25", "%")]
)
def test_decode_key_follows_form_encoding(raw: str, decoded: str) -> None:
    assert decode_key(raw) == decoded


def test_a_versioned_delete_and_a_plain_delete_are_removals() -> None:
    marker = only_change(load_body("s3/object-removed-delete-marker"))
    plain = only_change(load_body("s3/object-removed-delete"))
    assert marker.kind is plain.kind is ChangeKind.REMOVED
    assert marker.event_name == "ObjectRemoved:DeleteMarkerCreated"
    assert plain.version_id is None


def changes(body: str) -> list[ChangeEvent]:
    parsed = parse_notification(body)
    assert all(isinstance(event, ChangeEvent) for event in parsed)
    return [event for event in parsed if isinstance(event, ChangeEvent)]


def test_eventbridge_events_delivered_through_sqs_are_understood() -> None:
    # Given EventBridge's Object Created / Object Deleted for key 'images/cat+dog.png', When parsed
    created = changes(load_body("eventbridge/object-created"))[0]
    deleted = changes(load_body("eventbridge/object-deleted"))[0]
    # Then the first change names the key as delivered ('+' stays a plus), with its sequencer
    assert (created.kind, created.key, created.sequencer) == (
        ChangeKind.CREATED,
        "images/cat+dog.png",
        "00617F08299329D189",
    )
    assert (deleted.kind, deleted.key) == (ChangeKind.REMOVED, "images/cat+dog.png")
    assert deleted.version_id == "1DaF4.pRkA7w0S2cM3yV3Yxq2ZlT9k5n"


def test_an_eventbridge_key_is_taken_as_delivered_and_its_form_decoded_reading_is_only_a_hint() -> None:
    # Given an EventBridge event whose key holds '+', a space and non-ASCII characters
    [as_delivered, decoded_reading] = changes(load_body("eventbridge/object-created-awkward-key"))
    # Then the change carrying the sequencer and version is the key exactly as delivered
    assert (as_delivered.key, as_delivered.sequencer) == ("docs/a+b c ünï.txt", "00617F08299329D18A")
    assert as_delivered.version_id is not None
    # And the form-decoded reading is reconciled too, but carries nothing that could fence the ledger
    assert decoded_reading.key == "docs/a b c ünï.txt"
    assert (decoded_reading.sequencer, decoded_reading.version_id, decoded_reading.etag) == (None, None, None)
    assert decoded_reading.kind is ChangeKind.CREATED
    # And both are marked as readings that may not name the object
    assert as_delivered.speculative
    assert decoded_reading.speculative


def test_an_eventbridge_key_without_plus_or_percent_yields_one_change() -> None:
    # Given an EventBridge event for a key that reads the same decoded
    document = load_event("eventbridge/object-created")
    document["detail"]["object"]["key"] = "plain/ünï key.txt"
    # Then it is one change, for that key
    [change] = changes(json.dumps(document))
    assert change.key == "plain/ünï key.txt"
    assert not change.speculative


def test_an_sns_envelope_is_unwrapped() -> None:
    # Given the S3 notification wrapped by SNS
    body = json.dumps({"Type": "Notification", "Message": load_body("s3/object-created-put")})
    # Then it parses as the inner notification
    assert only_change(body).key == "reports/2026/summary.csv"


def test_the_s3_test_event_is_ignored_with_a_reason() -> None:
    [ignored] = parse_notification(load_body("s3/test-event"))
    assert isinstance(ignored, IgnoredNotification)
    assert "TestEvent" in ignored.reason


def test_lifecycle_expirations_are_ignored_with_a_reason() -> None:
    [ignored] = parse_notification(load_body("s3/lifecycle-expiration"))
    assert isinstance(ignored, IgnoredNotification)
    assert "LifecycleExpiration:Delete" in ignored.reason


def test_tag_changes_reconcile_without_a_sequencer() -> None:
    event = only_change(load_body("s3/object-tagging-put"))
    assert event.kind is ChangeKind.METADATA
    assert event.sequencer is None


def test_the_duplicated_complete_multipart_upload_notifications_parse_identically() -> None:
    # Given the same CompleteMultipartUpload notification delivered twice (S3 does this)
    first, second = (
        only_change(load_body("s3/object-complete-multipart")),
        only_change(load_body("s3/object-complete-multipart")),
    )
    # Then both carry the same sequencer, which the ledger turns into one copy
    assert first.sequencer == second.sequencer == "0055AED6DCD9028200"


def test_a_message_with_two_records_yields_two_events() -> None:
    events = parse_notification(load_body("s3/object-created-two-records"))
    assert [e.key for e in events if isinstance(e, ChangeEvent)] == ["batch/one.txt", "batch/two.txt"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('{"Records": []}', "empty Records"),
        ('{"hello": "world"}', "neither"),
        (json.dumps({"Records": [{"eventSource": "aws:sqs"}]}), "not an S3 change notification"),
        (load_body("s3/object-created-bad-sequencer"), "not a hex string"),
        (load_body("s3/object-created-bad-percent"), "not UTF-8"),
    ],
)
def test_malformed_bodies_raise_a_specific_error(body: str, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message):
        parse_notification(body)


def test_a_key_longer_than_s3_allows_is_malformed() -> None:
    document = load_event("s3/object-created-put")
    document["Records"][0]["s3"]["object"]["key"] = "k" * 1025
    with pytest.raises(MalformedEventError, match="longer than 1024"):
        parse_notification(json.dumps(document))
