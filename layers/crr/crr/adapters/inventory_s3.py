"""S3 Inventory reports read with GetObject: the manifest whole, a data file as a stream of chunks.

Which region: the rule's source region, given by the caller. S3 Inventory delivers a report only to a
bucket in the source bucket's region ("The destination bucket must be in the same AWS Region as the
source bucket", Amazon S3 API Reference, PutBucketInventoryConfiguration), so that is where the report
is, and no GetBucketLocation request (nor its permission) is needed. A report copied to a bucket in
another region still reads: botocore's S3 region redirector retries a request answered with the
bucket's real region there (one more request, once per bucket and client).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from crr.adapters.clients import ClientFactory, error_code
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.errors import InventoryAccessDeniedError, InventoryFileMissingError, InventoryManifestError, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import GetObjectOutputTypeDef

# A manifest lists its data files (each ~100 bytes of JSON): even a report of billions of objects has a
# manifest of a few hundred KiB. Anything far larger is not a manifest, and is not read into memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


class S3InventoryFiles:
    """``crr.ports.objects.InventoryFiles`` over GetObject."""

    def __init__(self, clients: ClientFactory, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._clients = clients
        self._chunk_bytes = chunk_bytes

    def read(self, bucket: str, region: str, key: str) -> bytes:
        """ONE GetObject. Raises InventoryFileMissingError, InventoryAccessDeniedError,
        InventoryManifestError (larger than any manifest), StorageError."""
        answer = self._get(bucket, region, key)
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength", 0)) > MAX_MANIFEST_BYTES:
                raise InventoryManifestError(
                    f"s3://{bucket}/{key} holds {answer['ContentLength']} bytes, too many for an S3 Inventory "
                    "manifest: give the manifest.json of the report"
                )
            return body.read()
        except BotoCoreError as exc:
            raise _interrupted(bucket, key, exc) from exc
        finally:
            body.close()

    def stream(self, bucket: str, region: str, key: str) -> Iterator[bytes]:
        """ONE GetObject, its body read in chunks as the caller consumes them; closing the iterator (or
        dropping it) closes the connection, so an early stop downloads no more."""
        answer = self._get(bucket, region, key)
        body = answer["Body"]
        try:
            yield from body.iter_chunks(self._chunk_bytes)
        except BotoCoreError as exc:  # the connection cut or timed out mid-body: a retry reads again
            raise _interrupted(bucket, key, exc) from exc
        finally:
            body.close()

    def _get(self, bucket: str, region: str, key: str) -> GetObjectOutputTypeDef:
        try:
            return self._clients.client("s3", region).get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            found = meaning(exc)
            if found in {S3ErrorMeaning.MISSING_KEY, S3ErrorMeaning.MISSING_BUCKET}:
                raise InventoryFileMissingError(bucket, key, error_code(exc)) from exc
            if found is S3ErrorMeaning.ACCESS_DENIED:
                raise InventoryAccessDeniedError(bucket, key, error_code(exc)) from exc
            raise storage_error(exc, "GetObject", bucket, key) from exc


def _interrupted(bucket: str, key: str, exc: BotoCoreError) -> StorageError:
    return StorageError("GetObject", bucket, key, type(exc).__name__, f"reading the body failed: {exc}")
