"""The backfill's adapters over moto: ListObjectsV2 pages, the one-request copy, and the job store.

moto ignores ``CopySourceIfMatch``; tests/integration/seaweedfs/test_backfill_copy.py shows a changed
source refused on a server that honours it.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import boto3
import pytest
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from crr.adapters.backfill_s3 import S3FastCopier, fast_timestamps, parse_timestamp
from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoBackfillJobs, DynamoLedger, DynamoProgress, DynamoRules
from crr.adapters.dynamodb.keys import backfill_sk, rule_pk
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.backfill.engine import BackfillEngine
from crr.backfill.models import (
    BackfillJob,
    BackfillStatus,
    CountProgress,
    ListingCursor,
    PageCounts,
    PageResult,
)
from crr.backfill.reconcile import reconciler
from crr.errors import (
    BackfillJobConflictError,
    BackfillJobNotFoundError,
    BucketMissingError,
    SourceGoneError,
    StateStoreError,
)
from crr.models import ListedObject
from crr.replication import Replicator
from tests.support import rules
from tests.support.aws import client, create_bucket, create_rules_table
from tests.support.backfill_runner import run_job
from tests.support.fakes import FakeReplicationQueue

WEST, EAST = "us-west-1", "us-east-1"
SRC, DST = "bf-src", "bf-dst"
TABLE = "rules"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# this module's rules replicate its moto buckets, and were created before its objects' cutoff
make_rule = partial(rules.make_rule, source_bucket=SRC, destination_bucket=DST, created_at=T0)


@pytest.fixture
def buckets(aws: None) -> tuple[Any, Any]:
    west, east = client("s3", WEST), client("s3", EAST)
    create_bucket(west, SRC, WEST)
    create_bucket(east, DST, EAST)
    return west, east


class CountingClients(ClientFactory):
    """crr's client factory, counting S3 API calls by operation with botocore's event hooks."""

    def __init__(self) -> None:
        session = boto3.session.Session()
        self.calls: Counter[str] = Counter()
        lock = threading.Lock()

        def count(event_name: str, **_: Any) -> None:
            with lock:
                self.calls[event_name.rsplit(".", 1)[-1]] += 1

        session.events.register("before-call.s3", count)
        super().__init__(session=session)


# ---- ListObjectsV2 ---------------------------------------------------------------------------------


def test_a_page_is_one_request_after_start_after_with_unquoted_etags(buckets: tuple[Any, Any]) -> None:
    # Given awkward keys under two prefixes
    west, _ = buckets
    keys = ["data/a b", "data/c+d", "data/100%", "data/ü", "data/😀", "logs/1"]
    for key in keys:
        west.put_object(Bucket=SRC, Key=key, Body=key.encode(), StorageClass="STANDARD_IA")
    clients = CountingClients()
    listing = S3Listing(clients)
    # When the prefix is listed two keys at a time from after the first key
    first = listing.list_page(SRC, WEST, "data/", start_after=None, max_keys=2)
    second = listing.list_page(SRC, WEST, "data/", start_after=first.entries[-1].key, max_keys=2)
    third = listing.list_page(SRC, WEST, "data/", start_after=second.entries[-1].key, max_keys=2)
    # Then the pages follow S3's key order, one request each, the last one not truncated
    listed = [entry.key for page in (first, second, third) for entry in page.entries]
    assert listed == sorted(keys[:5], key=str.encode)
    assert [first.truncated, second.truncated, third.truncated] == [True, True, False]
    assert clients.calls == Counter({"ListObjectsV2": 3})
    entry = first.entries[0]
    assert entry.etag == west.head_object(Bucket=SRC, Key=entry.key)["ETag"].strip('"')
    assert entry.storage_class == "STANDARD_IA"


def test_listing_a_missing_bucket_raises_bucket_missing(aws: None) -> None:
    with pytest.raises(BucketMissingError, match="ListObjectsV2 on no-such-bucket"):
        S3Listing(ClientFactory()).list_page("no-such-bucket", WEST, "", start_after=None, max_keys=10)


@pytest.mark.parametrize("max_keys", [0, 1001])
def test_a_page_is_at_most_what_list_objects_v2_returns(max_keys: int) -> None:
    with pytest.raises(ValueError, match="max_keys"):
        S3Listing(ClientFactory()).list_page("b", WEST, "", start_after=None, max_keys=max_keys)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T10:00:00.000Z",
        "2026-11-25T10:00:00Z",
        "2026-11-25T10:00:00.123456+02:00",
        "Wed, 25 Nov 2026 10:00:00 GMT",
        "2026-11-25T10:00:00",
        1795600000,
    ],
)
def test_fast_timestamps_are_the_instants_botocore_reads(value: Any) -> None:
    assert parse_timestamp(value) == botocore_parse_timestamp(value)


def test_a_fast_timestamp_session_still_gives_aware_datetimes(buckets: tuple[Any, Any]) -> None:
    west, _ = buckets
    west.put_object(Bucket=SRC, Key="k", Body=b"x")
    s3 = ClientFactory(session=fast_timestamps(boto3.session.Session())).client("s3", WEST)
    listed = s3.list_objects_v2(Bucket=SRC)["Contents"][0]["LastModified"]
    headed = s3.head_object(Bucket=SRC, Key="k")["LastModified"]
    assert listed.tzinfo is not None
    assert listed == west.list_objects_v2(Bucket=SRC)["Contents"][0]["LastModified"]
    assert headed == west.head_object(Bucket=SRC, Key="k")["LastModified"]


# ---- CopyObject ------------------------------------------------------------------------------------


def _entry(s3: Any, key: str) -> ListedObject:
    head = s3.head_object(Bucket=SRC, Key=key)
    return ListedObject(key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'))


def test_the_copy_is_one_request_that_carries_headers_metadata_and_tags(buckets: tuple[Any, Any]) -> None:
    # Given an object with content headers, user metadata and tags, in buckets without ACLs (the default)
    west, east = buckets
    west.put_object(
        Bucket=SRC,
        Key="doc.txt",
        Body=b"hello",
        ContentType="text/plain",
        CacheControl="max-age=60",
        ContentLanguage="de",
        Metadata={"owner": "ana"},
        Tagging="team=blue",
    )
    clients = CountingClients()
    # When the backfill copies it
    answered = S3FastCopier(clients).copy_listed(make_rule(), _entry(west, "doc.txt"))
    # Then the replica has it all, and the copy was the only per-object request, answering its ETag
    replica = east.head_object(Bucket=DST, Key="doc.txt")
    assert answered == replica["ETag"]
    assert (replica["ContentType"], replica["CacheControl"], replica["ContentLanguage"]) == (
        "text/plain",
        "max-age=60",
        "de",
    )
    assert replica["Metadata"] == {"owner": "ana"}
    assert east.get_object_tagging(Bucket=DST, Key="doc.txt")["TagSet"] == [{"Key": "team", "Value": "blue"}]
    assert east.get_object(Bucket=DST, Key="doc.txt")["Body"].read() == b"hello"
    assert clients.calls["CopyObject"] == 1
    assert clients.calls["GetObjectAcl"] == 0
    # (the ACL mode of each bucket is looked up once and cached)
    assert clients.calls["GetBucketOwnershipControls"] == 1


def test_the_rules_storage_class_overrides_the_sources(buckets: tuple[Any, Any]) -> None:
    west, east = buckets
    west.put_object(Bucket=SRC, Key="k", Body=b"x")
    S3FastCopier(ClientFactory()).copy_listed(make_rule(storage_class="STANDARD_IA"), _entry(west, "k"))
    assert east.head_object(Bucket=DST, Key="k")["StorageClass"] == "STANDARD_IA"


def test_grants_are_carried_when_both_buckets_use_acls(buckets: tuple[Any, Any]) -> None:
    # Given buckets that use ACLs and an object readable by everyone
    west, east = buckets
    for s3, name in ((west, SRC), (east, DST)):
        s3.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]}
        )
    west.put_object(Bucket=SRC, Key="public", Body=b"x", ACL="public-read")
    clients = CountingClients()
    # When copied
    S3FastCopier(clients, S3ObjectStore(clients)).copy_listed(make_rule(), _entry(west, "public"))
    # Then the replica has the read grant, at the price of one GetObjectAcl
    grants = east.get_object_acl(Bucket=DST, Key="public")["Grants"]
    assert any(grant["Permission"] == "READ" and "AllUsers" in grant["Grantee"].get("URI", "") for grant in grants)
    assert clients.calls["GetObjectAcl"] == 1


def test_a_source_deleted_since_it_was_listed_is_source_gone(buckets: tuple[Any, Any]) -> None:
    west, _ = buckets
    west.put_object(Bucket=SRC, Key="k", Body=b"x")
    entry = _entry(west, "k")
    west.delete_object(Bucket=SRC, Key="k")
    with pytest.raises(SourceGoneError, match="deleted since it was listed"):
        S3FastCopier(ClientFactory()).copy_listed(make_rule(), entry)


def test_a_missing_destination_bucket_is_bucket_missing(buckets: tuple[Any, Any]) -> None:
    west, east = buckets
    west.put_object(Bucket=SRC, Key="k", Body=b"x")
    east.delete_bucket(Bucket=DST)
    with pytest.raises(BucketMissingError):
        S3FastCopier(ClientFactory()).copy_listed(make_rule(), _entry(west, "k"))


# ---- the engine on the real adapters ----------------------------------------------------------------


def test_a_job_over_moto_copies_every_object_under_the_prefixes(buckets: tuple[Any, Any]) -> None:
    # Given 30 objects under three prefixes and a few outside, one of them already replicated
    west, east = buckets
    keys = [f"{prefix}/{index:02d}" for prefix in ("a", "b", "c") for index in range(10)]
    for key in [*keys, "outside/1", "zz"]:
        west.put_object(Bucket=SRC, Key=key, Body=key.encode(), Metadata={"k": key}, Tagging=f"k={index_of(key)}")
    east.put_object(Bucket=DST, Key="b/05", Body=b"b/05")
    rule = make_rule("a/", "b/", "c/")
    dynamodb = client("dynamodb", WEST)
    create_rules_table(dynamodb, TABLE)
    DynamoRules(dynamodb, TABLE).create(rule)
    clients = CountingClients()
    ledger = DynamoLedger(dynamodb, TABLE)
    live = Replicator(DynamoRules(dynamodb, TABLE), S3ObjectStore(clients), ledger, DynamoProgress(dynamodb, TABLE))
    engine = BackfillEngine(
        S3Listing(clients), S3FastCopier(clients), ledger, reconciler(live), FakeReplicationQueue(), concurrency=8
    )
    jobs = DynamoBackfillJobs(dynamodb, TABLE)
    job = BackfillJob.start(rule, at=T0, page_size=7, count_pages=2)
    jobs.create(job)
    # When the job runs to the end
    with engine:
        final = run_job(engine, rule, jobs, job)
    # Then every prefixed object is in the destination with its metadata and tags, none outside
    listed = {item["Key"] for item in east.list_objects_v2(Bucket=DST)["Contents"]}
    assert listed == set(keys)
    assert east.head_object(Bucket=DST, Key="c/09")["Metadata"] == {"k": "c/09"}
    assert east.get_object_tagging(Bucket=DST, Key="c/09")["TagSet"] == [{"Key": "k", "Value": "9"}]
    assert (final.status, final.totals.listed, final.totals.copied, final.totals.skipped) == (
        BackfillStatus.SUCCEEDED,
        30,
        29,
        1,
    )
    assert final.count == CountProgress(cursor=ListingCursor(prefix_index=3), objects=30, bytes=120, complete=True)
    # And the S3 requests are one copy per copied object plus the listings: pages of 7 over prefixes of 10
    # cross into the next prefix, so 5 pages took 7 source and 7 destination requests, and counting 6
    assert clients.calls["CopyObject"] == 29
    assert clients.calls["ListObjectsV2"] == 7 + 7 + 6
    assert ledger.read("r1", "a/00") is not None


def index_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1]) % 10 if key[-1].isdigit() else 0


# ---- the job store -----------------------------------------------------------------------------------


@pytest.fixture
def jobs(aws: None) -> DynamoBackfillJobs:
    dynamodb = client("dynamodb", WEST)
    create_rules_table(dynamodb, TABLE)
    return DynamoBackfillJobs(dynamodb, TABLE, clock=lambda: T0 + timedelta(minutes=5))


def _page(job: BackfillJob, sequence: int, *, done: bool = False, after: str | None = "k") -> PageResult:
    return PageResult(
        job_id=job.job_id,
        rule_id=job.rule_id,
        plan=job.plan,
        sequence=sequence,
        counts=PageCounts(listed=10, copied=7, skipped=2, failed=1, bytes_listed=100, bytes_copied=70),
        cursor=ListingCursor(prefix_index=1 if done else 0, after=None if done else f"{after}{sequence}"),
        done=done,
        count=CountProgress(cursor=ListingCursor(prefix_index=1), objects=40, bytes=400, complete=True),
        elapsed_seconds=1.5,
    )


def test_a_job_is_stored_and_found_again_and_the_newest_is_the_latest(jobs: DynamoBackfillJobs) -> None:
    # Given two jobs of one rule, a second apart, and one of another rule
    older = BackfillJob.start(make_rule(), at=T0)
    newer = BackfillJob.start(make_rule(), at=T0 + timedelta(seconds=1))
    other = BackfillJob.start(make_rule().model_copy(update={"rule_id": "r2"}), at=T0 + timedelta(hours=1))
    for job in (newer, older, other):
        jobs.create(job)
    # Then each reads back equal, and the newest of the rule is its latest
    assert jobs.get("r1", older.job_id) == older
    assert jobs.latest("r1") == newer
    assert jobs.latest("r3") is None
    with pytest.raises(BackfillJobNotFoundError, match="no backfill job 'nope'"):
        jobs.get("r1", "nope")
    with pytest.raises(BackfillJobConflictError, match="already has a backfill"):
        jobs.create(older)


def test_a_job_lives_beside_its_rule_in_the_table(jobs: DynamoBackfillJobs) -> None:
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    item = client("dynamodb", WEST).get_item(
        TableName=TABLE, Key={"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_sk(job.job_id)}}
    )
    assert item["Item"]["status"] == {"S": "running"}


def test_recording_a_page_adds_its_counts_and_moves_the_cursors(jobs: DynamoBackfillJobs) -> None:
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    jobs.record_page(_page(job, 1))
    stored = jobs.record_page(_page(job, 2))
    assert stored.pages == 2
    assert stored.totals == PageCounts(listed=20, copied=14, skipped=4, failed=2, bytes_listed=200, bytes_copied=140)
    assert stored.cursor == ListingCursor(prefix_index=0, after="k2")
    assert (stored.count.objects, stored.count.complete, stored.active_seconds) == (40, True, 3.0)
    assert stored.updated_at == T0 + timedelta(minutes=5)
    assert stored == jobs.get("r1", job.job_id)
    assert stored.progress().percent == 50.0


def test_a_retried_page_is_not_counted_twice(jobs: DynamoBackfillJobs) -> None:
    # Given a page recorded, then the same page delivered again by a retried step
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    first = jobs.record_page(_page(job, 1))
    again = jobs.record_page(_page(job, 1, after="other"))
    # Then the second delivery changed nothing, and pages go on after it
    assert again == first
    assert again.totals.listed == 10
    assert jobs.record_page(_page(job, 2)).totals.listed == 20


def test_a_page_out_of_order_is_refused(jobs: DynamoBackfillJobs) -> None:
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    with pytest.raises(BackfillJobConflictError, match="page 3 arrived, but only 0 page"):
        jobs.record_page(_page(job, 3))
    assert jobs.get("r1", job.job_id).pages == 0


def test_the_last_page_clears_the_cursor_key_and_lets_the_job_succeed(jobs: DynamoBackfillJobs) -> None:
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    jobs.record_page(_page(job, 1))
    with pytest.raises(BackfillJobConflictError, match="cannot become succeeded: it is running, with pages left"):
        jobs.mark_succeeded("r1", job.job_id, T0)
    last = jobs.record_page(_page(job, 2, done=True))
    assert (last.done, last.cursor) == (True, ListingCursor(prefix_index=1))
    finished = jobs.mark_succeeded("r1", job.job_id, T0 + timedelta(hours=1))
    assert (finished.status, finished.finished_at) == (BackfillStatus.SUCCEEDED, T0 + timedelta(hours=1))
    assert jobs.mark_succeeded("r1", job.job_id, T0 + timedelta(hours=2)) == finished  # asked twice: no change
    with pytest.raises(BackfillJobConflictError, match="cannot become failed: it is succeeded"):
        jobs.mark_failed("r1", job.job_id, "late", T0)
    with pytest.raises(BackfillJobConflictError, match="cannot become running"):
        jobs.set_execution("r1", job.job_id, "arn:aws:states:us-west-1:1:execution:m:x", T0)


def test_a_failed_job_keeps_its_reason_and_runs_again_under_a_new_execution(jobs: DynamoBackfillJobs) -> None:
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    jobs.record_page(_page(job, 1))
    failed = jobs.mark_failed("r1", job.job_id, "ListObjectsV2 on bf-src failed: AccessDenied", T0)
    assert (failed.status, failed.failure_reason) == (
        BackfillStatus.FAILED,
        "ListObjectsV2 on bf-src failed: AccessDenied",
    )
    # A page arriving for a failed job is refused until the job runs again
    with pytest.raises(BackfillJobConflictError, match="is failed"):
        jobs.record_page(_page(job, 2))
    arn = "arn:aws:states:us-west-1:123456789012:execution:Backfill:r1-2"
    resumed = jobs.set_execution("r1", job.job_id, arn, T0 + timedelta(hours=1))
    assert (resumed.status, resumed.execution_arn, resumed.failure_reason, resumed.finished_at) == (
        BackfillStatus.RUNNING,
        arn,
        None,
        None,
    )
    assert resumed.next_request().sequence == 2
    assert resumed.next_request().cursor == ListingCursor(after="k1")


def test_status_changes_of_a_missing_job_say_so(jobs: DynamoBackfillJobs) -> None:
    with pytest.raises(BackfillJobNotFoundError):
        jobs.mark_failed("r1", "nope", "x", T0)
    job = BackfillJob.start(make_rule(), at=T0)
    with pytest.raises(BackfillJobNotFoundError):
        jobs.record_page(_page(job, 1))


def test_a_missing_table_is_a_state_store_error(aws: None) -> None:
    jobs = DynamoBackfillJobs(client("dynamodb", WEST), "no-such-table")
    with pytest.raises(StateStoreError, match="ResourceNotFoundException") as caught:
        jobs.latest("r1")
    assert caught.value.code == "ResourceNotFoundException"
    with pytest.raises(StateStoreError):
        jobs.create(BackfillJob.start(make_rule(), at=T0))
