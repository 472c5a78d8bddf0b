"""The adapters behind `crr verify` over moto: ListObjectsV2 pages and SendMessageBatch."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, cast

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.listing import S3Listing
from crr.adapters.sqs import QueueError
from crr.adapters.sqs_batch import SqsBatchSender
from crr.errors import BucketMissingError
from crr_cli.operations.verify import verify
from tests.support.aws import client, create_bucket
from tests.support.rules import make_rule

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

WEST, EAST = "us-west-1", "us-east-1"


@pytest.fixture
def s3(aws: None) -> Any:
    return client("s3", WEST)


def test_the_listing_pages_keys_in_s3_order_with_unquoted_etags(s3: Any) -> None:
    # Given a bucket with awkward keys
    create_bucket(s3, "listed", WEST)
    keys = ["z", "a b", "c+d", "100%", "ü/x", "日本/語", "\uff61", "😀", "data/1", "data/2"]
    for key in keys:
        s3.put_object(Bucket="listed", Key=key, Body=key.encode())
    # When listed two objects per page
    pages = list(S3Listing(ClientFactory(), page_size=2).pages("listed", WEST, ""))
    # Then pages hold two objects each, in UTF-8 byte order, with sizes and unquoted MD5 ETags
    assert [len(page) for page in pages] == [2, 2, 2, 2, 2]
    listed = [item for page in pages for item in page]
    assert [item.key for item in listed] == sorted(keys, key=str.encode)
    first = listed[0]
    assert (first.key, first.size, first.etag) == ("100%", 4, hashlib.md5(b"100%").hexdigest())
    # And with what else ListObjectsV2 says of an object, which the backfill uses from the same listing
    assert (first.storage_class, first.last_modified is not None) == ("STANDARD", True)


def test_the_listing_honours_the_prefix(s3: Any) -> None:
    create_bucket(s3, "listed", WEST)
    for key in ("data/1", "data/2", "database", "logs/1"):
        s3.put_object(Bucket="listed", Key=key, Body=b"x")
    pages = S3Listing(ClientFactory()).pages("listed", WEST, "data/")
    assert [item.key for page in pages for item in page] == ["data/1", "data/2"]


def test_listing_a_missing_bucket_raises_bucket_missing(s3: Any) -> None:
    with pytest.raises(BucketMissingError, match="ListObjectsV2 on no-such-bucket"):
        list(S3Listing(ClientFactory()).pages("no-such-bucket", WEST, ""))


@pytest.mark.parametrize("size", [0, 1001])
def test_the_page_size_is_what_list_objects_v2_allows(size: int) -> None:
    with pytest.raises(ValueError, match="page size"):
        S3Listing(ClientFactory(), page_size=size)


def test_verify_over_moto_in_two_regions(s3: Any) -> None:
    # Given a source in us-west-1 and its replica in us-east-1 differing by one key each way
    east = client("s3", EAST)
    create_bucket(s3, "vsrc", WEST)
    create_bucket(east, "vdst", EAST)
    for key in ("same", "only-src"):
        s3.put_object(Bucket="vsrc", Key=key, Body=b"1")
    east.put_object(Bucket="vdst", Key="same", Body=b"1")
    east.put_object(Bucket="vdst", Key="only-dst", Body=b"1")
    s3.copy_object(Bucket="vsrc", Key="copied", CopySource={"Bucket": "vsrc", "Key": "same"})
    east.copy_object(Bucket="vdst", Key="copied", CopySource={"Bucket": "vsrc", "Key": "copied"})
    rule = make_rule(rule_id="v", source_bucket="vsrc", destination_bucket="vdst")
    # When verified through the S3 adapter
    listing = S3Listing(ClientFactory())
    report = verify(rule, listing, listing)
    # Then a server-side copy matches its source, and the differences are found
    assert (report.matching, report.missing.samples, report.extra.samples) == (2, ["only-src"], ["only-dst"])


# ---- SendMessageBatch ------------------------------------------------------------------------


def test_the_batch_sender_sends_up_to_ten_bodies(aws: None) -> None:
    sqs = client("sqs", WEST)
    url = sqs.create_queue(QueueName="replication")["QueueUrl"]
    bodies = [json.dumps({"n": index}) for index in range(10)]
    SqsBatchSender(sqs, url).send_batch(bodies)
    SqsBatchSender(sqs, url).send_batch([])  # nothing to send: no request
    received: list[str] = []
    while answer := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        received.extend(message["Body"] for message in answer)
        for message in answer:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(received) == sorted(bodies)


def test_the_batch_sender_refuses_more_than_ten(aws: None) -> None:
    with pytest.raises(ValueError, match="at most 10"):
        SqsBatchSender(client("sqs", WEST), "url").send_batch(["x"] * 11)


def test_a_missing_queue_is_a_queue_error(aws: None) -> None:
    sqs = client("sqs", WEST)
    url = sqs.create_queue(QueueName="gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(QueueError, match="SendMessageBatch to the replication queue failed"):
        SqsBatchSender(sqs, url).send_batch(["x"])


class FlakySqs:
    """Fails the given entry ids on SQS's side for the first ``times`` requests."""

    def __init__(self, failing: set[str], times: int, sender_fault: bool = False) -> None:
        self.failing, self.times, self.sender_fault = failing, times, sender_fault
        self.requests: list[list[str]] = []

    def send_message_batch(self, **request: Any) -> dict[str, Any]:
        entries: list[dict[str, str]] = request["Entries"]
        self.requests.append([entry["MessageBody"] for entry in entries])
        if len(self.requests) > self.times:
            return {"Successful": [{"Id": entry["Id"]} for entry in entries], "Failed": []}
        failed = [
            {"Id": entry["Id"], "SenderFault": self.sender_fault, "Code": "InternalError", "Message": "try again"}
            for entry in entries
            if entry["Id"] in self.failing
        ]
        return {"Failed": failed}


def test_entries_sqs_failed_are_resent_alone_with_backoff() -> None:
    # Given SQS failing two of four entries on its side, twice
    fake, sleeps = FlakySqs({"1", "3"}, times=2), list[float]()
    # When sent
    SqsBatchSender(cast("SQSClient", fake), "url", backoff_seconds=0.1, sleep=sleeps.append).send_batch(
        ["a", "b", "c", "d"]
    )
    # Then only the failed entries were resent, after growing pauses
    assert fake.requests == [["a", "b", "c", "d"], ["b", "d"], ["b", "d"]]
    assert sleeps == [0.1, 0.2]


def test_entries_still_failing_after_the_last_attempt_raise() -> None:
    fake = FlakySqs({"0"}, times=99)
    with pytest.raises(QueueError, match="left 1 of 2 message") as raised:
        SqsBatchSender(cast("SQSClient", fake), "url", attempts=3, sleep=lambda _: None).send_batch(["a", "b"])
    assert raised.value.code == "InternalError"
    assert len(fake.requests) == 3


def test_an_entry_refused_as_invalid_is_not_resent() -> None:
    fake = FlakySqs({"0"}, times=99, sender_fault=True)
    with pytest.raises(QueueError, match="refused 1 message"):
        SqsBatchSender(cast("SQSClient", fake), "url", sleep=lambda _: None).send_batch(["a"])
    assert len(fake.requests) == 1
