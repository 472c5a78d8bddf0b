"""The inventory-driven backfill on a real S3 server (SeaweedFS): a report written in S3 Inventory's
documented format (manifest.json, gzip CSV data files, URL-encoded keys, MD5 checksums) is read with
GetObject and its rows copied with CopySourceIfMatch pinned to the report's ETags (which moto ignores):
an object deleted after the report is not resurrected, one overwritten after it is not clobbered."""

from __future__ import annotations

from typing import Any

import pytest

from crr.adapters.backfill_s3 import S3FastCopier
from crr.adapters.clients import ClientFactory
from crr.adapters.inventory_s3 import S3InventoryFiles
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.backfill.engine import BackfillEngine
from crr.backfill.inventory_pages import InventoryPages
from crr.backfill.models import PageCounts
from crr.backfill.reconcile import reconciler
from crr.replication import Replicator
from crr.rules import ReplicationRule
from tests.support.fakes import FakeLedger, FakeProgress, FakeReplicationQueue, FakeRules
from tests.support.inventory import InventoryReport, InventoryRow, rows_in_files, run_inventory
from tests.support.seaweedfs import SeaweedFS, backfill_rule

pytestmark = pytest.mark.integration


@pytest.fixture
def rule(seaweedfs: SeaweedFS) -> ReplicationRule:
    return backfill_rule(seaweedfs, "inv", "inv-reports")


def _row(s3: Any, bucket: str, key: str) -> InventoryRow:
    head = s3.head_object(Bucket=bucket, Key=key)
    return InventoryRow(key, head["ContentLength"], head["ETag"].strip('"'), head["LastModified"])


def test_a_report_is_backfilled_and_changes_since_it_was_made_are_left_to_the_live_path(
    seaweedfs: SeaweedFS, rule: ReplicationRule
) -> None:
    # Given objects under the rule's prefixes (keys that need URL encoding among them) and one outside
    s3 = seaweedfs.client()
    keys = [f"docs/{index:03d} report+final.txt" for index in range(30)] + [
        f"media/clip-ü{index}.mp4" for index in range(9)
    ]
    for key in [*keys, "tmp/scratch"]:
        s3.put_object(Bucket=rule.source_bucket, Key=key, Body=key.encode(), Metadata={"k": "v"}, ContentType="text/x")
    # and an S3 Inventory report of them in 3 data files, in S3's key order
    rows = sorted((_row(s3, rule.source_bucket, key) for key in [*keys, "tmp/scratch"]), key=lambda r: r.key.encode())
    report_bucket = rule.source_bucket.replace("inv-src-", "inv-reports-")
    report = InventoryReport(rule.source_bucket, report_bucket, rows_in_files(rows, 3))
    manifest = report.write(lambda bucket, key, body: s3.put_object(Bucket=bucket, Key=key, Body=body))
    # and, after the report was made, one object deleted and one overwritten (whose new version the
    # live path replicated already)
    deleted, overwritten = "docs/004 report+final.txt", "media/clip-ü3.mp4"
    s3.delete_object(Bucket=rule.source_bucket, Key=deleted)
    s3.put_object(Bucket=rule.source_bucket, Key=overwritten, Body=b"newer")
    s3.put_object(Bucket=rule.destination_bucket, Key=overwritten, Body=b"newer")
    clients = ClientFactory(session=seaweedfs.session())
    ledger = FakeLedger()
    live = Replicator(FakeRules(rule), S3ObjectStore(clients), ledger, FakeProgress())
    listing = S3Listing(clients)
    engine = BackfillEngine(listing, S3FastCopier(clients), ledger, reconciler(live), FakeReplicationQueue())
    pages = InventoryPages(S3InventoryFiles(clients), listing, engine)
    # When the report is backfilled, 8 rows a page
    with engine:
        results = run_inventory(pages, rule, manifest, page_size=8)
    # Then every other object is copied with its metadata, the deleted one is not resurrected, the
    # overwritten one keeps its newer replica (both superseded), and nothing outside the prefixes came
    counts = PageCounts()
    for result in results:
        counts = counts.plus(result.counts)
    assert (counts.listed, counts.copied, counts.superseded) == (39, 37, 2)
    copied = {item["Key"] for item in s3.list_objects_v2(Bucket=rule.destination_bucket)["Contents"]}
    assert copied == set(keys) - {deleted}
    assert s3.get_object(Bucket=rule.destination_bucket, Key=overwritten)["Body"].read() == b"newer"
    replica = s3.head_object(Bucket=rule.destination_bucket, Key="docs/017 report+final.txt")
    assert (replica["Metadata"], replica["ContentType"]) == ({"k": "v"}, "text/x")
    # and the counts of its files agree with what the pages took, each file's MD5 checked
    opened = pages.open(rule, manifest)
    assert sum(pages.count(opened, data_file).objects for data_file in opened.manifest.files) == 39
