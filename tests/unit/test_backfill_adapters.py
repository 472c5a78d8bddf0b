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
from crr.adapters.dynamodb.items import to_value
from crr.adapters.dynamodb.keys import (
    backfill_range_sk,
    backfill_ranges_prefix,
    backfill_sk,
    backfill_tally_sk,
    rule_pk,
)
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.backfill.engine import BackfillEngine
from crr.backfill.fanout import initial_ranges, page_record
from crr.backfill.models import BackfillJob, BackfillStatus, PageCounts, PageResult
from crr.backfill.ranges import KeyRange
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillSteps
from crr.errors import (
    BucketMissingError,
    SourceGoneError,
    StateStoreError,
)
from crr.models import ListedObject
from crr.replication import Replicator
from tests.support import rules
from tests.support.aws import client, create_bucket, create_rules_table
from tests.support.backfill_runner import run_fanned_out
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
    job = BackfillJob.start(rule, at=T0, page_size=7, count_pages=2, workers=1)
    jobs.create(job)
    # When the job runs to the end (one worker: moto's in-process DynamoDB does not make a conditional
    # write atomic against another thread's, as DynamoDB does)
    with engine:
        final = run_fanned_out(
            BackfillSteps(engine, jobs, DynamoRules(dynamodb, TABLE, cache_seconds=0)), job, workers=1
        )
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
    assert (final.counted, final.counted_bytes, final.ranges_open, final.ranges_uncounted) == (30, 120, 0, 0)
    # And the S3 requests are one copy per copied object plus the listings, well under 1.1 per object
    assert clients.calls["CopyObject"] == 29
    assert clients.calls["CopyObject"] + clients.calls["ListObjectsV2"] <= 1.1 * 30 + 20
    assert ledger.read("r1", "a/00") is not None


def index_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1]) % 10 if key[-1].isdigit() else 0


# ---- the job store's layout (its behaviour: tests/unit/test_fakes_conform.py) --------------------------


@pytest.fixture
def jobs(aws: None) -> DynamoBackfillJobs:
    dynamodb = client("dynamodb", WEST)
    create_rules_table(dynamodb, TABLE)
    return DynamoBackfillJobs(dynamodb, TABLE, clock=lambda: T0 + timedelta(minutes=5))


def test_a_job_and_its_ranges_live_beside_its_rule_and_the_newest_job_is_the_latest(jobs: DynamoBackfillJobs) -> None:
    # Given two jobs of one rule, a second apart, the older with ranges (which sort after its own item)
    older = BackfillJob.start(make_rule(), at=T0)
    newer = BackfillJob.start(make_rule(), at=T0 + timedelta(seconds=1))
    for job in (older, newer):
        jobs.create(job)
    jobs.add_ranges("r1", older.job_id, initial_ranges("r1", older.job_id, [KeyRange("a/"), KeyRange("b/")]))
    db = client("dynamodb", WEST)
    item = db.get_item(TableName=TABLE, Key={"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_sk(newer.job_id)}})
    assert item["Item"]["status"] == {"S": "running"}
    ranged = db.get_item(
        TableName=TABLE, Key={"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_range_sk(older.job_id, "0001")}}
    )
    assert (ranged["Item"]["prefix"], ranged["Item"]["kind"]) == ({"S": "b/"}, {"S": "keys"})
    # Then the newest job is the latest; and with ranges of its own, still
    assert jobs.latest("r1") == newer
    jobs.add_ranges("r1", newer.job_id, initial_ranges("r1", newer.job_id, [KeyRange("")]))
    latest = jobs.latest("r1")
    assert latest is not None
    assert (latest.job_id, latest.ranges_made) == (newer.job_id, 1)
    assert jobs.latest("r3") is None


def test_a_page_that_opens_and_closes_no_range_leaves_the_job_item_to_the_worker_s_tally(
    jobs: DynamoBackfillJobs,
) -> None:
    # Given a job of two ranges, each held by a worker of its own
    job = BackfillJob.start(make_rule(), at=T0, workers=2)
    jobs.create(job)
    jobs.add_ranges("r1", job.job_id, initial_ranges("r1", job.job_id, [KeyRange("a/"), KeyRange("b/")]))
    first, second = jobs.ranges("r1", job.job_id)
    workers = ("arn:exec:r1#0", "arn:exec:r1#1")
    for item, worker in zip((first, second), workers, strict=True):
        jobs.claim("r1", job.job_id, item.range_id, worker, None)
    # When each records a page that neither splits nor ends its range
    for item, worker in zip((first, second), workers, strict=True):
        page = PageResult(
            job_id=job.job_id,
            rule_id="r1",
            plan=job.plan,
            range_id=item.range_id,
            sequence=1,
            prefix=item.prefix,
            counts=PageCounts(listed=10, copied=10, bytes_listed=100, bytes_copied=100),
            cursor=f"{item.prefix}k009",
            done=False,
            count_cursor=f"{item.prefix}k009",
            count_complete=False,
            counted=10,
            counted_bytes=100,
            elapsed_seconds=2.0,
        )
        jobs.record_page(page_record(page, worker, ranges_open=2, workers=2, at=T0))
    # Then the job item itself was not written (no transaction of a plain page contends for it: DynamoDB
    # cancels a transaction whose item another one is writing, TransactionConflict, see
    # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-conflict-handling)
    db = client("dynamodb", WEST)
    raw = db.get_item(TableName=TABLE, Key={"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_sk(job.job_id)}})
    assert raw["Item"]["pages"] == {"N": "0"}
    # And each worker slot has its own tally, which reading the job adds to its counts
    tallies = [
        db.get_item(TableName=TABLE, Key={"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_tally_sk(job.job_id, i)}})
        for i in (0, 1)
    ]
    assert [tally["Item"]["listed"] for tally in tallies] == [{"N": "10"}, {"N": "10"}]
    read = jobs.get("r1", job.job_id)
    assert (read.pages, read.totals.listed, read.totals.copied, read.counted, read.active_seconds) == (
        2,
        20,
        20,
        20,
        4.0,
    )
    assert jobs.latest("r1") == read


def test_a_range_is_deleted_with_its_final_page_so_the_range_query_reads_only_open_ones(
    jobs: DynamoBackfillJobs,
) -> None:
    # Given a job of three ranges, a worker holding the first
    job = BackfillJob.start(make_rule(), at=T0, workers=2)
    jobs.create(job)
    pieces = [KeyRange("a/"), KeyRange("b/"), KeyRange("c/")]
    jobs.add_ranges("r1", job.job_id, initial_ranges("r1", job.job_id, pieces))
    first = jobs.ranges("r1", job.job_id)[0]
    worker = "arn:exec:r1#0"
    jobs.claim("r1", job.job_id, first.range_id, worker, None)
    # When its final page is recorded, twice (a retried step)
    final = page_record(
        PageResult(
            job_id=job.job_id,
            rule_id="r1",
            plan=job.plan,
            range_id=first.range_id,
            sequence=1,
            prefix="a/",
            counts=PageCounts(listed=5, copied=5, bytes_listed=50, bytes_copied=50),
            cursor="a/k004",
            done=True,
            count_cursor="a/k004",
            count_complete=True,
            count_completed=True,
            counted=5,
            counted_bytes=50,
            elapsed_seconds=1.0,
        ),
        worker,
        ranges_open=3,
        workers=2,
        at=T0,
    )
    assert jobs.record_page(final) == jobs.record_page(final)
    # Then the range's item is gone, so the job's range Query reads (ScannedCount: before any
    # FilterExpression, https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.FilterExpression.html)
    # the two open ranges only
    db = client("dynamodb", WEST)
    range_key = {"pk": {"S": rule_pk("r1")}, "sk": {"S": backfill_range_sk(job.job_id, first.range_id)}}
    gone = db.get_item(TableName=TABLE, Key=range_key)
    assert "Item" not in gone
    query = db.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :ranges)",
        ExpressionAttributeValues={
            ":pk": {"S": rule_pk("r1")},
            ":ranges": {"S": backfill_ranges_prefix(job.job_id)},
        },
    )
    assert query["ScannedCount"] == 2
    assert first.range_id not in {item.range_id for item in jobs.ranges("r1", job.job_id, open_only=True)}
    # And the job counted the page once and closed the range (its counts stay with the job)
    stored = jobs.get("r1", job.job_id)
    assert (stored.pages, stored.totals.copied, stored.counted, stored.ranges_open) == (1, 5, 5, 2)


def test_a_job_stored_by_the_single_cursor_release_reads_as_a_legacy_job(jobs: DynamoBackfillJobs) -> None:
    # Given a job item written by the release before ranges (one cursor, no format)
    job = BackfillJob.start(make_rule(), at=T0)
    old = {
        "pk": rule_pk("r1"),
        "sk": backfill_sk(job.job_id),
        "job_id": job.job_id,
        "rule_id": "r1",
        "plan": job.plan,
        "status": "failed",
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "page_size": 1000,
        "count_pages": 4,
        "pages": 3,
        "cursor_prefix": 0,
        "cursor_after": "k2999",
        "done": False,
        "count_prefix": 0,
        "count_after": "k6999",
        "counted": 7000,
        "counted_bytes": 7000,
        "count_complete": False,
        "listed": 3000,
        "copied": 3000,
        "active_seconds": 30,
    }
    client("dynamodb", WEST).put_item(TableName=TABLE, Item={name: to_value(value) for name, value in old.items()})
    # When it is read, Then its counts show, it is unfinished, and it is marked legacy (never resumed)
    read = jobs.get("r1", job.job_id)
    assert (read.legacy, read.done, read.pages, read.totals.listed, read.counted) == (True, False, 3, 3000, 7000)
    assert read.progress().percent is None


def test_a_missing_table_is_a_state_store_error(aws: None) -> None:
    jobs = DynamoBackfillJobs(client("dynamodb", WEST), "no-such-table")
    with pytest.raises(StateStoreError, match="ResourceNotFoundException") as caught:
        jobs.latest("r1")
    assert caught.value.code == "ResourceNotFoundException"
    with pytest.raises(StateStoreError):
        jobs.create(BackfillJob.start(make_rule(), at=T0))
