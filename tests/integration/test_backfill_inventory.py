"""The inventory-driven backfill end to end on the local cloud: a report written in S3 Inventory's
documented format (manifest.json and gzip CSV data files, see tests/support/inventory.py) into a bucket
the stack may read (its InventoryBucket parameter: the BackfillFunction runs under its own role, and IAM
is enforced), then `crr backfill start RULE --inventory s3://.../manifest.json` run by the real
workflow, its data files fanned out over the workers of the state machine's Map."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket
from crr_cli.snapshot import compare, list_keys, snapshot
from tests.support import localcloud as cli
from tests.support.inventory import InventoryReport, InventoryRow, rows_in_files

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-inventory"
SOURCE, DESTINATION, REPORTS = "inv-src", "inv-dst", "inv-reports"


def test_a_backfill_from_an_inventory_report_copies_what_it_lists_and_leaves_later_changes_to_the_live_path(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    # Given the stack, allowed to read reports in the report bucket
    cli.deploy_pairs(local_cloud, STACK, [(SOURCE, DESTINATION)], InventoryBucket=REPORTS)
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    create_bucket(west, REPORTS, WEST)
    # and 45 objects written before the rule (keys that need URL encoding among them), 5 outside its prefix
    keys = [f"docs/{index:02d} a+b ü.txt" for index in range(40)]
    for key in [*keys, *(f"tmp/{index}" for index in range(5))]:
        west.put_object(Bucket=SOURCE, Key=key, Body=key.encode(), ContentType="text/plain", Metadata={"k": "v"})
    added = run(local_cloud, "rules", "add", "--source", SOURCE, "--destination", DESTINATION, "--id", "inv",
                "--prefix", "docs/")  # fmt: skip
    assert added.returncode == 0, added.stderr
    # and a report of the bucket made after the rule, in 4 data files
    rows = []
    for key in sorted([*keys, *(f"tmp/{index}" for index in range(5))], key=str.encode):
        head = west.head_object(Bucket=SOURCE, Key=key)
        rows.append(InventoryRow(key, head["ContentLength"], head["ETag"].strip('"'), head["LastModified"]))
    report = InventoryReport(SOURCE, REPORTS, rows_in_files(rows, 4), created_at=datetime.now(UTC))
    manifest = report.write(lambda bucket, key, body: west.put_object(Bucket=bucket, Key=key, Body=body))
    # and, after the report was made, one object deleted and one overwritten (the live path replicates both)
    deleted, overwritten = keys[7], keys[30]
    west.delete_object(Bucket=SOURCE, Key=deleted)
    west.put_object(Bucket=SOURCE, Key=overwritten, Body=b"newer, written live")
    eventually(
        lambda: (
            east.get_object(Bucket=DESTINATION, Key=overwritten)["Body"].read() == b"newer, written live"
            if overwritten in list_keys(east, DESTINATION)
            else None
        ),
        timeout=30,
        what="the live path to replicate the overwrite",
    )
    # When the rule's backfill runs from the report, 2 data files at once, followed to the end
    done = run(local_cloud, "backfill", "start", "inv", "--inventory", manifest, "--ranges", "2", "--page-size", "5",
               "--wait")  # fmt: skip
    # Then it succeeded, and the destination equals the source under the prefix: every reported object
    # copied with its metadata, the deleted one not resurrected, the overwritten one not clobbered
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100.0%" in done.stdout
    difference = compare(snapshot(west, SOURCE, prefix="docs/"), snapshot(east, DESTINATION, prefix="docs/"))
    assert difference.equal, difference
    assert deleted not in list_keys(east, DESTINATION)
    assert list_keys(east, DESTINATION, prefix="tmp/") == []
    # And the job took each data file as a work item, counted the 40 objects it lists under the prefix,
    # and left the two changed since the report to the live path (superseded)
    shown = run(local_cloud, "backfill", "status", "inv", "--json", "--ranges")
    job = json.loads(shown.stdout)
    assert (job["status"], job["inventory"], job["ranges_made"], job["counted"]) == ("succeeded", manifest, 4, 40)
    assert (job["totals"]["listed"], job["totals"]["copied"], job["totals"]["superseded"]) == (40, 38, 2)
    assert job["ranges"] == []  # each data file read to its end is gone from the store, as a done range is


def run(cloud: LocalCloud, *args: str) -> Any:
    return cli.run_crr(cloud, STACK, WEST, *args)
