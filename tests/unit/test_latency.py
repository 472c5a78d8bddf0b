"""The latency model (local cloud and SeaweedFS benches): which requests wait, how long, and where."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from moto import mock_aws

from crr_cli.localcloud.lambda_ import latency
from crr_cli.localcloud.lambda_.latency import LatencyModel

HOME = "us-west-1"
FAR = "us-east-1"
MODEL = LatencyModel(same_region_ms=10, cross_region_ms=60)


class RecordedSleep:
    """Stands in for time.sleep: remembers each wait instead of spending it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)

    def total_ms(self) -> float:
        return round(sum(self.waits) * 1000, 6)


def _bucket(name: str, region: str) -> None:
    location: dict[str, Any] = (
        {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    boto3.client("s3", region_name=region).create_bucket(Bucket=name, **location)


@mock_aws
def test_a_same_region_call_waits_the_same_region_round_trip_half_each_way() -> None:
    # Given a function's S3 client in its own region, with the model installed
    _bucket("home-bucket", HOME)
    sleep = RecordedSleep()
    s3 = boto3.client("s3", region_name=HOME)
    hook = latency.install(s3, MODEL, HOME, sleep=sleep)
    # When it reads a bucket of its region
    s3.head_bucket(Bucket="home-bucket")
    # Then it waited 10 ms in two halves (the request out, the answer back), counted as same-region
    assert sleep.waits == [0.005, 0.005]
    assert hook.counts() == {"same": {"s3:HeadBucket": 1}, "cross": {}}


@mock_aws
def test_a_call_on_a_bucket_of_another_region_waits_the_cross_region_round_trip() -> None:
    # Given the destination client of a function (the bucket's region, as crr's adapters sign it)
    _bucket("far-bucket", FAR)
    sleep = RecordedSleep()
    session = boto3.session.Session()
    hook = latency.install(session, MODEL, HOME, sleep=sleep)
    # When it writes into the far bucket
    session.client("s3", region_name=FAR).put_object(Bucket="far-bucket", Key="k", Body=b"x")
    # Then the call waited 60 ms and counts as cross-region
    assert sleep.total_ms() == 60
    assert hook.counts() == {"same": {}, "cross": {"s3:PutObject": 1}}


@mock_aws
def test_other_services_are_classed_by_the_clients_region() -> None:
    # Given DynamoDB clients in the home region and in another one
    sleep = RecordedSleep()
    session = boto3.session.Session()
    hook = latency.install(session, MODEL, HOME, sleep=sleep)
    # When each lists its tables
    session.client("dynamodb", region_name=HOME).list_tables()
    session.client("dynamodb", region_name=FAR).list_tables()
    # Then the home one waited 10 ms, the far one 60 ms
    assert sleep.total_ms() == 70
    assert hook.counts() == {"same": {"dynamodb:ListTables": 1}, "cross": {"dynamodb:ListTables": 1}}


@mock_aws
def test_on_a_one_region_server_the_named_buckets_are_the_far_side() -> None:
    # Given a one-region server (as SeaweedFS) where the destination bucket is declared cross-region
    _bucket("src", HOME)
    _bucket("dst", HOME)
    sleep = RecordedSleep()
    s3 = boto3.client("s3", region_name=HOME)
    hook = latency.install(s3, LatencyModel(10, 60, cross_buckets=frozenset({"dst"})), HOME, sleep=sleep)
    # When a copy writes into the destination and a listing reads the source, by a client signing for
    # the rule's nominal source region (a one-region server accepts any)
    s3.put_object(Bucket="src", Key="k", Body=b"x")
    s3.copy_object(Bucket="dst", Key="k", CopySource={"Bucket": "src", "Key": "k"})
    listing = boto3.client("s3", region_name=FAR)
    latency.register_on(listing.meta.events, hook)
    listing.list_objects_v2(Bucket="src")
    # Then only the copy waited the cross-region round trip: on such a server the bucket alone decides
    assert hook.counts() == {
        "same": {"s3:PutObject": 1, "s3:ListObjectsV2": 1},
        "cross": {"s3:CopyObject": 1},
    }
    assert sleep.total_ms() == 10 + 60 + 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10,60", (10.0, 60.0)), ("same=10,cross=60", (10.0, 60.0)), ("cross=80, same=2.5", (2.5, 80.0))],
)
def test_a_model_is_read_from_the_option_or_the_environment_form(text: str, expected: tuple[float, float]) -> None:
    # Given the command-line or environment form  When it is parsed
    model = LatencyModel.parse(text)
    # Then it gives the two round-trip times, and writes itself back in the environment form
    assert (model.same_region_ms, model.cross_region_ms) == expected
    assert LatencyModel.parse(model.environment_value()) == model


@pytest.mark.parametrize("text", ["10", "10,60,5", "same=10,same=60", "near=10,cross=60", "10,fast", "-1,60"])
def test_a_malformed_model_is_refused(text: str) -> None:
    # Given a value that is not SAME,CROSS  When it is parsed  Then it is refused
    with pytest.raises(ValueError, match=r"latency|negative"):
        LatencyModel.parse(text)


@mock_aws
def test_a_worker_delays_every_client_it_creates_and_keeps_its_counts_in_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker of a us-west-1 function started with the latency variables (botocore restored after)
    monkeypatch.setattr(botocore.session.Session, "create_client", botocore.session.Session.create_client)
    monkeypatch.setenv(latency.LATENCY_VARIABLE, "same=0,cross=0")
    monkeypatch.setenv(latency.COUNTS_VARIABLE, str(tmp_path))
    monkeypatch.setenv("AWS_REGION", HOME)
    hook = latency.install_from_environment()
    assert hook is not None
    _bucket("far-bucket", FAR)  # a client created after the install: delayed and counted as well
    # When the function's code makes clients of its own, from any session, and calls
    boto3.session.Session().client("s3", region_name=FAR).head_bucket(Bucket="far-bucket")
    boto3.client("sqs", region_name=HOME).list_queues()
    # Then every call was counted, by class, in the worker's counts file
    counts = latency.counts_in(tmp_path)
    assert counts["cross"] == {"s3:CreateBucket": 1, "s3:HeadBucket": 1}
    assert counts["same"] == {"sqs:ListQueues": 1}
    assert [path.name for path in tmp_path.iterdir()] == [f"{os.getpid()}.json"]
    assert json.loads(next(tmp_path.iterdir()).read_text(encoding="utf-8")) == counts


def test_without_the_variable_a_worker_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker started without CRR_LOCAL_LATENCY  When it starts  Then nothing is installed
    monkeypatch.delenv(latency.LATENCY_VARIABLE, raising=False)
    original = botocore.session.Session.create_client
    assert latency.install_from_environment() is None
    assert botocore.session.Session.create_client is original


def test_counts_of_several_workers_add_up(tmp_path: Path) -> None:
    # Given two workers' counts files
    (tmp_path / "1.json").write_text(json.dumps({"same": {"s3:HeadObject": 2}, "cross": {}}), encoding="utf-8")
    (tmp_path / "2.json").write_text(
        json.dumps({"same": {"s3:HeadObject": 1}, "cross": {"s3:CopyObject": 3}}), encoding="utf-8"
    )
    # When they are read together  Then they add up, and a bench prints what was waited
    counts = latency.counts_in(tmp_path)
    assert counts == {"same": {"s3:HeadObject": 3}, "cross": {"s3:CopyObject": 3}}
    assert latency.summary(counts, MODEL) == (
        "latency model: 3 same-region attempts x 10 ms (0.0 s), 3 cross-region attempts x 60 ms (0.2 s)"
    )
