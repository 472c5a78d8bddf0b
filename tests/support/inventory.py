"""S3 Inventory reports written the way S3 writes them, for tests: a manifest.json and gzip-compressed CSV
data files, at the keys S3 uses, to put into any S3 (FakeS3, SeaweedFS, the local cloud).

The format follows "Locating your inventory list"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html): the manifest's
fields (``sourceBucket``, ``destinationBucket`` as an ARN, ``version`` "2016-11-30", ``creationTimestamp`` in
milliseconds as a string, ``fileFormat``, ``fileSchema``, ``files`` with ``key``, ``size``, ``MD5checksum``), the
data files under ``<prefix>/<source bucket>/<config id>/data/`` and the manifest under
``<prefix>/<source bucket>/<config id>/<YYYY-MM-DDTHH-MMZ>/manifest.json``; and "Amazon S3 Inventory"
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html): the fields in the documented
order, every value quoted, keys URL-encoded.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote_plus

from crr.backfill.fanout import initial_range_id
from crr.backfill.inventory_pages import InventoryPages
from crr.backfill.models import PageRequest, PageResult, WorkKind, plan_digest
from crr.rules import ReplicationRule

# The documented order of the fields; a report holds Bucket and Key, the version fields when it lists
# every version, and the optional fields it was configured with, in this order.
FIELD_ORDER = (
    "Bucket",
    "Key",
    "VersionId",
    "IsLatest",
    "IsDeleteMarker",
    "Size",
    "LastModifiedDate",
    "ETag",
    "StorageClass",
    "IsMultipartUploaded",
    "ReplicationStatus",
    "EncryptionStatus",
)
# A report of current versions with the optional fields crr's documentation asks for.
CURRENT_SCHEMA = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag", "StorageClass", "IsMultipartUploaded")
# A report of every version.
VERSIONED_SCHEMA = FIELD_ORDER[: FIELD_ORDER.index("IsMultipartUploaded") + 1]


@dataclass(frozen=True)
class InventoryRow:
    """One object (or version, or delete marker) as a report lists it."""

    key: str
    size: int
    etag: str  # unquoted, as the report writes it
    last_modified: datetime
    storage_class: str = "STANDARD"
    version_id: str = ""
    is_latest: bool = True
    is_delete_marker: bool = False
    bucket: str | None = None  # None: the report's source bucket

    def value(self, column: str, source_bucket: str) -> str:
        values = {
            "Bucket": self.bucket or source_bucket,
            "Key": encode_key(self.key),
            "VersionId": self.version_id,
            "IsLatest": str(self.is_latest).lower(),
            "IsDeleteMarker": str(self.is_delete_marker).lower(),
            "Size": "" if self.is_delete_marker else str(self.size),
            "LastModifiedDate": self.last_modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "ETag": "" if self.is_delete_marker else self.etag,
            "StorageClass": "" if self.is_delete_marker else self.storage_class,
            "IsMultipartUploaded": str("-" in self.etag).lower(),
            "ReplicationStatus": "",
            "EncryptionStatus": "SSE-S3",
        }
        return values[column]


def encode_key(key: str) -> str:
    """URL-encoded as a report writes keys in CSV (form encoding: a space as ``+``, ``+`` as ``%2B``)."""
    return quote_plus(key, safe="/")


@dataclass
class InventoryReport:
    """A report of ``source_bucket`` delivered to ``report_bucket``: ``files`` holds the rows of each data file
    (as many files as lists). ``objects`` is what the manifest and files are made of, by key."""

    source_bucket: str
    report_bucket: str
    files: Sequence[Sequence[InventoryRow]]
    schema: Sequence[str] = CURRENT_SCHEMA
    file_format: str = "CSV"
    # when S3 began the scan: a report must be made after its rule (the tests' rules are older)
    created_at: datetime = field(default_factory=lambda: datetime(2026, 11, 26, tzinfo=UTC))
    prefix: str = "inventory"
    config_id: str = "crr-backfill"

    @property
    def manifest_key(self) -> str:
        return f"{self._home}/{self.created_at:%Y-%m-%dT%H-%MZ}/manifest.json"

    @property
    def location(self) -> str:
        return f"s3://{self.report_bucket}/{self.manifest_key}"

    @property
    def _home(self) -> str:
        return f"{self.prefix}/{self.source_bucket}/{self.config_id}"

    def data_files(self) -> dict[str, bytes]:
        """Each data file's key and gzip-compressed CSV bytes."""
        written: dict[str, bytes] = {}
        for rows in self.files:
            text = io.StringIO()
            writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
            for row in rows:
                writer.writerow([row.value(column, self.source_bucket) for column in self.schema])
            written[f"{self._home}/data/{uuid.uuid4()}.csv.gz"] = gzip.compress(text.getvalue().encode("utf-8"))
        return written

    def objects(self) -> dict[str, bytes]:
        """Every object of the report by key: the data files and the manifest that lists them."""
        data = self.data_files()
        manifest = {
            "sourceBucket": self.source_bucket,
            "destinationBucket": f"arn:aws:s3:::{self.report_bucket}",
            "version": "2016-11-30",
            "creationTimestamp": str(int(self.created_at.timestamp() * 1000)),
            "fileFormat": self.file_format,
            "fileSchema": ", ".join(self.schema),
            "files": [
                {"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()}
                for key, body in data.items()
            ],
        }
        return {**data, self.manifest_key: json.dumps(manifest).encode()}

    def write(self, put: Callable[[str, str, bytes], object]) -> str:
        """Put every object of the report with ``put(bucket, key, body)``; the manifest's location."""
        for key, body in self.objects().items():
            put(self.report_bucket, key, body)
        return self.location


def rows_in_files(rows: Sequence[InventoryRow], files: int) -> list[list[InventoryRow]]:
    """``rows`` dealt into ``files`` data files of consecutive rows (S3 splits a report so)."""
    size = -(-len(rows) // files) if rows else 0
    return [list(rows[start * size : (start + 1) * size]) for start in range(files)]


def run_inventory(
    pages: InventoryPages,
    rule: ReplicationRule,
    manifest: str,
    *,
    page_size: int = 1000,
    max_bytes: int | None = None,
    job_id: str = "inventory-job",
) -> list[PageResult]:
    """Every step of every data file of the report, one file after another in this process (as the
    workflow's workers would take them, without the job store): what each step did, in order."""
    report = pages.open(rule, manifest)
    results: list[PageResult] = []
    for index, data_file in enumerate(report.manifest.files):
        row, done, counted, sequence = 0, False, False, 1
        while not done:
            request = PageRequest(
                job_id=job_id,
                rule_id=rule.rule_id,
                plan=plan_digest(rule),
                range_id=initial_range_id(index),
                sequence=sequence,
                kind=WorkKind.INVENTORY,
                inventory=manifest,
                file=data_file.key,
                row=row,
                count_complete=counted,
                page_size=page_size,
            )
            result = pages.copy_page(rule, request, max_bytes=max_bytes)
            results.append(result)
            row, done, counted, sequence = result.row, result.done, True, sequence + 1
    return results
