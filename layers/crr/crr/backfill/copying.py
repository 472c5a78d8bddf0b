"""The copies of a page, ``concurrency`` at once on the copy pool: each object on the path its plan says
(crr.backfill.triage), each answered by an ObjectResult, never by an exception."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from crr.backfill.models import ObjectOutcome, PageRequest
from crr.backfill.reconcile import Reconcile, counted_as
from crr.backfill.tally import MAX_REASON_CHARS, NOT_ATTEMPTED, SUPERSEDED, ObjectResult, error_code
from crr.backfill.triage import CopyPath, PlannedCopy
from crr.errors import BucketMissingError, LedgerConflictError, SourceChangedError, SourceGoneError
from crr.models import LedgerEntry, ListedObject
from crr.observability import logger
from crr.ports.objects import FastCopier
from crr.ports.table import KeyLedger
from crr.rules import ReplicationRule


class PageCopier:
    """Copies planned objects. Thread-safe; its pool of ``concurrency`` threads starts with the first page
    that has two objects to copy and lives until ``close`` (warm Lambda containers reuse it);
    ``concurrency=1`` copies in the calling thread."""

    def __init__(
        self,
        copier: FastCopier,
        ledger: KeyLedger,
        reconcile: Reconcile,
        *,
        concurrency: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._copier = copier
        self._ledger = ledger
        self._reconcile = reconcile
        self._concurrency = concurrency
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def copy(self, rule: ReplicationRule, request: PageRequest, copies: list[PlannedCopy]) -> list[ObjectResult]:
        """One result per planned copy, in order. Once a result is ``fatal`` the copies not yet started
        are not attempted (NOT_ATTEMPTED): the page fails as a whole."""
        abandon = threading.Event()

        def one(planned: PlannedCopy) -> ObjectResult:
            if abandon.is_set():
                return NOT_ATTEMPTED
            result = self._copy_one(rule, request, planned)
            if result.fatal is not None:
                abandon.set()
            return result

        if self._concurrency == 1 or len(copies) <= 1:
            return [one(planned) for planned in copies]
        return list(self._executor().map(one, copies))

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="crr-backfill")
            return self._pool

    def _copy_one(self, rule: ReplicationRule, request: PageRequest, planned: PlannedCopy) -> ObjectResult:
        """Never raises: a failure is an outcome (``fatal`` when it dooms the whole page)."""
        entry = planned.entry
        try:
            if planned.path is CopyPath.RECONCILE:
                return counted_as(self._reconcile(rule, entry.key))
            return self._fast_copy(rule, entry)
        except BucketMissingError as exc:
            return ObjectResult(ObjectOutcome.FAILED, reason=str(exc), fatal=exc)
        except Exception as exc:  # noqa: BLE001 - one object's failure must never stop the page
            logger.warning(
                "backfill could not copy a key; handing it to the replication queue",
                extra={
                    "rule": rule.rule_id,
                    "job": request.job_id,
                    "page": request.sequence,
                    "bucket": rule.source_bucket,
                    "key": entry.key,
                    "error_code": error_code(exc),
                    "reason": str(exc)[:MAX_REASON_CHARS],
                },
            )
            return ObjectResult(ObjectOutcome.FAILED, reason=f"{error_code(exc)}: {exc}")

    def _fast_copy(self, rule: ReplicationRule, entry: ListedObject) -> ObjectResult:
        """One CopyObject pinned to the listed ETag, then the ledger entry "no entry yet", which records the
        replica's own ETag from the copy's answer (what `crr verify` recognises the replica by when an
        SSE-KMS destination gave it an ETag of its own: the fast path writes no marker)."""
        try:
            replica_etag = self._copier.copy_listed(rule, entry)
        except (SourceChangedError, SourceGoneError):
            return SUPERSEDED  # changed since listed: its own notification is the live path's
        written = LedgerEntry(
            revision=1,
            sequencer=None,
            etag=f'"{entry.etag}"',
            deleted=False,
            applied_at=self._clock(),
            source_modified=entry.last_modified,
            replica_etag=replica_etag,
        )
        try:
            self._ledger.record(rule.rule_id, entry.key, written, None)
        except LedgerConflictError:
            # The live path wrote the key meanwhile, and our copy may have landed over its newer copy or
            # its delete: reconcile the key from the source's current state.
            settled = counted_as(self._reconcile(rule, entry.key))
            if settled.outcome in {ObjectOutcome.SUPERSEDED, ObjectOutcome.FAILED}:
                return settled
            return ObjectResult(ObjectOutcome.COPIED, entry.size + settled.bytes_copied)
        return ObjectResult(ObjectOutcome.COPIED, entry.size)
