"""Bucket listings over ListObjectsV2, one request per page, for the backfill and for `crr verify`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3_errors import storage_error
from crr.models import MAX_PAGE_SIZE, ListedObject, ListingPage


class S3Listing:
    """``crr.ports.objects.PageListing`` (``list_page``: one page, resumed by ``StartAfter``) and
    ``crr.ports.objects.Listing`` (``pages``: every page of a prefix, ``page_size`` keys each, fetched as the
    caller consumes them)."""

    def __init__(self, clients: ClientFactory, page_size: int = MAX_PAGE_SIZE) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size must be 1-{MAX_PAGE_SIZE}, got {page_size}")
        self._clients = clients
        self._page_size = page_size

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        """ONE ListObjectsV2 request. Raises BucketMissingError, AccessDeniedError or StorageError when
        the page cannot be listed, ValueError for a ``max_keys`` ListObjectsV2 does not take."""
        if not 1 <= max_keys <= MAX_PAGE_SIZE:
            raise ValueError(f"max_keys must be 1-{MAX_PAGE_SIZE}, got {max_keys}")
        params: dict[str, Any] = {"Bucket": bucket, "MaxKeys": max_keys}
        if prefix:
            params["Prefix"] = prefix
        if start_after is not None:
            params["StartAfter"] = start_after
        try:
            # botocore asks for EncodingType=url and decodes keys (and StartAfter), so any key survives XML.
            listed = self._clients.client("s3", region).list_objects_v2(**params)
        except ClientError as exc:
            raise storage_error(exc, "ListObjectsV2", bucket, None) from exc
        return ListingPage(
            entries=[
                ListedObject(
                    key=item["Key"],
                    size=int(item["Size"]),
                    etag=str(item["ETag"]).strip('"'),
                    storage_class=item.get("StorageClass"),
                    last_modified=item.get("LastModified"),
                )
                for item in listed.get("Contents", [])
            ],
            truncated=bool(listed.get("IsTruncated", False)),
        )

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        """Every object under ``prefix`` (``""``: the bucket), a page per request, in S3's key order.
        Raises BucketMissingError, AccessDeniedError or StorageError when a page cannot be listed."""
        start_after: str | None = None
        while True:
            page = self.list_page(bucket, region, prefix, start_after=start_after, max_keys=self._page_size)
            yield page.entries
            if not page.truncated or not page.entries:
                return
            start_after = page.entries[-1].key
