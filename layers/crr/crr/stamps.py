"""Origin stamps: when, where and as which version a change to a key first happened.

Two-way sync orders the versions both buckets hold of a key by these stamps (last writer wins). A stamp
keeps whole seconds because that is all S3's Last-Modified header carries; two changes in the same second
on different sides are ordered by bucket name, so both sides always pick the same winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Stamp:
    time: datetime  # whole seconds, UTC
    origin: str  # the bucket a user changed
    version: str | None  # the version id the change got there (None: unversioned or unknown)

    @classmethod
    def of(cls, time: datetime, origin: str, version: str | None) -> Stamp:
        if time.tzinfo is None:
            time = time.replace(tzinfo=UTC)
        return cls(time.astimezone(UTC).replace(microsecond=0), origin, version)

    def later_than(self, other: Stamp) -> bool:
        """Strictly later: a later second, or the same second on the bucket whose name sorts last."""
        if self.time != other.time:
            return self.time > other.time
        return self.origin > other.origin

    def same_change(self, other: Stamp) -> bool:
        return self.origin == other.origin and self.version == other.version

    def encode(self) -> str:
        """One string for storage: ``<iso time>|<origin>|<version>``."""
        return f"{self.time.isoformat()}|{self.origin}|{self.version or ''}"

    @classmethod
    def decode(cls, text: str) -> Stamp:
        time, origin, version = text.split("|", 2)
        return cls.of(datetime.fromisoformat(time), origin, version or None)
