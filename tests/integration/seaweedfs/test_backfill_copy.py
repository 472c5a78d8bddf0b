"""The backfill's one-request copy on a real S3 server (SeaweedFS): what MetadataDirective=COPY carries,
and CopySourceIfMatch refusing a source overwritten since it was listed (moto ignores it)."""

from __future__ import annotations

from typing import Any

import pytest

from crr.adapters.backfill_s3 import S3FastCopier
from crr.adapters.clients import ClientFactory
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.backfill.engine import BackfillEngine
from crr.backfill.models import BackfillJob
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillSteps
from crr.errors import SourceChangedError
from crr.models import ListedObject
from crr.replication import Replicator
from crr.rules import ReplicationRule
from tests.support.backfill_runner import run_fanned_out
from tests.support.fakes import FakeBackfillJobs, FakeLedger, FakeProgress, FakeReplicationQueue, FakeRules
from tests.support.seaweedfs import T0, SeaweedFS, backfill_rule

pytestmark = pytest.mark.integration


@pytest.fixture
def rule(seaweedfs: SeaweedFS) -> ReplicationRule:
    return backfill_rule(seaweedfs, "bf")


def _entry(s3: Any, bucket: str, key: str) -> ListedObject:
    head = s3.head_object(Bucket=bucket, Key=key)
    return ListedObject(key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'))


def _tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_the_copy_carries_headers_metadata_and_tags_in_one_request(seaweedfs: SeaweedFS, rule: ReplicationRule) -> None:
    s3 = seaweedfs.client()
    s3.put_object(
        Bucket=rule.source_bucket,
        Key="docs/report.pdf",
        Body=b"%PDF-1.7 ...",
        ContentType="application/pdf",
        CacheControl="max-age=600",
        ContentDisposition='attachment; filename="report.pdf"',
        Metadata={"owner": "ana"},
        Tagging="team=finance&tier=gold",
    )
    S3FastCopier(ClientFactory(session=seaweedfs.session())).copy_listed(
        rule, _entry(s3, rule.source_bucket, "docs/report.pdf")
    )
    source = s3.head_object(Bucket=rule.source_bucket, Key="docs/report.pdf")
    replica = s3.head_object(Bucket=rule.destination_bucket, Key="docs/report.pdf")
    for header in ("ContentType", "CacheControl", "ContentDisposition", "Metadata", "ETag", "ContentLength"):
        assert replica.get(header) == source.get(header), header
    assert _tags(s3, rule.destination_bucket, "docs/report.pdf") == {"team": "finance", "tier": "gold"}


def test_a_source_overwritten_since_it_was_listed_is_refused(seaweedfs: SeaweedFS, rule: ReplicationRule) -> None:
    s3 = seaweedfs.client()
    s3.put_object(Bucket=rule.source_bucket, Key="docs/a", Body=b"listed version")
    listed = _entry(s3, rule.source_bucket, "docs/a")
    s3.put_object(Bucket=rule.source_bucket, Key="docs/a", Body=b"newer version")
    with pytest.raises(SourceChangedError, match="changed since it was listed"):
        S3FastCopier(ClientFactory(session=seaweedfs.session())).copy_listed(rule, listed)
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=rule.destination_bucket, Key="docs/a")


class OverwritingCopier(S3FastCopier):
    """Copies for real, but first overwrites ``key`` in the source: as a user writing after the listing
    and before the copy (whichever listing of the job saw the key: its page's, its count's or a probe)."""

    def __init__(self, clients: ClientFactory, s3: Any, key: str) -> None:
        super().__init__(clients)
        self._s3, self._key = s3, key

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        if entry.key == self._key:
            self._s3.put_object(Bucket=rule.source_bucket, Key=self._key, Body=b"written after the listing")
        return super().copy_listed(rule, entry)


def test_a_job_skips_what_is_there_and_leaves_a_later_write_to_the_live_path(
    seaweedfs: SeaweedFS, rule: ReplicationRule
) -> None:
    # Given objects under both prefixes and outside them, one already replicated
    s3 = seaweedfs.client()
    keys = [f"docs/{index:02d}" for index in range(12)] + [f"media/{index:02d}.mp4" for index in range(5)]
    for key in [*keys, "tmp/scratch"]:
        s3.put_object(Bucket=rule.source_bucket, Key=key, Body=key.encode(), Metadata={"k": key})
    s3.copy_object(
        Bucket=rule.destination_bucket, Key="docs/03", CopySource={"Bucket": rule.source_bucket, "Key": "docs/03"}
    )
    clients = ClientFactory(session=seaweedfs.session())
    ledger = FakeLedger()
    live = Replicator(FakeRules(rule), S3ObjectStore(clients), ledger, FakeProgress())
    # (a user overwrites docs/07 after it is listed, just before its copy)
    copier = OverwritingCopier(clients, s3, "docs/07")
    engine = BackfillEngine(S3Listing(clients), copier, ledger, reconciler(live), FakeReplicationQueue())
    jobs = FakeBackfillJobs(clock=lambda: T0)
    job = BackfillJob.start(rule, at=T0, page_size=5, count_pages=1, workers=2)
    jobs.create(job)
    # When the job runs with two workers
    with engine:
        final = run_fanned_out(BackfillSteps(engine, jobs, FakeRules(rule), clock=lambda: T0), job, workers=2)
    # Then the already replicated object was skipped, the overwritten one refused (superseded), the rest
    # copied with their metadata, and nothing outside the prefixes
    assert (final.totals.listed, final.totals.skipped, final.totals.superseded, final.totals.copied) == (17, 1, 1, 15)
    copied = {item["Key"] for item in s3.list_objects_v2(Bucket=rule.destination_bucket)["Contents"]}
    assert copied == set(keys) - {"docs/07"}
    assert s3.head_object(Bucket=rule.destination_bucket, Key="media/04.mp4")["Metadata"] == {"k": "media/04.mp4"}
