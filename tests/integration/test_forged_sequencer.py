"""A forged record cannot fence a key off, on the real path (issue 15.3): a message sent straight to the
replication queue with the highest sequencer there is, for a real key, and then real overwrites."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from tests.support import localcloud as cli
from tests.support.events import load_event

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
STACK = "crr-it-forged"
SOURCE, DESTINATION = "it-src-forged", "it-dst-forged"
KEY = "hostile/fenced.txt"


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    deployed = cli.deploy_pairs(local_cloud, STACK, [(SOURCE, DESTINATION)])
    cli.add_rule(local_cloud, STACK, SOURCE, DESTINATION)
    return deployed


def _replica(cloud: LocalCloud) -> bytes | None:
    s3 = cloud.client("s3", EAST)
    try:
        return bytes(s3.get_object(Bucket=DESTINATION, Key=KEY)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def test_a_forged_highest_sequencer_does_not_keep_later_overwrites_from_the_replica(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a replicated key
    west = local_cloud.client("s3", WEST)
    written = west.put_object(Bucket=SOURCE, Key=KEY, Body=b"v1")
    eventually(lambda: _replica(local_cloud) == b"v1", 30, "the first replica")
    # And a forged record for it, sent straight to the replication queue, naming the current version
    # and the highest sequencer there is
    forged = load_event("bad/forged-highest-sequencer")
    record = forged["Records"][0]
    record["s3"]["bucket"]["name"] = SOURCE
    record["s3"]["object"].update(versionId=written["VersionId"], eTag=written["ETag"].strip('"'))
    queue = stack.outputs["ReplicationQueueUrl"]
    local_cloud.client("sqs", WEST).send_message(QueueUrl=queue, MessageBody=json.dumps(forged))
    eventually(lambda: cli.queue_drained(local_cloud, WEST, queue), 30, "the forged record to be handled")
    # When the user overwrites the key twice
    west.put_object(Bucket=SOURCE, Key=KEY, Body=b"v2")
    west.put_object(Bucket=SOURCE, Key=KEY, Body=b"v3")
    # Then the replica follows: the real records, with lower sequencers, are not judged stale
    eventually(lambda: _replica(local_cloud) == b"v3", 30, "the last overwrite in the replica")
