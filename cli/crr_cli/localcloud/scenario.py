"""What the demo, the benchmarks and the tests do on the local cloud before the interesting part:
make buckets as AWS makes them, and run the `crr` CLI in this process against the local cloud."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.main import main


def create_bucket(s3: Any, name: str, region: str, *, versioned: bool = False, acls: bool = False) -> None:
    """A bucket as AWS makes them today (ACLs disabled, i.e. BucketOwnerEnforced) unless ``acls``."""
    params: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**params)
    ownership = "BucketOwnerPreferred" if acls else "BucketOwnerEnforced"
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": ownership}]})
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


@contextmanager
def local_aws_environment(cloud: LocalCloud, region: str) -> Iterator[None]:
    """Point the standard AWS environment (so the CLI) at the local cloud, and restore it afterwards."""
    wanted = {**cloud.aws_environment(), "AWS_REGION": region}
    # A stale AWS_ENDPOINT_URL_<SERVICE> from the shell would override the local cloud's endpoints.
    removed = [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_") and name not in wanted]
    removed.append("AWS_PROFILE")
    saved = {name: os.environ.get(name) for name in (*wanted, *removed)}
    os.environ.update(wanted)
    for name in removed:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_cli(cloud: LocalCloud, stack: str, region: str, args: Sequence[str]) -> int:
    """`crr --stack STACK --region REGION ARGS...` in this process, against the local cloud; its exit code."""
    with local_aws_environment(cloud, region):
        return main(["--stack", stack, "--region", region, *args])


def deploy_two_way_stacks(
    cloud: LocalCloud, template: Path, stacks: Sequence[tuple[str, str, Mapping[str, str]]]
) -> list[DeployedStack]:
    """Deploy a stack per region for two-way sync as a user on AWS must: first each stack alone, then
    each again with the others' `RulesTableArn` / `ReplicationQueueArn` outputs as its
    `PeerRulesTableArns` / `PeerQueueArns` (IAM then lets it read their tombstones and nudge them).

    `stacks`: (stack name, region, parameters) per region. Returns the redeployed stacks, in order.
    """
    first = [cloud.deploy(template, name, region, parameters) for name, region, parameters in stacks]
    redeployed = []
    for index, (name, region, parameters) in enumerate(stacks):
        peers = [stack for other, stack in enumerate(first) if other != index]
        peered = {
            **parameters,
            "PeerRulesTableArns": ",".join(peer.outputs["RulesTableArn"] for peer in peers),
            "PeerQueueArns": ",".join(peer.outputs["ReplicationQueueArn"] for peer in peers),
        }
        redeployed.append(cloud.deploy(template, name, region, peered))
    return redeployed
