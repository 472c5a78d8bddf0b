"""Two-way sync on the local cloud: one stack per region, each hosting one direction of the pair, the
pair added with one CLI call, and users writing on both sides (the same key at the same time too)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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


@pytest.fixture(scope="module")
def pair(local_cloud: LocalCloud, stacks: tuple[DeployedStack, DeployedStack]) -> subprocess.CompletedProcess[str]:
    """The two-way pair, added with one CLI call against the west stack, naming the east stack."""
    return cli.run_crr(
        local_cloud, WEST_STACK, WEST, "rules", "add", "--source", WEST_BUCKET, "--destination", EAST_BUCKET,
        "--two-way", EAST_STACK, "--json",
    )  # fmt: skip


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
    local_cloud: LocalCloud,
    stacks: tuple[DeployedStack, DeployedStack],
    pair: subprocess.CompletedProcess[str],
    eventually: Callable[..., Any],
) -> None:
    # Given a two-way pair added with one CLI call against the west stack, naming the east stack
    assert pair.returncode == 0, pair.stderr
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


def _head(cloud: LocalCloud, bucket: str, region: str, key: str) -> dict[str, Any] | None:
    s3 = cloud.client("s3", region)
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except s3.exceptions.ClientError:
        return None


def _user_view(cloud: LocalCloud, bucket: str, region: str, key: str) -> tuple[Any, ...] | None:
    """What a user sees of a key: bytes, Content-Type, user metadata (crr's marker aside) and tags."""
    found = _head(cloud, bucket, region, key)
    if found is None:
        return None
    tags = cloud.client("s3", region).get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    metadata = {name: value for name, value in found["Metadata"].items() if not name.startswith("crr-")}
    return (
        _current(cloud, bucket, region, key),
        found.get("ContentType"),
        metadata,
        sorted((tag["Key"], tag["Value"]) for tag in tags),
    )


def _sites_agree(cloud: LocalCloud, key: str, expected: tuple[Any, ...] | None) -> bool:
    west, east = _user_view(cloud, WEST_BUCKET, WEST, key), _user_view(cloud, EAST_BUCKET, EAST, key)
    return west == east == expected


def test_a_users_copy_move_and_metadata_only_copy_of_a_replica_reach_the_other_site(
    local_cloud: LocalCloud,
    stacks: tuple[DeployedStack, DeployedStack],
    pair: subprocess.CompletedProcess[str],
    eventually: Callable[..., Any],
) -> None:
    # Given objects written in west and replicated into east (so east's copies carry crr's marker)
    assert pair.returncode == 0, pair.stderr
    west_s3, east_s3 = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    for key in ("uc/a", "uc/b", "uc/c"):
        west_s3.put_object(Bucket=WEST_BUCKET, Key=key, Body=key.encode(), Metadata={"owner": "ana"})
    eventually(lambda: all(_head(local_cloud, EAST_BUCKET, EAST, k) for k in ("uc/a", "uc/b", "uc/c")), 20,
               "the replicas in east")  # fmt: skip
    eventually(lambda: _settled(local_cloud, stacks), 30, "both queues to drain")
    # (Last writer wins by whole seconds, ties to west: the user's changes below come a second later.)
    written = max(west_s3.head_object(Bucket=WEST_BUCKET, Key=k)["LastModified"] for k in ("uc/a", "uc/b", "uc/c"))
    eventually(lambda: datetime.now(UTC) >= written + timedelta(seconds=1), 5, "the next second")

    # When a user in east copies one (aws s3 cp), moves another (aws s3 mv: copy, then delete), and
    #      sets metadata on the third in place (rclone touch: a copy onto itself keeping the metadata)
    east_s3.copy_object(Bucket=EAST_BUCKET, Key="uc/copy-of-a", CopySource={"Bucket": EAST_BUCKET, "Key": "uc/a"})
    east_s3.copy_object(Bucket=EAST_BUCKET, Key="uc/moved-b", CopySource={"Bucket": EAST_BUCKET, "Key": "uc/b"})
    east_s3.delete_object(Bucket=EAST_BUCKET, Key="uc/b")
    touched = _head(local_cloud, EAST_BUCKET, EAST, "uc/c")
    assert touched is not None
    east_s3.copy_object(
        Bucket=EAST_BUCKET, Key="uc/c", CopySource={"Bucket": EAST_BUCKET, "Key": "uc/c"},
        MetadataDirective="REPLACE", Metadata={**touched["Metadata"], "mtime": "1764590000.5"},
    )  # fmt: skip

    # Then west gets the copy, the moved object (and loses the old key), and the new metadata
    copied: tuple[Any, ...] = (b"uc/a", "binary/octet-stream", {"owner": "ana"}, [])
    eventually(lambda: _sites_agree(local_cloud, "uc/copy-of-a", copied), 30, "the copy in west")
    moved: tuple[Any, ...] = (b"uc/b", "binary/octet-stream", {"owner": "ana"}, [])
    eventually(lambda: _sites_agree(local_cloud, "uc/moved-b", moved), 30, "the moved object in west")
    eventually(lambda: _sites_agree(local_cloud, "uc/b", None), 30, "the move's delete in west")
    touched_view: tuple[Any, ...] = (b"uc/c", "binary/octet-stream", {"owner": "ana", "mtime": "1764590000.5"}, [])
    eventually(lambda: _sites_agree(local_cloud, "uc/c", touched_view), 30, "the touched metadata in west")
    # And crr verify, comparing metadata and tags too, finds both directions equal
    eventually(lambda: _settled(local_cloud, stacks), 30, "both queues to drain")
    for stack, region, bucket in ((WEST_STACK, WEST, WEST_BUCKET), (EAST_STACK, EAST, EAST_BUCKET)):
        verified = cli.run_crr(local_cloud, stack, region, "verify", bucket, "--attributes", "all", "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_equal_bytes_with_different_metadata_on_both_sites_converge_and_tags_follow(
    local_cloud: LocalCloud,
    stacks: tuple[DeployedStack, DeployedStack],
    pair: subprocess.CompletedProcess[str],
    eventually: Callable[..., Any],
) -> None:
    # Given an empty object written on both sites, each with its own mtime metadata (as rclone does)
    assert pair.returncode == 0, pair.stderr
    west_s3, east_s3 = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    west_s3.put_object(Bucket=WEST_BUCKET, Key="zero/empty", Body=b"", Metadata={"mtime": "1.0"})
    east_s3.put_object(Bucket=EAST_BUCKET, Key="zero/empty", Body=b"", Metadata={"mtime": "2.0"})
    eventually(lambda: _settled(local_cloud, stacks), 30, "both queues to drain")
    # When a user on one site then tags it
    east_s3.put_object_tagging(
        Bucket=EAST_BUCKET, Key="zero/empty", Tagging={"TagSet": [{"Key": "stage", "Value": "prod"}]}
    )

    # Then both sites end with the same bytes, metadata and tags
    def agreed() -> bool:
        west = _user_view(local_cloud, WEST_BUCKET, WEST, "zero/empty")
        return west is not None and west[3] == [("stage", "prod")] and _sites_agree(local_cloud, "zero/empty", west)

    eventually(agreed, 30, "both sites to hold the same metadata and tags")
    view = _user_view(local_cloud, WEST_BUCKET, WEST, "zero/empty")
    assert view is not None
    assert view[2] in ({"mtime": "1.0"}, {"mtime": "2.0"})
