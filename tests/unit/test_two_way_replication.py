"""Two-way replication on in-memory fakes, case by case: what users do besides put and delete, and the
identical-bytes race that S3's ETag conditions cannot see (the property test explores the rest)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from crr.events import ChangeEvent, ChangeKind
from crr.replication import Outcome, Replicator
from crr.rules import PeerRule, ReplicationRule
from tests.support.fakes import FakeLedger, FakeNudges, FakeProgress, FakeRules, FakeS3, FakeTombstones, StoredVersion

WEST, EAST = "west-site", "east-site"
REGIONS = {WEST: "us-west-1", EAST: "us-east-1"}


def _rule(source: str, destination: str) -> ReplicationRule:
    return ReplicationRule.create(
        rule_id=source,
        source_bucket=source,
        source_region=REGIONS[source],
        destination_bucket=destination,
        destination_region=REGIONS[destination],
        peer=PeerRule(rule_id=destination, rules_table="table", queue_url="https://sqs.example/q"),
    )


class Pair:
    """Both directions of a pair over one FakeS3; ``apply(bucket, key)`` handles a notification from it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, tzinfo=UTC)
        # (requests to let pass, then what a user does): a user's change between two of crr's requests
        self.meanwhile: tuple[int, Callable[[], object]] | None = None
        self.s3 = FakeS3(self._yield, clock=self.clock)
        for bucket, region in REGIONS.items():
            self.s3.create_bucket(bucket, region, versioned=True)
        self.replicator = Replicator(
            FakeRules(_rule(WEST, EAST), _rule(EAST, WEST)),
            self.s3,
            FakeLedger(),
            FakeProgress(),
            clock=self.clock,
            tombstones=FakeTombstones(),
            nudges=FakeNudges(lambda bucket, key: None),
        )

    def clock(self) -> datetime:
        self.now += timedelta(milliseconds=1500)
        return self.now

    def _yield(self) -> None:
        if self.meanwhile is None:
            return
        count, change = self.meanwhile
        self.meanwhile = (count - 1, change) if count else None
        if not count:
            change()

    def apply(self, bucket: str, key: str, kind: ChangeKind = ChangeKind.CREATED) -> Outcome:
        event = ChangeEvent(bucket=bucket, key=key, kind=kind, event_name="ObjectCreated:Copy", event_time=self.now)
        return self.replicator.apply(event).outcome

    def held(self, bucket: str, key: str) -> StoredVersion:
        found = self.s3.current(bucket, key)
        assert found is not None, f"{bucket}/{key} is absent"
        return found


def test_a_users_copy_of_a_replica_goes_back_and_crrs_own_echo_does_not() -> None:
    # Given west's object replicated into east
    pair = Pair()
    pair.s3.put(WEST, "a", b"a", metadata={"owner": "ana"})
    assert pair.apply(WEST, "a") is Outcome.COPIED
    # When east's rule handles the notification of crr's own write, then of a user's copy of it
    echo = pair.apply(EAST, "a")
    pair.s3.copy_within(EAST, "a", "copy-of-a")
    copied = pair.apply(EAST, "copy-of-a")
    # Then the echo stops there, and the copy reaches west with the user's metadata
    assert (echo, copied) == (Outcome.REPLICA_OF_DESTINATION, Outcome.COPIED)
    assert pair.held(WEST, "copy-of-a").metadata["owner"] == "ana"


def test_identical_bytes_written_between_crrs_read_and_its_copy_are_not_buried() -> None:
    # Given an empty object in both sites, east's the later write
    pair = Pair()
    pair.s3.put(WEST, "e", b"", metadata={"mtime": "1"})
    pair.s3.put(EAST, "e", b"", metadata={"mtime": "2"})
    pair.apply(EAST, "e")
    assert pair.held(WEST, "e").metadata["mtime"] == "2"
    # When a user writes west again (an empty file: the same ETag) and west's rule reads both sides,
    # and then east's user writes another empty file after that read, before west's copy lands
    pair.s3.put(WEST, "e", b"", metadata={"mtime": "3"})
    # (HEAD west, HEAD east, then the user, then the copy)
    pair.meanwhile = (2, lambda: pair.s3.put(EAST, "e", b"", metadata={"mtime": "4"}))
    pair.apply(WEST, "e")
    pair.apply(EAST, "e")
    # Then east's last write is what both sites hold: west's copy, which passed If-Match on the equal
    # ETag, was taken back instead of burying it
    assert pair.held(EAST, "e").metadata["mtime"] == "4"
    assert pair.held(WEST, "e").metadata["mtime"] == "4"


def test_a_tag_change_reaches_the_other_site_and_its_echo_ends_there() -> None:
    # Given west's object replicated into east
    pair = Pair()
    pair.s3.put(WEST, "t", b"t")
    pair.apply(WEST, "t")
    # When a user tags east's copy, and both rules handle the tag notifications that follow
    pair.s3.set_tags(EAST, "t", {"stage": "prod"})
    first = pair.apply(EAST, "t", ChangeKind.METADATA)
    echo = pair.apply(WEST, "t", ChangeKind.METADATA)
    # Then west has the tags, without a copy, and crr's own tag write changes nothing more
    assert (first, echo) == (Outcome.ATTRIBUTES_UPDATED, Outcome.ATTRIBUTES_CURRENT)
    assert pair.held(WEST, "t").tags == {"stage": "prod"}
    assert pair.s3.calls["CopyObject"] == 1
