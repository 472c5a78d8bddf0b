"""Compare two buckets object by object: keys, bytes, content headers, user metadata and tags.

Used by the demo, the integration tests and the benchmarks to decide "the replica equals the source".
It reads every object, so it is for small buckets (a streaming `crr verify` is a separate command).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from crr.markers import MARKER_KEYS

_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


@dataclass(frozen=True)
class ObjectView:
    sha256: str
    size: int
    headers: tuple[tuple[str, str], ...]
    metadata: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]


@dataclass
class Difference:
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: dict[str, list[str]] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def describe(self, limit: int = 10) -> str:
        lines = [f"missing in replica: {self.missing[:limit]}"] if self.missing else []
        if self.extra:
            lines.append(f"only in replica: {self.extra[:limit]}")
        for key, fields in list(self.different.items())[:limit]:
            lines.append(f"differs {key!r}: {', '.join(fields)}")
        return "\n".join(lines) or "equal"


def list_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def view(s3: Any, bucket: str, key: str) -> ObjectView:
    found = s3.get_object(Bucket=bucket, Key=key)
    body = found["Body"].read()
    tags = s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
    return ObjectView(
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        headers=tuple((name, str(found[name])) for name in _HEADERS if found.get(name)),
        metadata=tuple(sorted((k, v) for k, v in found.get("Metadata", {}).items() if k not in MARKER_KEYS)),
        tags=tuple(sorted((tag["Key"], tag["Value"]) for tag in tags)),
    )


def snapshot(s3: Any, bucket: str, prefix: str = "") -> dict[str, ObjectView]:
    keys = list_keys(s3, bucket, prefix)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(keys, pool.map(lambda key: view(s3, bucket, key), keys), strict=True))


def compare(source: dict[str, ObjectView], replica: dict[str, ObjectView]) -> Difference:
    difference = Difference(missing=sorted(set(source) - set(replica)), extra=sorted(set(replica) - set(source)))
    for key in sorted(set(source) & set(replica)):
        fields = [
            name
            for name in ("sha256", "size", "headers", "metadata", "tags")
            if getattr(source[key], name) != getattr(replica[key], name)
        ]
        if fields:
            difference.different[key] = fields
    return difference
