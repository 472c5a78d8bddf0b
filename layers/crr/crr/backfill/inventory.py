"""An Amazon S3 Inventory report read as the backfill's work: its manifest, and its CSV data files as
streams of ListedObject. Pure: no boto3, no I/O (the bytes come through ``crr.ports.objects.InventoryFiles``).

The format, as S3 documents it:
- "Locating your inventory list" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html):
  ``manifest.json`` names the source bucket, the destination bucket (as an ARN), the format version, the
  creation time (milliseconds since the epoch, as a string), the file format (CSV, ORC or Parquet), the
  CSV schema (the column names, comma-separated) and the data files, each with its key in the
  destination bucket, its size and the MD5 of its bytes (``MD5checksum``).
- "Amazon S3 Inventory" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html), the
  inventory list's fields: ``Bucket``, ``Key`` (URL-encoded in CSV), ``VersionId``, ``IsLatest`` and
  ``IsDeleteMarker`` (only when the report includes every version), ``Size``, ``LastModifiedDate``, ``ETag``,
  ``StorageClass``, ``IsMultipartUploaded`` and more; the CSV data files are gzip-compressed.

The order of rows: S3's documentation promises none (neither within a data file nor across files), so
nothing here assumes one; ``crr.backfill.inventory_pages`` checks each page's order before it takes the
cheaper path that needs it.

Keys: decoded with ``unquote_plus``, the form encoding S3 uses for keys in its event records (a space
may come as ``+``; a literal ``+`` is ``%2B`` in that encoding), so both spellings of a space decode.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crr.backfill.models import listing_prefixes
from crr.errors import InventoryChecksumError, InventoryManifestError, InventoryRowError
from crr.models import ListedObject
from crr.rules import ReplicationRule

# The fields a row needs for the backfill to copy its object pinned to the listed write: which object
# (Key), its size (the page's byte budget, the single-copy limit) and its ETag (CopySourceIfMatch).
REQUIRED_FIELDS = ("Key", "Size", "ETag")
# What a report of S3 Inventory that crr can read is written in.
SUPPORTED_FORMAT = "CSV"
_S3_ARN_PREFIX = "arn:aws:s3:::"
_LOCATION = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<key>.+)$")


class _Model(BaseModel):
    # AWS may add fields to the manifest: ignore what crr does not read.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


@dataclass(frozen=True)
class InventoryLocation:
    """Where a report's manifest is: ``s3://BUCKET/KEY``. Its data files are read from the same bucket."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> InventoryLocation:
        """Raises InventoryManifestError for anything but ``s3://BUCKET/KEY``."""
        found = _LOCATION.match(url.strip())
        if found is None:
            raise InventoryManifestError(
                f"{url!r} is not the location of an S3 Inventory manifest: give s3://BUCKET/PATH/manifest.json"
            )
        return cls(bucket=found["bucket"], key=found["key"])

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class InventoryDataFile(_Model):
    """One data file of a report, as the manifest lists it."""

    key: str = Field(min_length=1)
    size: int = Field(ge=0)
    md5_checksum: str = Field(alias="MD5checksum", pattern=r"^[0-9a-fA-F]{32}$")


class InventoryManifest(_Model):
    """A report's ``manifest.json``."""

    source_bucket: str = Field(alias="sourceBucket", min_length=1)
    destination_bucket: str = Field(alias="destinationBucket", min_length=1)
    version: str
    creation_timestamp: str = Field(alias="creationTimestamp", pattern=r"^\d+$")
    file_format: str = Field(alias="fileFormat")
    file_schema: str = Field(default="", alias="fileSchema")
    files: list[InventoryDataFile]

    @property
    def created_at(self) -> datetime:
        """When S3 began scanning the bucket for this report: objects written later may be missing from it."""
        return datetime.fromtimestamp(int(self.creation_timestamp) / 1000, tz=UTC)

    @property
    def report_bucket(self) -> str:
        """The bucket S3 delivered the report to (the manifest gives it as an ARN)."""
        return self.destination_bucket.removeprefix(_S3_ARN_PREFIX)


def parse_manifest(body: bytes, location: InventoryLocation) -> InventoryManifest:
    """The manifest in ``body``. Raises InventoryManifestError when it is not one (naming what is wrong)."""
    try:
        return InventoryManifest.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        raise InventoryManifestError(f"{location} is not an S3 Inventory manifest: {exc}") from exc


@dataclass(frozen=True)
class InventorySchema:
    """The columns of a CSV report, by name, in the order the manifest's ``fileSchema`` gives them."""

    columns: tuple[str, ...]

    @classmethod
    def parse(cls, file_schema: str) -> InventorySchema:
        return cls(tuple(column.strip() for column in file_schema.split(",") if column.strip()))

    def index(self, column: str) -> int | None:
        return self.columns.index(column) if column in self.columns else None


def check_manifest(manifest: InventoryManifest, rule: ReplicationRule, location: InventoryLocation) -> InventorySchema:
    """The report's schema, once the report is known to describe ``rule``'s source bucket, to have been
    made after the rule existed (so every object is in the report or came by the live path), and to be
    CSV with the fields crr needs. Raises InventoryManifestError saying which of these does not hold."""
    if manifest.source_bucket != rule.source_bucket:
        raise InventoryManifestError(
            f"the S3 Inventory report {location} lists bucket {manifest.source_bucket!r}, not "
            f"{rule.source_bucket!r}, the source bucket of rule {rule.rule_id}"
        )
    if manifest.created_at < rule.created_at:
        # Objects written between the report's scan and the rule are in neither: the report does not
        # list them and no notification reached the live path (the rule did not exist yet).
        raise InventoryManifestError(
            f"the S3 Inventory report {location} was made at {manifest.created_at:%Y-%m-%dT%H:%MZ}, before rule "
            f"{rule.rule_id} existed ({rule.created_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}): objects written in "
            "between would be missed; use a report made after the rule was added"
        )
    if manifest.file_format.upper() != SUPPORTED_FORMAT:
        raise InventoryManifestError(
            f"the S3 Inventory report {location} is in {manifest.file_format} format: only CSV reports are "
            "supported (ORC and Parquet are not yet); configure the inventory with Format=CSV"
        )
    schema = InventorySchema.parse(manifest.file_schema)
    missing = [field for field in REQUIRED_FIELDS if schema.index(field) is None]
    if missing:
        raise InventoryManifestError(
            f"the S3 Inventory report {location} has no {', '.join(missing)} column (its schema: "
            f"{manifest.file_schema!r}): crr copies each object pinned to the ETag and size the report "
            "gives; add Size and ETag to the inventory configuration's OptionalFields"
        )
    return schema


@dataclass(frozen=True)
class RowParser:
    """Turns a report's CSV rows into the rule's objects: rows that name another bucket, a delete marker
    or a version that is not the latest (a report of every version), and keys outside the rule's
    prefixes, are dropped (None)."""

    schema: InventorySchema
    source_bucket: str
    prefixes: tuple[str, ...]

    @classmethod
    def for_rule(cls, schema: InventorySchema, rule: ReplicationRule) -> RowParser:
        return cls(schema, rule.source_bucket, listing_prefixes(rule.prefixes))

    def parse(self, fields: list[str], *, file_key: str, row: int) -> ListedObject | None:
        """The row's object, or None when the row is dropped. ``row`` counts from 1 (for the message).
        Raises InventoryRowError when the row does not fit the schema."""
        if len(fields) != len(self.schema.columns):
            raise InventoryRowError(
                file_key, row, f"{len(fields)} field(s) where the manifest's schema has {len(self.schema.columns)}"
            )
        if any("\n" in value or "\r" in value for value in fields):
            raise InventoryRowError(file_key, row, "a field holds a line break, which no S3 Inventory field does")
        values = dict(zip(self.schema.columns, fields, strict=True))
        if values.get("Bucket", self.source_bucket) != self.source_bucket:
            return None
        if values.get("IsDeleteMarker", "").lower() == "true" or values.get("IsLatest", "true").lower() == "false":
            return None
        key = unquote_plus(values["Key"])
        if not key:
            raise InventoryRowError(file_key, row, "empty Key")
        if not any(key.startswith(prefix) for prefix in self.prefixes):
            return None
        size, etag = values["Size"], values["ETag"].strip('"')
        if not size.isdigit():
            raise InventoryRowError(file_key, row, f"Size {size!r} is not a number of bytes")
        if not etag:
            raise InventoryRowError(file_key, row, "empty ETag")
        return ListedObject(
            key=key,
            size=int(size),
            etag=etag,
            storage_class=values.get("StorageClass") or None,
            last_modified=_timestamp(values.get("LastModifiedDate", ""), file_key, row),
        )


def _timestamp(value: str, file_key: str, row: int) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InventoryRowError(file_key, row, f"LastModifiedDate {value!r} is not an ISO 8601 time") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def checked(chunks: Iterable[bytes], data_file: InventoryDataFile) -> Iterator[bytes]:
    """``chunks`` passed through; once they end, their MD5 is compared with the manifest's. Raises
    InventoryChecksumError (after the last chunk) when they differ."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != data_file.md5_checksum.lower():
        raise InventoryChecksumError(
            f"S3 Inventory file {data_file.key} has MD5 {digest.hexdigest()}, not the manifest's "
            f"{data_file.md5_checksum}: it was truncated or replaced since the report was written"
        )


def csv_rows(chunks: Iterable[bytes], file_key: str, *, skip: int = 0) -> Iterator[list[str]]:
    """The CSV rows of a gzip-compressed data file given as a stream of byte chunks, decompressed as they
    come (memory holds a chunk and a row, whatever the file's size), after the first ``skip`` rows.

    The rows skipped are counted as lines, without parsing them (a tenth of the CPU): a row of S3
    Inventory is one line, since its keys are URL-encoded and no other field holds a line break;
    ``RowParser.parse`` refuses a row that does (so the two counts cannot disagree on a report crr
    accepts). Raises InventoryChecksumError when the bytes are not gzip, or end before the gzip stream
    does; InventoryRowError for text not UTF-8."""
    return csv.reader(_lines(_after_lines(_gunzipped(chunks, file_key), skip), file_key, skip))


def _after_lines(data: Iterator[bytes], skip: int) -> Iterator[bytes]:
    """``data`` from the start of line ``skip`` (counted from 0) on."""
    for block in data:
        if skip == 0:
            yield block
            continue
        ends = block.count(b"\n")
        if ends < skip:
            skip -= ends
            continue
        start = -1
        for _ in range(skip):
            start = block.index(b"\n", start + 1)
        skip = 0
        yield block[start + 1 :]


def _gunzipped(chunks: Iterable[bytes], file_key: str) -> Iterator[bytes]:
    # 16 + MAX_WBITS: a gzip header and trailer around the deflate stream. A file may hold several gzip
    # members one after another (gzip's own format allows it): each member starts a new decompressor.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for chunk in chunks:
            pending = chunk
            while pending:
                yield decompressor.decompress(pending)
                pending = b""
                if decompressor.eof:
                    pending = decompressor.unused_data
                    if pending:
                        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not decompressor.eof:
            raise InventoryChecksumError(f"S3 Inventory file {file_key} ends before its gzip stream does")
    except zlib.error as exc:
        raise InventoryChecksumError(f"S3 Inventory file {file_key} is not gzip-compressed CSV: {exc}") from exc


def _lines(data: Iterator[bytes], file_key: str, skipped: int) -> Iterator[str]:
    pending = b""
    line_number = skipped
    for block in data:
        pending += block
        *whole, pending = pending.split(b"\n")
        for line in whole:
            line_number += 1
            yield _text(line, file_key, line_number) + "\n"
    if pending:
        yield _text(pending, file_key, line_number + 1)


def _text(line: bytes, file_key: str, line_number: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryRowError(file_key, line_number, f"not UTF-8 text ({exc.reason})") from exc
