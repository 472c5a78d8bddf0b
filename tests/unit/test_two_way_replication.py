"""Two-way replication on in-memory fakes, case by case: what users do besides put and delete, the
identical-bytes race that S3's ETag conditions cannot see, and the delete races the two-way bench found
(a delete buried under a copy another copy covered; a delete made while crr's own one is pending). The
property test explores the rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from crr.events import ChangeEvent, ChangeKind
from crr.replication import Outcome, Replicator
from tests.support.fakes import (
    FakeLedger,
    FakePeerNudges,
    FakeProgress,
    FakeRules,
    FakeS3,
    FakeTombstones,
    StoredVersion,
)
from tests.support.rules import two_way_rules

WEST, EAST = "west-site", "east-site"
REGIONS = {WEST: "us-west-1", EAST: "us-east-1"}


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
            FakeRules(*two_way_rules((WEST, REGIONS[WEST]), (EAST, REGIONS[EAST]))),
            self.s3,
            FakeLedger(),
            FakeProgress(),
            clock=self.clock,
            tombstones=FakeTombstones(),
            nudges=FakePeerNudges(lambda bucket, key: None),
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


# Requests of the first copy's worker to let pass after its copy's write before the second copy lands:
# none (before its check lists the key's versions), or one (after the listing, before it removes its copy).
@pytest.mark.parametrize("check_requests", [0, 1], ids=["before-the-check", "during-the-check"])
def test_a_users_delete_buried_under_crrs_copy_wins_even_after_another_copy_covered_that_copy(
    check_requests: int,
) -> None:
    # Given east's older write, which east's rule reads with west's key never written
    pair = Pair()
    pair.s3.put(EAST, "k", b"older")

    def overtake() -> None:
        # (a second worker copies east's newer write over crr's first copy, having compared against it)
        assert pair.apply(EAST, "k") is Outcome.COPIED

    def users_write_then_delete() -> None:
        pair.s3.put(EAST, "k", b"newer")
        pair.s3.remove(WEST, "k")
        pair.meanwhile = (1 + check_requests, overtake)

    # When east's user writes again and then west's user deletes the key, both after that read and
    # before the copy lands (which If-None-Match lets land on the delete marker), and a second copy
    # covers the first before that first copy's check is done,
    # (HEAD east, HEAD west, list west, then the users, then the copy's write, then the check)
    pair.meanwhile = (3, users_write_then_delete)
    pair.apply(EAST, "k")
    # and both rules handle the notifications that follow
    pair.apply(WEST, "k", ChangeKind.REMOVED)
    pair.apply(EAST, "k")
    # Then west's delete, the last change, holds on both sides: neither copy buries it
    assert pair.s3.current(WEST, "k") is None, f"west holds {pair.s3.current(WEST, 'k')}"
    assert pair.s3.current(EAST, "k") is None, f"east holds {pair.s3.current(EAST, 'k')}"


def test_a_copy_covering_a_buried_delete_stays_when_it_holds_the_later_change() -> None:
    # Given east's older write, which east's rule reads with west's key never written
    pair = Pair()
    pair.s3.put(EAST, "k", b"older")

    def overtake() -> None:
        assert pair.apply(EAST, "k") is Outcome.COPIED

    def users_delete_then_write() -> None:
        pair.s3.remove(WEST, "k")
        pair.s3.put(EAST, "k", b"newer")
        pair.meanwhile = (1, overtake)

    # When west's user deletes the key and then east's user writes again, both before the copy lands
    # on the delete marker, and a second worker copies east's newer write over it before its check,
    pair.meanwhile = (3, users_delete_then_write)
    pair.apply(EAST, "k")
    pair.apply(WEST, "k", ChangeKind.REMOVED)
    pair.apply(EAST, "k")
    # Then east's write, the later change, holds on both sides, and crr deleted nothing to find that out
    assert (pair.held(WEST, "k").body, pair.held(EAST, "k").body) == (b"newer", b"newer")
    assert "DeleteObject" not in pair.s3.calls


def test_a_users_delete_made_while_crr_intends_a_delete_is_not_taken_for_crrs() -> None:
    # Given west's write replicated into east, and then deleted in east
    pair = Pair()
    pair.s3.put(WEST, "k", b"west")
    pair.apply(WEST, "k")
    pair.s3.remove(EAST, "k")

    def users_and_a_second_worker() -> None:
        # (crr has recorded its intent to delete west's version, and not deleted it yet)
        pair.s3.put(EAST, "k", b"east")
        pair.s3.put(WEST, "k", b"west again")
        pair.s3.remove(WEST, "k")
        pair.apply(EAST, "k")

    # When east's rule sets out to delete west's version, and before its delete, east's user writes
    # again, west's user writes and then deletes, and a second worker compares both sides,
    # (HEAD east, list east, HEAD west, then the users and the second worker, then the delete)
    pair.meanwhile = (3, users_and_a_second_worker)
    pair.apply(EAST, "k", ChangeKind.REMOVED)
    # and both rules handle the notifications that follow
    pair.apply(WEST, "k", ChangeKind.REMOVED)
    pair.apply(EAST, "k")
    # Then west's delete, the last change, holds on both sides: the second worker did not take it for
    # the delete crr intended (whose version it does not cover) and copy east's write over it
    assert pair.s3.current(WEST, "k") is None, f"west holds {pair.s3.current(WEST, 'k')}"
    assert pair.s3.current(EAST, "k") is None, f"east holds {pair.s3.current(EAST, 'k')}"
