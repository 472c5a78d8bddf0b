"""Notification filters as S3 matches them: against the form-URL-encoded key (defect 4)."""

from __future__ import annotations

from typing import Any

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.notifications import S3BucketNotifications, filter_prefixes
from tests.support.aws import client, create_bucket
from tests.support.rules import make_rule

SRC = "src-bucket"


@pytest.mark.parametrize(
    ("prefixes", "filters"),
    [
        (("logs/2024-01/", "img/a_b.c"), ["img/a_b.c", "logs/2024-01/"]),  # verbatim in any encoding
        (("my dir/", "café/"), ["caf", "my"]),  # cut before the first character S3 encodes
        (("a b/", "a_c/"), ["a"]),  # "a" covers "a_c/": S3 refuses overlapping filters
        (("(draft)/",), []),  # nothing verbatim: one configuration without a filter
        ((), []),
    ],
)
def test_filters_are_the_leading_parts_the_encoded_key_keeps_verbatim(
    prefixes: tuple[str, ...], filters: list[str]
) -> None:
    assert filter_prefixes(make_rule(*prefixes)) == filters


def test_subscribing_writes_the_cut_filters_and_unsubscribing_removes_every_crr_entry(aws: None) -> None:
    # Given a source bucket with a queue configuration written by an earlier crr, per raw prefix
    s3: Any = client("s3", "us-west-1")
    create_bucket(s3, SRC, "us-west-1")
    queue = client("sqs", "us-west-1").create_queue(QueueName="q")["QueueUrl"]
    arn = client("sqs", "us-west-1").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    legacy = {"Id": "crr-r1-1", "QueueArn": arn["QueueArn"], "Events": ["s3:ObjectCreated:*"]}
    s3.put_bucket_notification_configuration(Bucket=SRC, NotificationConfiguration={"QueueConfigurations": [legacy]})
    notifications = S3BucketNotifications(ClientFactory())
    # When a rule with special characters in its prefixes is subscribed
    notifications.subscribe(make_rule("my dir/", "zeta é/"), arn["QueueArn"])
    # Then its filters are the verbatim leading parts, and the earlier entry is gone
    written = s3.get_bucket_notification_configuration(Bucket=SRC)["QueueConfigurations"]
    values = {entry["Id"]: entry["Filter"]["Key"]["FilterRules"][0]["Value"] for entry in written}
    assert values == {"crr-r1-0": "my", "crr-r1-1": "zeta"}
    # And unsubscribing removes them all
    notifications.unsubscribe(make_rule("my dir/", "zeta é/"))
    assert s3.get_bucket_notification_configuration(Bucket=SRC).get("QueueConfigurations", []) == []
