"""Functions that no other integration test runs, invoked on the local cloud under their own execution
roles (IAM is enforced): a permission missing from template.yaml fails here with AccessDenied."""

from __future__ import annotations

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from tests.support import localcloud as cli
from tests.support.events import load_body, load_event

pytestmark = pytest.mark.integration

STACK = "crr-roles"
SOURCE, DESTINATION = "roles-src", "roles-dst"


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    """The real template, with no poller: dead letters stay where the test puts them."""
    return local_cloud.deploy(
        cli.TEMPLATE, STACK, cli.WEST, {"SourceBuckets": SOURCE, "DestinationBuckets": DESTINATION}, event_sources=False
    )


def test_the_replay_function_moves_dead_letters_back_under_its_own_role(
    local_cloud: LocalCloud, stack: DeployedStack
) -> None:
    sqs = local_cloud.client("sqs", cli.WEST)
    queue, dead_letters = stack.outputs["ReplicationQueueUrl"], stack.outputs["ReplicationDLQUrl"]
    # Given a notification waiting in the dead-letter queue
    sqs.send_message(QueueUrl=dead_letters, MessageBody=load_body("s3/object-created-put"))

    # When the ReplayFunction replays everything
    replayed = local_cloud.invoke(stack.function("ReplayFunction").name, load_event("replay/replay-all"))

    # Then it ran under its role without a denial, and the notification is back on the replication queue
    assert replayed.ok, replayed.error
    assert (replayed.payload["examined"], replayed.payload["replayed"]) == (1, 1)
    [message] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    assert message["Body"] == load_body("s3/object-created-put")
    assert "Messages" not in sqs.receive_message(QueueUrl=dead_letters)
