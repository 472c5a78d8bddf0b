"""The S3 Inventory report reader over moto: GetObject whole for the manifest, streamed in chunks for a
data file, and S3's errors turned into errors that name the file (Amazon S3 API Reference, "Error
responses": 404 NoSuchKey, 404 NoSuchBucket)."""

from __future__ import annotations

import gzip
import re
from typing import Any

import pytest
from botocore.stub import Stubber

from crr.adapters.clients import ClientFactory
from crr.adapters.inventory_s3 import S3InventoryFiles
from crr.backfill.inventory import csv_rows
from crr.errors import CrrError, InventoryFileMissingError, InventoryManifestError
from tests.support.aws import client

WEST = "us-west-1"
REPORTS = "inventory-reports"


@pytest.fixture
def s3(aws: None) -> Any:
    made = client("s3", WEST)
    made.create_bucket(Bucket=REPORTS, CreateBucketConfiguration={"LocationConstraint": WEST})
    return made


def test_the_manifest_is_read_whole(s3: Any) -> None:
    s3.put_object(Bucket=REPORTS, Key="r/manifest.json", Body=b'{"files": []}')
    assert S3InventoryFiles(ClientFactory()).read(REPORTS, WEST, "r/manifest.json") == b'{"files": []}'


def test_a_data_file_streams_in_chunks_that_decompress_to_its_rows(s3: Any) -> None:
    # Given a gzip CSV data file of 2000 rows
    lines = "".join(f'"bucket","key-{index:05d}","{index}"\n' for index in range(2000))
    s3.put_object(Bucket=REPORTS, Key="r/data/1.csv.gz", Body=gzip.compress(lines.encode()))
    # When it is streamed in 1 KiB chunks
    chunks = list(S3InventoryFiles(ClientFactory(), chunk_bytes=1024).stream(REPORTS, WEST, "r/data/1.csv.gz"))
    # Then it came in several chunks, which decompress to every row
    assert len(chunks) > 1
    rows = list(csv_rows(chunks, "r/data/1.csv.gz"))
    assert (len(rows), rows[0], rows[-1]) == (2000, ["bucket", "key-00000", "0"], ["bucket", "key-01999", "1999"])


def test_a_missing_file_or_bucket_is_named(s3: Any) -> None:
    files = S3InventoryFiles(ClientFactory())
    with pytest.raises(
        InventoryFileMissingError, match=re.escape(f"s3://{REPORTS}/r/gone.csv.gz does not exist (NoSuchKey)")
    ):
        list(files.stream(REPORTS, WEST, "r/gone.csv.gz"))
    missing_bucket = re.escape("s3://no-such-reports/m.json does not exist (NoSuchBucket)")
    with pytest.raises(InventoryFileMissingError, match=missing_bucket):
        files.read("no-such-reports", WEST, "m.json")


def test_an_object_far_larger_than_any_manifest_is_not_read_into_memory(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crr.adapters.inventory_s3.MAX_MANIFEST_BYTES", 10)
    s3.put_object(Bucket=REPORTS, Key="r/data.csv.gz", Body=b"x" * 11)
    with pytest.raises(InventoryManifestError, match="too many for an S3 Inventory manifest"):
        S3InventoryFiles(ClientFactory()).read(REPORTS, WEST, "r/data.csv.gz")


@pytest.mark.parametrize(
    ("code", "status", "raised"),
    [
        ("AccessDenied", 403, "InventoryAccessDeniedError"),
        ("NoSuchKey", 404, "InventoryFileMissingError"),
        ("SlowDown", 503, "SlowDownError"),
        ("InternalError", 500, "StorageError"),
    ],
)
def test_s3_errors_become_errors_that_say_what_to_do(aws: None, code: str, status: int, raised: str) -> None:
    # Given GetObject answering with an S3 error code (stubbed: moto grants every read)
    clients = ClientFactory()
    with Stubber(clients.client("s3", WEST)) as stub:
        stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
        # When a file is read, Then the error is the domain's for that code
        with pytest.raises(CrrError) as caught:
            S3InventoryFiles(clients).read(REPORTS, WEST, "r/manifest.json")
    assert type(caught.value).__name__ == raised
    assert f"s3://{REPORTS}/r/manifest.json" in str(caught.value) or "r/manifest.json" in str(caught.value)
