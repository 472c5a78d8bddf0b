"""Bucket listings for `crr verify`: ListObjectsV2 pages, fetched as the merge consumes them."""

from __future__ import annotations

from collections.abc import Iterator

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import storage_error
from crr.models import ListedObject

MAX_PAGE_SIZE = 1000  # ListObjectsV2 returns at most 1000 keys per request


class S3Listing:
    """``crr.ports.objects.Listing`` over the ``list_objects_v2`` paginator (one request per page)."""

    def __init__(self, clients: ClientFactory, page_size: int = MAX_PAGE_SIZE) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size must be 1-{MAX_PAGE_SIZE}, got {page_size}")
        self._clients = clients
        self._page_size = page_size

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        """Raises BucketMissingError, AccessDeniedError or StorageError when a page cannot be listed."""
        paginator = self._clients.client("s3", region).get_paginator("list_objects_v2")
        # botocore asks for EncodingType=url and decodes the keys, so any key survives the XML.
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self._page_size})
        try:
            for page in pages:
                yield [
                    ListedObject(key=item["Key"], size=int(item["Size"]), etag=str(item["ETag"]).strip('"'))
                    for item in page.get("Contents", [])
                ]
        except ClientError as exc:
            raise storage_error(exc, "ListObjectsV2", bucket, None) from exc
