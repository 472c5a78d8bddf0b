"""Two-way sync on the local cloud: one stack per region, each hosting one direction of the pair, the
pair added with one CLI call, and users writing on both sides (the same key at the same time too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.localcloud.scenario import create_bucket, deploy_two_way_stacks
from tests.support import localcloud as cli
from tests.support.localcloud import EAST, TEMPLATE, WEST

pytestmark = pytest.mark.integration

WEST_BUCKET, EAST_BUCKET = "tw-west-site", "tw-east-site"
WEST_STACK, EAST_STACK = "crr-tw-west", "crr-tw-east"


@pytest.fixture(scope="module")
def stacks(local_cloud: LocalCloud) -> tuple[DeployedStack, DeployedStack]:
    """A stack in each region, each replicating its own bucket into the other's, with versioned buckets;
    each deployed with the other's ARNs as its peers, as on AWS (IAM is enforced)."""
    timeout = {"FunctionTimeoutSeconds": "30"}
    west, east = deploy_two_way_stacks(
        local_cloud,
        TEMPLATE,
        [
            (WEST_STACK, WEST, {"SourceBuckets": WEST_BUCKET, "DestinationBuckets": EAST_BUCKET, **timeout}),
            (EAST_STACK, EAST, {"SourceBuckets": EAST_BUCKET, "DestinationBuckets": WEST_BUCKET, **timeout}),
        ],
    )
    for region, source in ((WEST, WEST_BUCKET), (EAST, EAST_BUCKET)):
        create_bucket(local_cloud.client("s3", region), source, region, versioned=True)
    return west, east


def _current(cloud: LocalCloud, bucket: str, region: str, key: str) -> bytes | None:
    s3 = cloud.client("s3", region)
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _both_hold(cloud: LocalCloud, key: str, body: bytes | None) -> bool:
    return _current(cloud, WEST_BUCKET, WEST, key) == body and _current(cloud, EAST_BUCKET, EAST, key) == body


def _settled(cloud: LocalCloud, stacks: tuple[DeployedStack, DeployedStack]) -> bool:
    west, east = stacks
    return cli.queue_drained(cloud, WEST, west.outputs["ReplicationQueueUrl"]) and cli.queue_drained(
        cloud, EAST, east.outputs["ReplicationQueueUrl"]
    )


def test_a_two_way_pair_syncs_both_sides_converges_on_a_race_and_never_ping_pongs(
    local_cloud: LocalCloud, stacks: tuple[DeployedStack, DeployedStack], eventually: Callable[..., Any]
) -> None:
    # Given a two-way pair added with one CLI call against the west stack, naming the east stack
    added = cli.run_crr(
        local_cloud, WEST_STACK, WEST, "rules", "add", "--source", WEST_BUCKET, "--destination", EAST_BUCKET,
        "--two-way", EAST_STACK, "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    west_s3, east_s3 = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    listed = cli.run_crr(local_cloud, EAST_STACK, EAST, "rules", "show", EAST_BUCKET, "--json")
    assert f'"rule_id": "{WEST_BUCKET}"' in listed.stdout, "the reverse rule names its peer"

    # When users write on each side
    west_s3.put_object(Bucket=WEST_BUCKET, Key="from-west.txt", Body=b"west wrote this")
    east_s3.put_object(Bucket=EAST_BUCKET, Key="from-east.txt", Body=b"east wrote this")
    # Then each write reaches the other side
    eventually(lambda: _both_hold(local_cloud, "from-west.txt", b"west wrote this"), 20, "west's write in east")
    eventually(lambda: _both_hold(local_cloud, "from-east.txt", b"east wrote this"), 20, "east's write in west")

    # When both sides write the same key at once, and one side deletes another key the other wrote
    west_s3.put_object(Bucket=WEST_BUCKET, Key="race.txt", Body=b"west's version")
    east_s3.put_object(Bucket=EAST_BUCKET, Key="race.txt", Body=b"east's version")
    west_s3.delete_object(Bucket=WEST_BUCKET, Key="from-east.txt")
    eventually(lambda: _settled(local_cloud, stacks), 30, "both queues to drain")

    # Then both sides hold the same version of the raced key, and the delete reached the other side
    west_race = _current(local_cloud, WEST_BUCKET, WEST, "race.txt")
    assert west_race in {b"west's version", b"east's version"}
    eventually(lambda: _both_hold(local_cloud, "race.txt", west_race), 20, "both sides to agree on race.txt")
    eventually(lambda: _both_hold(local_cloud, "from-east.txt", None), 20, "the delete to reach east")
    # And no write was sent back and forth: each key holds at most its user writes plus one replica
    for bucket, s3 in ((WEST_BUCKET, west_s3), (EAST_BUCKET, east_s3)):
        versions = s3.list_object_versions(Bucket=bucket, Prefix="from-")
        assert len(versions.get("Versions", [])) == 2, f"{bucket}: one user write and one replica per key"
    # And nothing failed on the way
    for stack, region in zip(stacks, (WEST, EAST), strict=True):
        dead = local_cloud.client("sqs", region).get_queue_attributes(
            QueueUrl=stack.outputs["ReplicationDLQUrl"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        assert dead == "0", f"{stack.stack_name}: {dead} dead-lettered record(s)"
