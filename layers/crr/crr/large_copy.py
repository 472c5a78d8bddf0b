"""Copies too large for one function run: part ranges copied by several invocations of a workflow.

The replicator copies an object in parts inside its own invocation when the copy fits the time it has
left; otherwise it hands the copy to the large-copy state machine (statemachine/large_copy.asl.json):

    Prepare (CreateMultipartUpload, split the parts into batches that each fit one invocation)
      → CopyBatches (a Map: each batch is one invocation copying its parts in parallel)
      → Complete (CompleteMultipartUpload)        any failure → GiveUp (abort the upload) → Fail

Every step is safe to run again (Step Functions retries a failed step, and an operator may redrive):
- a batch first lists the parts the upload already has (ListParts), and copies only the missing
  ones, so a retried or redriven batch resumes where the last one stopped;
- every part is pinned to the source's version and ETag, so an overwrite during the copy fails the
  batch instead of producing a replica mixing two writes;
- Complete checks that the source is still the version being copied before completing, and again
  after: when a newer write landed around the completion, the key is handed back to the live path
  (a change notice on the replication queue), which reconciles the source's current state.

GiveUp aborts the upload (no incomplete upload is left behind) and never drops the key: when the copy
lost a race (the source or a two-way destination changed), the key goes back to the live path, which
copies the newer state; any other failure goes to the dead-letter queue with its reason, where
``crr dlq replay`` picks it up like any failed record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from crr.errors import CrrError, DestinationChangedError, SourceChangedError, SourceGoneError, StepError, StorageError
from crr.failures import FailureKind, FailureReason
from crr.markers import MARKER_KEYS, MARKER_SEAL, MARKER_WRITTEN
from crr.models import CopyRequest, LargeCopyJob, ObjectState, ProgressDelta, UploadedPart
from crr.part_planning import MAX_PARTS, MIB, PartRange
from crr.ports.objects import MultipartUploads, ObjectStore
from crr.ports.queues import KeyHandOver
from crr.ports.table import ProgressSink
from crr.two_way_conflicts import undo_buried_delete

# Parts one invocation copies at once (UploadPartCopy is server side: this bounds connections).
PART_CONCURRENCY = 16
# The share of a function's time a copy may plan to use; the rest absorbs a slower-than-estimated copy.
TIME_SAFETY = 0.5
# Errors that mean the copy lost a race with a newer change: the live path reconciles the key again.
SUPERSEDED_ERRORS = frozenset({SourceChangedError.__name__, SourceGoneError.__name__, DestinationChangedError.__name__})
NO_SUCH_UPLOAD = "NoSuchUpload"


class IncompleteUploadError(CrrError):
    """Complete found parts missing or of the wrong size: a batch did not finish."""


class PartBatch(BaseModel):
    """Part numbers ``first``..``last`` (inclusive), copied by one invocation."""

    model_config = ConfigDict(frozen=True)

    first: int = Field(ge=1, le=MAX_PARTS)
    last: int = Field(ge=1, le=MAX_PARTS)


class PreparedCopy(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: LargeCopyJob
    batches: list[PartBatch]


class CopiedBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    copied: int
    reused: int


class CompletedCopy(BaseModel):
    model_config = ConfigDict(frozen=True)

    etag: str
    outcome: Literal["copied", "superseded"]


class GaveUp(BaseModel):
    model_config = ConfigDict(frozen=True)

    outcome: Literal["handed_back", "dead_lettered"]
    reason: str


class PrepareStep(BaseModel):
    action: Literal["prepare"]
    job: LargeCopyJob


class CopyBatchStep(BaseModel):
    action: Literal["copy_batch"]
    job: LargeCopyJob
    batch: PartBatch


class CompleteStep(BaseModel):
    action: Literal["complete"]
    job: LargeCopyJob


class GiveUpStep(BaseModel):
    action: Literal["give_up"]
    job: LargeCopyJob
    error: StepError


AnyStep = Annotated[PrepareStep | CopyBatchStep | CompleteStep | GiveUpStep, Field(discriminator="action")]


# What each step takes and gives back (the state machine's contract, checked against its ASL by a test).
STEP_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "prepare": (PrepareStep, PreparedCopy),
    "copy_batch": (CopyBatchStep, CopiedBatch),
    "complete": (CompleteStep, CompletedCopy),
    "give_up": (GiveUpStep, GaveUp),
}


class LargeCopyStep(RootModel[AnyStep]):
    """The payload each task state of statemachine/large_copy.asl.json sends the LargeCopyFunction."""


StepResult = PreparedCopy | CopiedBatch | CompletedCopy | GaveUp


def plan_batches(part_sizes: Sequence[int], batch_bytes: int) -> list[PartBatch]:
    """Consecutive parts grouped so each batch copies at most ``batch_bytes`` (a part bigger than that
    is a batch of its own)."""
    if batch_bytes <= 0:
        raise ValueError("a batch must be allowed some bytes")
    batches: list[PartBatch] = []
    first, size = 1, 0
    for number, part in enumerate(part_sizes, start=1):
        if size and size + part > batch_bytes:
            batches.append(PartBatch(first=first, last=number - 1))
            first, size = number, 0
        size += part
    batches.append(PartBatch(first=first, last=len(part_sizes)))
    return batches


@dataclass(frozen=True)
class LargeObjectSettings:
    """When the replicator copies in parts, in what part size, and when it hands a copy to the workflow."""

    multipart_threshold: int = 5 * 1024**3  # CopyObject's limit; above it (or for a multipart source) parts
    preferred_part: int = 64 * MIB
    # Assumed server-side copy rate of one invocation (parts in parallel); estimates whether a copy fits.
    copy_bytes_per_second: float = 100 * MIB

    def fits(self, size: int, remaining_seconds: float) -> bool:
        """Whether copying ``size`` bytes fits the time an invocation has left, with room to spare."""
        return size / self.copy_bytes_per_second <= remaining_seconds * TIME_SAFETY

    def batch_bytes(self, function_timeout_seconds: float) -> int:
        """What one batch invocation of the workflow may plan to copy."""
        return max(1, int(self.copy_bytes_per_second * function_timeout_seconds * TIME_SAFETY))


class LargeCopier:
    """The workflow's steps. Each raises domain errors; the state machine retries or gives up."""

    def __init__(
        self,
        uploads: MultipartUploads,
        objects: ObjectStore,
        hand_over: KeyHandOver,
        progress: ProgressSink,
        *,
        batch_bytes: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._uploads = uploads
        self._objects = objects
        self._hand_over = hand_over
        self._progress = progress
        self._batch_bytes = batch_bytes
        self._clock = clock

    def run(self, step: PrepareStep | CopyBatchStep | CompleteStep | GiveUpStep) -> StepResult:
        """Run one step of the workflow."""
        match step:
            case PrepareStep():
                return self.prepare(step.job)
            case CopyBatchStep():
                return self.copy_batch(step.job, step.batch)
            case CompleteStep():
                return self.complete(step.job)
            case GiveUpStep():
                return self.give_up(step.job, step.error.error, step.error.message)

    def prepare(self, job: LargeCopyJob) -> PreparedCopy:
        """Start the multipart upload (unless a redriven job already has one) and plan the batches."""
        upload_id = job.upload_id or self._uploads.create(job.request)
        prepared = job.model_copy(update={"upload_id": upload_id})
        return PreparedCopy(job=prepared, batches=plan_batches(job.part_sizes, self._batch_bytes))

    def copy_batch(self, job: LargeCopyJob, batch: PartBatch) -> CopiedBatch:
        """Copy the batch's parts that the upload does not hold yet, in parallel."""
        upload_id = _upload_of(job)
        wanted = job.parts[batch.first - 1 : batch.last]
        held = self._uploads.parts(job.request, upload_id, batch.first, batch.last)
        missing = [part for part in wanted if not _holds(held, part)]
        if missing:
            with ThreadPoolExecutor(max_workers=min(PART_CONCURRENCY, len(missing))) as pool:
                list(pool.map(lambda part: self._uploads.copy_part(job.request, upload_id, part), missing))
        return CopiedBatch(copied=len(missing), reused=len(wanted) - len(missing))

    def complete(self, job: LargeCopyJob) -> CompletedCopy:
        """Complete the upload if the source is still the version copied; hand the key back if a newer
        write landed around the completion."""
        upload_id = _upload_of(job)
        request = job.request
        self._require_current_source(request)
        try:
            held = self._uploads.parts(request, upload_id, 1, len(job.part_sizes))
            missing = [part.number for part in job.parts if not _holds(held, part)]
            if missing:
                raise IncompleteUploadError(f"upload {upload_id} lacks parts {missing[:10]} of {request.state.key}")
            etag = self._uploads.complete(request, upload_id, [held[part.number] for part in job.parts])
        except StorageError as exc:
            # A retried Complete whose first try completed the upload (and then failed) finds it gone.
            replica = self._completed_before(request) if exc.code == NO_SUCH_UPLOAD else None
            if replica is None:
                raise
            etag = replica.etag
        if request.destination_absent and undo_buried_delete(
            self._objects,
            request.destination_bucket,
            request.destination_region,
            request.state.key,
            written_etag=etag,
            seen_marker=job.seen_marker_version,
        ):
            # The live path compares afresh. (A delete that a later copy covered before this check stays
            # buried: carrying it needs the tombstone registry, which this workflow does not hold.)
            raise DestinationChangedError(
                f"a delete of {request.destination_bucket}/{request.state.key} landed under our copy"
            )
        current = self._objects.head(request.source_bucket, request.source_region, request.state.key)
        if current is None or current.etag != request.state.etag:
            self._hand_over.reconcile(request, "the source changed while its copy completed")
            return CompletedCopy(etag=etag, outcome="superseded")
        self._progress.add(
            job.rule_id,
            ProgressDelta(objects_copied=1, bytes_copied=request.state.size, latest_event_time=job.event_time),
            self._clock(),
        )
        return CompletedCopy(etag=etag, outcome="copied")

    def give_up(self, job: LargeCopyJob, error: str, cause: str) -> GaveUp:
        """Abort the upload and hand the key on: back to the live path after a lost race, else to the
        dead-letter queue with the reason."""
        if job.upload_id is not None:
            self._uploads.abort(job.request, job.upload_id)
        if error in SUPERSEDED_ERRORS:
            self._hand_over.reconcile(job.request, f"large copy lost a race: {error}")
            return GaveUp(outcome="handed_back", reason=error)
        reason = FailureReason(FailureKind.PERMANENT, error or "LargeCopyFailed", cause[:1000])
        self._hand_over.dead_letter(job.rule_id, job.request, reason, attempt_id=job.execution_name)
        return GaveUp(outcome="dead_lettered", reason=error)

    def _completed_before(self, request: CopyRequest) -> ObjectState | None:
        """The replica, if the destination holds this very copy (its marker names the version copied)."""
        replica = self._objects.head(request.destination_bucket, request.destination_region, request.state.key)
        # The write time (and so the seal) is left out: the upload's start set it (crr.markers.refreshed).
        compared = MARKER_KEYS - {MARKER_WRITTEN, MARKER_SEAL}
        marker = {key: value for key, value in request.metadata.items() if key in compared}
        if replica is None or not marker or any(replica.metadata.get(k) != v for k, v in marker.items()):
            return None
        return replica

    def _require_current_source(self, request: CopyRequest) -> None:
        current = self._objects.head(request.source_bucket, request.source_region, request.state.key)
        if current is None:
            raise SourceGoneError(f"{request.source_bucket}/{request.state.key} was deleted during its copy")
        if current.etag != request.state.etag:
            raise SourceChangedError(f"{request.source_bucket}/{request.state.key} was overwritten during its copy")


def _upload_of(job: LargeCopyJob) -> str:
    if job.upload_id is None:
        raise ValueError(f"large copy of {job.request.state.key} has no upload yet: run prepare first")
    return job.upload_id


def _holds(held: dict[int, UploadedPart], part: PartRange) -> bool:
    found = held.get(part.number)
    return found is not None and found.size == part.size
