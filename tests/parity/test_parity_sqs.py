"""Parity: the local cloud's SQS queues and server-side copies behave as AWS documents them."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket

pytestmark = pytest.mark.integration

REGION = "us-west-1"
MIB = 1024**2


@pytest.fixture
def queue(local_cloud: LocalCloud) -> Iterator[str]:
    sqs = local_cloud.client("sqs", REGION)
    url: str = sqs.create_queue(QueueName=f"parity-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def _send(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer["Failed"]


def _receive(sqs: Any, url: str, wait: int, visibility: int = 0) -> list[dict[str, Any]]:
    answer = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait, VisibilityTimeout=visibility
    )
    messages: list[dict[str, Any]] = answer.get("Messages", [])
    return messages


def test_short_polls_sample_a_subset_of_servers(local_cloud: LocalCloud, queue: str) -> None:
    """A short poll (WaitTimeSeconds=0) asks a weighted random subset of SQS's servers, so its reply may
    hold fewer messages than are visible, or none; repeated short polls reach every message.

    AWS: "Amazon SQS short and long polling" (Amazon SQS Developer Guide),
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html
    """
    # Given 5 visible messages (fewer than a reply may hold, so a short reply means servers were skipped)
    sqs = local_cloud.client("sqs", REGION)
    bodies = [f"m{index}" for index in range(5)]
    _send(sqs, queue, bodies)

    # When 20 short polls look at them without hiding them
    peeks = [len(_receive(sqs, queue, wait=0, visibility=0)) for _ in range(20)]
    # Then some replies held fewer messages than were visible (each of 20 polls asks every server
    # holding one with probability at most 0.6, so all 20 complete is a chance below 1 in 27,000)
    assert min(peeks) < len(bodies)

    # And short polls that hide what they take reach every message, each once
    received: list[str] = []
    for _ in range(60):
        if len(received) == len(bodies):
            break
        received += [message["Body"] for message in _receive(sqs, queue, wait=0, visibility=60)]
    assert sorted(received) == sorted(bodies)


def test_long_polls_ask_every_server(local_cloud: LocalCloud, queue: str) -> None:
    """A long poll (WaitTimeSeconds > 0) queries all servers: no false empty reply while messages are
    visible, and it returns as soon as a message arrives.

    AWS: "Amazon SQS short and long polling" (Amazon SQS Developer Guide),
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html
    """
    # Given 25 visible messages
    sqs = local_cloud.client("sqs", REGION)
    bodies = [f"m{index}" for index in range(25)]
    _send(sqs, queue, bodies)

    # When long polls take them, hiding what they took
    received: list[str] = []
    for _ in range(3):
        reply = _receive(sqs, queue, wait=1, visibility=60)
        # Then no reply is empty while messages remain visible
        assert reply
        received += [message["Body"] for message in reply]
    assert sorted(received) == sorted(bodies)

    # And a long poll on the now empty queue answers as soon as a message is sent
    threading.Timer(0.3, lambda: sqs.send_message(QueueUrl=queue, MessageBody="late")).start()
    started = time.monotonic()
    reply = _receive(sqs, queue, wait=5)
    assert [message["Body"] for message in reply] == ["late"]
    assert time.monotonic() - started < 3


def test_a_queue_loses_nothing_under_concurrent_sends_receives_and_deletes(
    local_cloud: LocalCloud, queue: str, eventually: Callable[..., Any]
) -> None:
    """Standard queues deliver every message at least once: sends, receives and deletes racing on one
    queue lose no message.

    AWS: "Amazon SQS standard queues" (Amazon SQS Developer Guide, at-least-once delivery),
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/standard-queues.html
    """
    # Given a queue 1,500 messages deep, 4 senders sending 1,600 more while 8 consumers receive and delete
    # (a deep queue makes moto's unlocked rebuild of its message list on every delete slow enough to race)
    sqs = local_cloud.client("sqs", REGION)
    preloaded, senders, per_sender, consumers = 1500, 4, 400, 8
    _send(sqs, queue, [f"pre-{index}" for index in range(preloaded)])
    expected = {f"pre-{index}" for index in range(preloaded)}
    expected |= {f"{sender}-{index}" for sender in range(senders) for index in range(per_sender)}
    seen: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def send(sender: int) -> None:
        _send(sqs, queue, [f"{sender}-{index}" for index in range(per_sender)])

    def consume() -> None:
        while not stop.is_set():
            reply = _receive(sqs, queue, wait=1, visibility=30)
            if not reply:
                continue
            with lock:
                seen.update(message["Body"] for message in reply)
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(reply)]
            sqs.delete_message_batch(QueueUrl=queue, Entries=entries)

    def drained() -> bool:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return bool(
            attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
        )

    workers = [threading.Thread(target=consume) for _ in range(consumers)]
    sending = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in workers + sending:
        thread.start()

    # When the senders are done and the queue says it is empty (nothing visible, nothing in flight)
    try:
        for thread in sending:
            thread.join()
        with contextlib.suppress(AssertionError):  # the checks below say what went wrong
            eventually(drained, timeout=20, what="the queue to drain")
    finally:
        stop.set()
        for thread in workers:
            thread.join()

    # Then every message sent was received, and the queue holds nothing more
    missing = expected - seen
    assert not missing, f"{len(missing)} of {len(expected)} messages lost, e.g. {sorted(missing)[:5]}"
    assert drained(), "the queue kept messages that were received and deleted"


@pytest.fixture
def slow_copies(local_cloud: LocalCloud) -> Iterator[Callable[[str, float], None]]:
    """Sets a copy rate for one destination bucket; every override is removed afterwards."""
    overrides: dict[str, float] = {}

    def slow(bucket: str, bytes_per_second: float) -> None:
        overrides[bucket] = bytes_per_second
        local_cloud.configure_seams(copy_bytes_per_second_by_bucket=overrides)

    yield slow
    local_cloud.configure_seams(copy_bytes_per_second_by_bucket={})


def test_server_side_copies_take_time_in_proportion_to_their_size(
    local_cloud: LocalCloud, slow_copies: Callable[[str, float], None]
) -> None:
    """A CopyObject (and an UploadPartCopy) copies the data on the server while the request is open:
    its answer comes when the copy is done, after a time that grows with the object's size.

    AWS: "CopyObject" (Amazon S3 API Reference: the 200 OK may come only when the copy completes,
    and may then carry an error), https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html;
    "UploadPartCopy", https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html
    """
    # Given a 2 MiB object and a destination whose copies run at 4 MiB/s
    s3 = local_cloud.client("s3", REGION)
    source, destination = f"par-src-{uuid.uuid4().hex[:8]}", f"par-dst-{uuid.uuid4().hex[:8]}"
    create_bucket(s3, source, REGION)
    create_bucket(s3, destination, REGION)
    s3.put_object(Bucket=source, Key="big", Body=b"x" * (2 * MIB))
    s3.put_object(Bucket=source, Key="small", Body=b"x" * 1024)
    slow_copies(destination, 4 * MIB)

    def timed(call: Callable[[], Any]) -> float:
        started = time.monotonic()
        call()
        return time.monotonic() - started

    # When it is copied whole, in one part, and a 1 KiB object is copied
    whole = timed(lambda: s3.copy_object(Bucket=destination, Key="big", CopySource={"Bucket": source, "Key": "big"}))
    upload = s3.create_multipart_upload(Bucket=destination, Key="parts")["UploadId"]
    part = timed(
        lambda: s3.upload_part_copy(
            Bucket=destination,
            Key="parts",
            UploadId=upload,
            PartNumber=1,
            CopySource={"Bucket": source, "Key": "big"},
            CopySourceRange=f"bytes=0-{MIB - 1}",
        )
    )
    small = timed(
        lambda: s3.copy_object(Bucket=destination, Key="small", CopySource={"Bucket": source, "Key": "small"})
    )
    s3.abort_multipart_upload(Bucket=destination, Key="parts", UploadId=upload)

    # Then each took about size / rate, and the copy exists once the answer came
    assert 0.5 <= whole < 2.0, whole
    assert 0.25 <= part < 1.5, part
    assert small < 0.25, small
    assert s3.head_object(Bucket=destination, Key="big")["ContentLength"] == 2 * MIB
