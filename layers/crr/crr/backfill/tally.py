"""A page's objects summed into what the page reports: its PageCounts (one counter per ObjectOutcome), a
sample of its failures for the operator, and every failed key for the replication queue."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from crr.backfill.models import MAX_FAILURE_SAMPLES, FailedKey, ObjectOutcome, PageCounts
from crr.models import ListedObject

MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class ObjectResult:
    """What the backfill did with one listed object. ``fatal``: the failure dooms the whole page (the
    destination bucket is gone), so the page's other copies stop and the page fails."""

    outcome: ObjectOutcome
    bytes_copied: int = 0
    reason: str = ""
    fatal: BaseException | None = None


SKIPPED = ObjectResult(ObjectOutcome.SKIPPED)
SUPERSEDED = ObjectResult(ObjectOutcome.SUPERSEDED)
# A copy not started because another one already doomed the page: never counted, the page fails.
NOT_ATTEMPTED = ObjectResult(ObjectOutcome.FAILED, reason="not attempted: the page failed as a whole")


@dataclass
class PageTally:
    """Counts a page's objects as they are listed, then as each gets its result."""

    outcomes: Counter[ObjectOutcome] = field(default_factory=Counter)
    listed: int = 0
    bytes_listed: int = 0
    bytes_copied: int = 0
    failures: list[FailedKey] = field(default_factory=list)
    failed_keys: list[str] = field(default_factory=list)

    def count_listed(self, entry: ListedObject) -> None:
        self.listed += 1
        self.bytes_listed += entry.size

    def add(self, entry: ListedObject, result: ObjectResult) -> None:
        self.outcomes[result.outcome] += 1
        self.bytes_copied += result.bytes_copied
        if result.outcome is ObjectOutcome.FAILED:
            self.failed_keys.append(entry.key)
            if len(self.failures) < MAX_FAILURE_SAMPLES:
                self.failures.append(FailedKey(key=entry.key, reason=result.reason[:MAX_REASON_CHARS]))

    def counts(self) -> PageCounts:
        return PageCounts(
            listed=self.listed,
            bytes_listed=self.bytes_listed,
            bytes_copied=self.bytes_copied,
            **{outcome.value: self.outcomes[outcome] for outcome in ObjectOutcome},
        )


def error_code(exc: BaseException) -> str:
    """The code a failure is reported and logged by: the service's error code, else the exception's type."""
    code = getattr(exc, "code", None)
    return str(code) if code else type(exc).__name__
