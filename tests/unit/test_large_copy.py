"""Copies too large for one invocation: the hand-off, the batch plan, and the workflow's steps over moto."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.adapters.s3_multipart import S3MultipartUploads
from crr.adapters.stepfunctions import StepFunctionsLargeCopies
from crr.errors import AccessDeniedError, SourceChangedError, StorageError
from crr.events import ChangeEvent, ChangeKind
from crr.large_copy import LargeCopier, LargeCopyStep, LargeObjectSettings, PartBatch, plan_batches
from crr.models import CopyRequest, LargeCopyJob, ObjectState, UploadedPart
from crr.part_planning import MIB, plan_parts
from crr.replication import Outcome, Replicator
from tests.support.aws import client, create_bucket, upload_in_parts
from tests.support.events import load_event
from tests.support.fakes import FakeKeyHandOver, FakeLargeCopyLauncher, FakeLedger, FakeProgress, FakeRules, FakeS3
from tests.support.rules import make_rule

SRC, DST = "src-bucket", "dst-bucket"
WEST, EAST = "us-west-1", "us-east-1"
LAYOUT = [5 * MIB, 5 * MIB, 5 * MIB, 5 * MIB, 1234]


# ------------------------------------------------------------------ planning


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=200),
    budget=st.integers(min_value=1, max_value=400),
)
def test_batches_cover_every_part_once_in_order_within_the_budget(sizes: list[int], budget: int) -> None:
    # Given any part layout and batch budget, When batches are planned
    batches = plan_batches(sizes, budget)
    # Then they are consecutive, cover parts 1..N exactly once, and each fits the budget unless it is one part
    assert batches[0].first == 1
    assert batches[-1].last == len(sizes)
    for before, after in itertools.pairwise(batches):
        assert after.first == before.last + 1
    for batch in batches:
        assert batch.first <= batch.last
        size = sum(sizes[batch.first - 1 : batch.last])
        assert size <= budget or batch.first == batch.last


def test_a_copy_fits_when_its_estimated_time_is_under_half_the_time_left() -> None:
    settings = LargeObjectSettings(copy_bytes_per_second=10 * MIB)
    # 100 MiB at 10 MiB/s takes 10 s: it fits 20 s left (half is 10 s), not 19 s
    assert settings.fits(100 * MIB, remaining_seconds=20)
    assert not settings.fits(100 * MIB, remaining_seconds=19)
    assert settings.batch_bytes(function_timeout_seconds=30) == 150 * MIB


def test_the_execution_name_is_stable_per_source_version_and_valid_for_step_functions() -> None:
    # Given two jobs for the same version and one for the next version
    first = job_for(state_of("dir/a b.bin", etag='"abc-3"', version="v1"))
    again = job_for(state_of("dir/a b.bin", etag='"abc-3"', version="v1"))
    newer = job_for(state_of("dir/a b.bin", etag='"def-3"', version="v2"))
    # Then duplicates share a name, a newer version gets another, and names fit Step Functions' rules
    assert first.execution_name == again.execution_name != newer.execution_name
    assert len(first.execution_name) <= 80
    assert all(character.isalnum() or character in "-_" for character in first.execution_name)


def test_every_step_payload_of_the_workflow_parses() -> None:
    # Given the sample payloads the state machine sends the function (events/stepfunctions)
    for name, action in [
        ("large-copy-prepare", "prepare"),
        ("large-copy-copy-batch", "copy_batch"),
        ("large-copy-complete", "complete"),
        ("large-copy-give-up", "give_up"),
    ]:
        # When parsed, Then each becomes its step, with the job intact
        step = LargeCopyStep.model_validate(load_event(f"stepfunctions/{name}")).root
        assert step.action == action
        assert step.job.request.state.key == "media/clip one.mp4"


# ------------------------------------------------------------------ the hand-off from the live path


def hand_off_world() -> tuple[Replicator, FakeLargeCopyLauncher, FakeS3, FakeLedger]:
    s3 = FakeS3()
    s3.create_bucket(SRC, WEST, versioned=True)
    s3.create_bucket(DST, EAST)
    stored = s3.put(SRC, "big.bin", b"x" * 64)
    s3.buckets[SRC].history["big.bin"] = [replace(stored, etag=stored.etag.rstrip('"') + '-2"')]
    launcher = FakeLargeCopyLauncher()
    ledger = FakeLedger()
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)
    replicator = Replicator(
        FakeRules(rule),
        s3,
        ledger,
        FakeProgress(),
        large_objects=LargeObjectSettings(copy_bytes_per_second=1.0),  # 64 bytes take 64 s
        large_copies=launcher,
    )
    return replicator, launcher, s3, ledger


def change(key: str) -> ChangeEvent:
    return ChangeEvent(
        bucket=SRC,
        key=key,
        kind=ChangeKind.CREATED,
        event_name="ObjectCreated:CompleteMultipartUpload",
        event_time=datetime(2026, 11, 25, tzinfo=UTC),
        sequencer="0A",
    )


def test_a_copy_that_does_not_fit_the_time_left_is_handed_to_the_workflow() -> None:
    # Given a multipart source whose copy would take 64 s, and an invocation with 100 s left
    replicator, launcher, s3, ledger = hand_off_world()
    # When its change is applied
    with replicator.invocation_scope(remaining_seconds=lambda: 100):
        result = replicator.apply(change("big.bin"))
    # Then the workflow is started with the version, its part plan and the replica's metadata
    assert result.outcome is Outcome.COPY_STARTED
    assert s3.current(DST, "big.bin") is None
    (job,) = launcher.started
    assert job.request.state.etag.endswith('-2"')
    assert sum(job.part_sizes) == 64
    assert job.request.metadata["crr-origin-bucket"] == SRC
    # And the ledger fences duplicates of this change: the durable workflow owns it now
    entry = ledger.read("r1", "big.bin")
    assert entry is not None
    assert entry.sequencer == "0A"


def test_a_copy_that_fits_the_time_left_is_made_in_the_invocation() -> None:
    # Given the same source and an invocation with 1000 s left
    replicator, launcher, s3, _ = hand_off_world()
    # When its change is applied within that invocation
    with replicator.invocation_scope(remaining_seconds=lambda: 1000):
        result = replicator.apply(change("big.bin"))
    # Then it is copied right away and no workflow starts
    assert result.outcome is Outcome.COPIED
    assert launcher.started == []
    assert s3.current(DST, "big.bin") is not None


# ------------------------------------------------------------------ the workflow's steps, over moto


@pytest.fixture
def buckets(aws: None) -> tuple[Any, Any]:
    west, east = client("s3", WEST), client("s3", EAST)
    create_bucket(west, SRC, WEST, versioned=True)
    create_bucket(east, DST, EAST)
    return west, east


def source_job(west: Any) -> LargeCopyJob:
    upload_in_parts(
        west, SRC, "media/clip one.mp4", LAYOUT, ContentType="video/mp4", Metadata={"owner": "ana"}, Tagging="t=1"
    )
    store = S3ObjectStore(ClientFactory())
    state = store.head(SRC, WEST, "media/clip one.mp4")
    assert state is not None
    request = CopyRequest(SRC, WEST, DST, EAST, state, {**state.metadata, "crr-origin-bucket": SRC}, None, None)
    layout = store.part_sizes(SRC, WEST, state)
    return job_for(state, request, [part.size for part in plan_parts(state.size, layout)])


def job_for(state: ObjectState, request: CopyRequest | None = None, sizes: list[int] | None = None) -> LargeCopyJob:
    request = request or CopyRequest(SRC, WEST, DST, EAST, state, {}, None, None)
    return LargeCopyJob(rule_id="r1", request=request, part_sizes=sizes or [state.size], event_time=state.last_modified)


def state_of(key: str, etag: str, version: str) -> ObjectState:
    return ObjectState(
        key=key, etag=etag, size=10, last_modified=datetime(2026, 11, 25, tzinfo=UTC), version_id=version
    )


def copier(hand_over: FakeKeyHandOver, progress: FakeProgress, uploads: Any = None) -> LargeCopier:
    clients = ClientFactory()
    return LargeCopier(
        uploads or S3MultipartUploads(clients),
        S3ObjectStore(clients),
        hand_over,
        progress,
        batch_bytes=10 * MIB,
    )


def test_the_workflow_steps_copy_an_object_in_batches_with_its_etag_metadata_and_tags(
    buckets: tuple[Any, Any],
) -> None:
    west, east = buckets
    # Given a 5-part source and a copier allowed 10 MiB per batch
    job = source_job(west)
    hand_over, progress = FakeKeyHandOver(), FakeProgress()
    steps = copier(hand_over, progress)
    # When the workflow prepares, copies every batch, and completes
    prepared = steps.prepare(job)
    copied = [steps.copy_batch(prepared.job, batch) for batch in prepared.batches]
    completed = steps.complete(prepared.job)
    # Then three batches copied the five parts, and the replica equals the source, ETag included
    assert prepared.batches == [PartBatch(first=1, last=2), PartBatch(first=3, last=4), PartBatch(first=5, last=5)]
    assert sum(batch.copied for batch in copied) == 5
    source = west.head_object(Bucket=SRC, Key="media/clip one.mp4")
    replica = east.head_object(Bucket=DST, Key="media/clip one.mp4")
    assert completed.outcome == "copied"
    assert replica["ETag"] == source["ETag"] == completed.etag
    assert (replica["ContentType"], replica["Metadata"]["owner"]) == ("video/mp4", "ana")
    assert east.get_object_tagging(Bucket=DST, Key="media/clip one.mp4")["TagSet"] == [{"Key": "t", "Value": "1"}]
    # And the copy is counted once it is complete, with nothing handed anywhere
    assert [(rule, delta.objects_copied, delta.bytes_copied) for rule, delta in progress.added] == [
        ("r1", 1, sum(LAYOUT))
    ]
    assert hand_over.reconciled == []
    assert hand_over.dead_lettered == []


def test_a_batch_run_again_after_a_failure_copies_only_the_parts_still_missing(buckets: tuple[Any, Any]) -> None:
    west, _ = buckets
    # Given a prepared copy whose first batch (parts 1-2) failed at its second part
    job = source_job(west)
    hand_over, progress = FakeKeyHandOver(), FakeProgress()
    prepared = copier(hand_over, progress).prepare(job)
    real = S3MultipartUploads(ClientFactory())
    copy_part = real.copy_part
    calls: list[int] = []

    def fail_part_two(request: CopyRequest, upload_id: str, part: Any) -> UploadedPart:
        calls.append(part.number)
        if part.number == 2 and calls.count(2) == 1:
            raise StorageError("UploadPartCopy", DST, "k", "InternalError", "boom")
        return copy_part(request, upload_id, part)

    with patch.object(real, "copy_part", side_effect=fail_part_two):
        steps = copier(hand_over, progress, uploads=real)
        with pytest.raises(StorageError):
            steps.copy_batch(prepared.job, prepared.batches[0])
        # When Step Functions runs the batch again
        again = steps.copy_batch(prepared.job, prepared.batches[0])
    # Then it re-uses the part that was done (found by ListParts) and copies only the other
    assert (again.copied, again.reused) == (1, 1)
    assert sorted(calls) == [1, 2, 2]


def test_a_source_overwritten_during_the_copy_is_not_completed_and_goes_back_to_the_live_path(
    buckets: tuple[Any, Any],
) -> None:
    west, east = buckets
    # Given a copy whose batches are done, then an overwrite of the source
    job = source_job(west)
    hand_over, progress = FakeKeyHandOver(), FakeProgress()
    steps = copier(hand_over, progress)
    prepared = steps.prepare(job)
    for batch in prepared.batches:
        steps.copy_batch(prepared.job, batch)
    west.put_object(Bucket=SRC, Key="media/clip one.mp4", Body=b"newer")
    # When the workflow tries to complete, Then it refuses
    with pytest.raises(SourceChangedError):
        steps.complete(prepared.job)
    # And when it gives up: the upload is aborted, the key handed back, nothing dead-lettered
    outcome = steps.give_up(prepared.job, "SourceChangedError", "overwritten")
    assert outcome.outcome == "handed_back"
    assert east.list_multipart_uploads(Bucket=DST).get("Uploads", []) == []
    assert [key for key, _ in hand_over.reconciled] == ["media/clip one.mp4"]
    assert hand_over.dead_lettered == []
    assert "Contents" not in east.list_objects_v2(Bucket=DST)


def test_a_copy_that_fails_for_good_is_aborted_and_dead_lettered_with_its_reason(buckets: tuple[Any, Any]) -> None:
    west, east = buckets
    # Given a prepared copy whose batch was denied
    job = source_job(west)
    hand_over, progress = FakeKeyHandOver(), FakeProgress()
    steps = copier(hand_over, progress)
    prepared = steps.prepare(job)
    denied = AccessDeniedError("UploadPartCopy", DST, "media/clip one.mp4", "AccessDenied", "no")
    # When the workflow gives up with that error (the Cause is Lambda's error JSON)
    cause = '{"errorMessage": "%s", "errorType": "AccessDeniedError"}' % denied  # noqa: UP031
    outcome = steps.give_up(prepared.job, "AccessDeniedError", cause)
    # Then the upload is gone and the key waits in the DLQ with the reason and the message
    assert outcome.outcome == "dead_lettered"
    assert east.list_multipart_uploads(Bucket=DST).get("Uploads", []) == []
    ((key, reason),) = hand_over.dead_lettered
    assert key == "media/clip one.mp4"
    assert reason.code == "AccessDeniedError"
    assert "UploadPartCopy" in reason.message


def test_giving_up_on_an_upload_already_gone_still_hands_the_key_on(buckets: tuple[Any, Any]) -> None:
    west, _ = buckets
    # Given a prepared copy whose upload was already aborted (a give-up step that ran twice)
    job = source_job(west)
    hand_over = FakeKeyHandOver()
    steps = copier(hand_over, FakeProgress())
    prepared = steps.prepare(job)
    steps.give_up(prepared.job, "SourceGoneError", "deleted")
    # When it gives up again, Then the abort of a missing upload is not an error
    assert steps.give_up(prepared.job, "SourceGoneError", "deleted").outcome == "handed_back"
    assert len(hand_over.reconciled) == 2


def test_a_refused_upload_is_translated_into_access_denied(buckets: tuple[Any, Any]) -> None:
    west, _ = buckets
    job = source_job(west)
    clients = ClientFactory()
    uploads = S3MultipartUploads(clients)
    # Given a destination refusing uploads
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateMultipartUpload")
    destination = clients.client("s3", EAST)
    with patch.object(destination, "create_multipart_upload", side_effect=denied), pytest.raises(AccessDeniedError):
        # When the upload is created, Then the error says what was denied
        uploads.create(job.request)


# ------------------------------------------------------------------ starting executions


def test_a_version_is_copied_by_one_running_execution_and_a_later_attempt_gets_its_own(aws: None) -> None:
    # Given the large-copy state machine
    sfn = client("stepfunctions", WEST)
    machine = sfn.create_state_machine(
        name="crr-large-copy",
        definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    launcher = StepFunctionsLargeCopies(sfn, machine)
    job = job_for(state_of("big.bin", etag='"abc-3"', version="v1"))
    # When the same version is handed off twice while its copy runs
    launcher.start(job)
    launcher.start(job)
    # Then one execution copies it
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert [execution["name"] for execution in executions] == [job.execution_name]
    # And when that attempt ended without a copy and the key is replayed, a second attempt starts
    sfn.stop_execution(executionArn=executions[0]["executionArn"])
    launcher.start(job)
    names = sorted(execution["name"] for execution in sfn.list_executions(stateMachineArn=machine)["executions"])
    assert names == sorted([job.execution_name, f"{job.execution_name}-2"])


def test_a_complete_step_run_again_after_it_completed_the_upload_finds_its_replica(
    buckets: tuple[Any, Any],
) -> None:
    west, east = buckets
    # Given a copy completed by a Complete step that then failed (Step Functions runs it again)
    job = source_job(west)
    hand_over, progress = FakeKeyHandOver(), FakeProgress()
    steps = copier(hand_over, progress)
    prepared = steps.prepare(job)
    for batch in prepared.batches:
        steps.copy_batch(prepared.job, batch)
    first = steps.complete(prepared.job)
    # When Complete runs again, with the upload gone
    again = steps.complete(prepared.job)
    # Then it recognises its replica instead of failing the copy into the dead-letter queue
    assert (again.outcome, again.etag) == ("copied", first.etag)
    assert east.head_object(Bucket=DST, Key="media/clip one.mp4")["ETag"] == first.etag
    assert hand_over.dead_lettered == []
