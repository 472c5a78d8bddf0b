"""Rule prefixes with spaces and non-ASCII characters replicate on a local cloud whose notification
filters match the form-URL-encoded key, as S3's do (defect 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.snapshot import list_keys
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

STACK = "crr-filters"
SOURCE, DESTINATION = "filt-src", "filt-dst"


def test_prefixes_with_a_space_or_a_non_ascii_character_replicate(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    # Given a rule replicating the prefixes "my dir/" and "café/"
    cli.deploy_pairs(local_cloud, STACK, [(SOURCE, DESTINATION)])
    added = cli.run_crr(
        local_cloud, STACK, cli.WEST, "rules", "add", "--source", SOURCE, "--destination", DESTINATION,
        "--prefix", "my dir/", "--prefix", "café/",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    west, east = local_cloud.client("s3", cli.WEST), local_cloud.client("s3", cli.EAST)
    # When keys under both prefixes are written, and one under a prefix sharing their leading letters
    for key in ("my dir/a b.txt", "café/ü.txt", "my other/c.txt", "cafeteria.txt"):
        west.put_object(Bucket=SOURCE, Key=key, Body=key.encode())
    # Then the keys under the rule's prefixes are replicated
    eventually(
        lambda: list_keys(east, DESTINATION) == ["café/ü.txt", "my dir/a b.txt"], timeout=30, what="both replicas"
    )
    assert east.get_object(Bucket=DESTINATION, Key="café/ü.txt")["Body"].read() == "café/ü.txt".encode()
    # And the others are not, once the replication queue has drained
    stack = local_cloud.stacks[STACK]
    eventually(
        lambda: cli.queue_drained(local_cloud, cli.WEST, stack.outputs["ReplicationQueueUrl"]),
        what="the queue to drain",
    )
    assert list_keys(east, DESTINATION) == ["café/ü.txt", "my dir/a b.txt"]
