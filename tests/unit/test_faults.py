"""The local cloud's fault injection (a seam in the functions' processes): which calls it fails, and how."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.endpoint import Endpoint
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws

from crr import deadline
from crr.adapters.clients import ClientFactory
from crr_cli.localcloud.lambda_ import faults

REGION: Final = "us-west-1"  # Final: a Literal where the typed S3 client wants a region name


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Fault injection installed in this process (undone after the test); call it to set the mode."""
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"mode": "none"}), encoding="utf-8")
    # Saved first, so the monkeypatch puts botocore back as it was when the test ends.
    monkeypatch.setattr(BaseClient, "_make_api_call", BaseClient._make_api_call)  # type: ignore[attr-defined]
    monkeypatch.setattr(Endpoint, "_send", Endpoint._send)  # type: ignore[attr-defined]
    monkeypatch.setenv(faults.FAULTS_VARIABLE, str(path))
    assert faults.install_from_environment()

    def set_mode(**settings: Any) -> None:
        path.write_text(json.dumps(settings), encoding="utf-8")
        stamp = time.time() + len(json.dumps(settings))  # a new mtime even within the clock's resolution
        os.utime(path, (stamp, stamp))

    return set_mode


@mock_aws
def test_an_outage_of_a_service_fails_every_call_of_it_and_no_other(control: Callable[..., None]) -> None:
    # Given a table and a bucket, and every DynamoDB call failing with InternalServerError
    dynamodb, s3 = boto3.client("dynamodb", region_name=REGION), boto3.client("s3", region_name=REGION)
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    s3.create_bucket(Bucket="faults-b", CreateBucketConfiguration={"LocationConstraint": REGION})
    control(mode="outage", services=["dynamodb"], code="InternalServerError")
    # When the function reads the table and writes the bucket
    with pytest.raises(ClientError) as failed:
        dynamodb.get_item(TableName="t", Key={"pk": {"S": "k"}})
    s3.put_object(Bucket="faults-b", Key="k", Body=b"x")
    # Then DynamoDB answers as a failing service does (500), and S3 is untouched
    assert failed.value.response["Error"]["Code"] == "InternalServerError"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert s3.get_object(Bucket="faults-b", Key="k")["Body"].read() == b"x"
    # When the outage ends, Then the table answers again
    control(mode="none")
    assert "Item" not in dynamodb.get_item(TableName="t", Key={"pk": {"S": "k"}})


def test_a_hung_service_holds_each_attempt_for_its_read_timeout(control: Callable[..., None]) -> None:
    # Given a DynamoDB client with a 0.3 s read timeout and no retries, and DynamoDB hanging
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url="http://127.0.0.1:9",  # never reached: the hang comes first
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # the local cloud's well-known test key
        config=Config(read_timeout=0.3, retries={"mode": "standard", "max_attempts": 1}),
    )
    control(mode="hang", services=["dynamodb"])
    # When a call is made
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.get_item(TableName="t", Key={"pk": {"S": "k"}})
    # Then it failed as a read timeout, after that timeout
    assert 0.3 <= time.monotonic() - started < 2.0


def test_a_hung_call_ends_with_the_invocations_time_not_the_clients_60_seconds(
    control: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given crr's clients (60 s read timeout, 5 attempts) in an invocation with 0.6 s left, DynamoDB hanging
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: the hang comes first
    client = ClientFactory(boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")).client(
        "dynamodb", REGION
    )
    control(mode="hang", services=["dynamodb"])
    ends = time.monotonic() + 0.6
    started = time.monotonic()
    # When a call is made under the invocation's deadline
    with (
        deadline.active(deadline.Deadline(lambda: ends - time.monotonic(), reserve=0.2)),
        pytest.raises((ReadTimeoutError, deadline.OutOfTimeError)),
    ):
        client.get_item(TableName="t", Key={"pk": {"S": "k"}})
    # Then its attempts stopped within the time the record may use (0.6 s less half the reserve)
    assert time.monotonic() - started < 1.0
