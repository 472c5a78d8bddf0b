"""Replicator behaviour over in-memory fakes: one path per test, Given / When / Then."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from crr.errors import BucketMissingError, ReplicaKeyMissingError
from crr.events import ChangeEvent, ChangeKind
from crr.failures import classify
from crr.models import AclGrants, ObjectState
from crr.replication import Outcome, Replicator
from crr.rules import ReplicationRule, RuleStatus
from tests.support.fakes import FakeLedger, FakeProgress, FakeRules, FakeS3, StoredVersion
from tests.support.interleave import Interleaver, Script
from tests.support.rules import make_rule

SRC, DST = "src-bucket", "dst-bucket"


def change(
    key: str,
    sequencer: str | None = "0A",
    kind: ChangeKind = ChangeKind.CREATED,
    *,
    bucket: str = SRC,
    version_id: str | None = None,
    etag: str | None = None,
) -> ChangeEvent:
    return ChangeEvent(
        bucket=bucket,
        key=key,
        kind=kind,
        event_name="ObjectCreated:Put",
        event_time=datetime(2026, 11, 25, tzinfo=UTC),
        sequencer=sequencer,
        version_id=version_id,
        etag=etag,
    )


def held(s3: FakeS3, bucket: str, key: str) -> StoredVersion:
    found = s3.current(bucket, key)
    assert found is not None, f"{bucket}/{key} is absent"
    return found


class World:
    def __init__(
        self,
        rule: ReplicationRule | None = None,
        *,
        versioned: bool = False,
        acls: bool = False,
        yield_point: object = None,
    ) -> None:
        hook = yield_point if callable(yield_point) else (lambda: None)
        self.now = datetime(2026, 11, 25, tzinfo=UTC)
        self.s3 = FakeS3(hook, clock=self.s3_clock)
        self.s3.create_bucket(SRC, "us-west-1", versioned=versioned, acls=acls)
        self.s3.create_bucket(DST, "us-east-1", versioned=versioned, acls=acls)
        self.ledger = FakeLedger(hook)
        self.progress = FakeProgress()
        self.rules = FakeRules(rule or make_rule())

    def s3_clock(self) -> datetime:
        """S3's clock and the replicator's: 10 ms pass with every write."""
        self.now += timedelta(milliseconds=10)
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by

    def replicator(self) -> Replicator:
        return Replicator(self.rules, self.s3, self.ledger, self.progress, clock=self.s3_clock)


def test_a_new_object_is_copied_with_its_headers_metadata_and_tags_and_marked_as_replica() -> None:
    # Given an object with metadata, tags and a content type in the source
    world = World()
    world.s3.put(
        SRC, "docs/a b+c.txt", b"hello", metadata={"owner": "ana"}, tags={"team": "x"}, content_type="text/plain"
    )
    # When its creation is applied
    result = world.replicator().apply(change("docs/a b+c.txt"))
    # Then the replica holds the same bytes, metadata, tags and content type, plus the replica marker
    replica = world.s3.current(DST, "docs/a b+c.txt")
    assert result.outcome is Outcome.COPIED
    assert result.bytes_copied == 5
    assert replica is not None
    assert replica.body == b"hello"
    assert replica.tags == {"team": "x"}
    assert replica.content_type == "text/plain"
    assert replica.metadata["owner"] == "ana"
    assert replica.metadata["crr-origin-bucket"] == SRC


def test_a_copy_costs_one_head_and_one_copy_and_one_ledger_write() -> None:
    # Given a source object
    world = World()
    world.s3.put(SRC, "k", b"x")
    # When it is replicated
    world.replicator().apply(change("k"))
    # Then exactly two S3 requests and one ledger write were made
    assert world.s3.calls == {"HeadObject": 1, "CopyObject": 1}
    assert world.ledger.writes == 1


def test_a_duplicate_costs_no_s3_request_and_an_older_notification_one_head() -> None:
    # Given a change already applied
    world = World()
    world.s3.put(SRC, "k", b"x")
    replicator = world.replicator()
    replicator.apply(change("k", "0B"))
    calls_before = dict(world.s3.calls)
    # When the same notification arrives again, and then an older one
    duplicate = replicator.apply(change("k", "0B"))
    stale = replicator.apply(change("k", "0000A"))
    # Then both are skipped; the older one after one HEAD shows the source still holds what was applied
    assert (duplicate.outcome, stale.outcome) == (Outcome.DUPLICATE, Outcome.STALE)
    assert world.s3.calls == {**calls_before, "HeadObject": calls_before["HeadObject"] + 1}


def test_a_forged_highest_sequencer_does_not_fence_later_real_overwrites() -> None:
    # Given a replicated key, and a forged record for it carrying the highest sequencer there is
    world = World(versioned=True)
    first = world.s3.put(SRC, "k", b"v1")
    replicator = world.replicator()
    replicator.apply(change("k", "0A0000000000000001", version_id=first.version_id))
    replicator.apply(change("k", "FFFFFFFFFFFFFFFFFF", version_id="forged-version"))
    # When the user overwrites the key twice, each notification with its real (lower) sequencer
    outcomes = []
    for number, body in enumerate((b"v2", b"v3"), start=2):
        written = world.s3.put(SRC, "k", body)
        outcomes.append(
            replicator.apply(change("k", f"0A000000000000000{number}", version_id=written.version_id)).outcome
        )
    # Then both overwrites reach the replica, and the forged sequencer was never recorded
    assert outcomes == [Outcome.COPIED, Outcome.COPIED]
    assert held(world.s3, DST, "k").body == b"v3"
    assert world.ledger.entries[("r1", "k")].sequencer == "0A0000000000000003"


def test_a_forged_sequencer_naming_the_current_version_is_replaced_by_the_next_real_change() -> None:
    # Given a forged record that names the key's real current state (so the source confirms it)
    world = World()
    world.s3.put(SRC, "k", b"v1")
    replicator = world.replicator()
    replicator.apply(change("k", "FFFFFFFFFFFFFFFFFF"))
    assert world.ledger.entries[("r1", "k")].sequencer == "FFFFFFFFFFFFFFFFFF"
    # When the user overwrites the key, and later its notification is delivered twice
    world.s3.put(SRC, "k", b"v2")
    first = replicator.apply(change("k", "0A"))
    again = replicator.apply(change("k", "0A"))
    # Then the overwrite is copied, its real sequencer replaces the forged one, and the repeat is a duplicate
    assert (first.outcome, again.outcome) == (Outcome.COPIED, Outcome.DUPLICATE)
    assert held(world.s3, DST, "k").body == b"v2"


def test_a_tag_change_sets_the_replicas_tags_in_place_without_copying_the_bytes() -> None:
    # Given a replicated object whose tags the user then changes
    world = World(versioned=True)
    world.s3.put(SRC, "k", b"x", tags={"team": "a"})
    replicator = world.replicator()
    replicator.apply(change("k", "0A"))
    world.s3.set_tags(SRC, "k", {"team": "b", "stage": "prod"})
    world.s3.calls.clear()
    # When the tag change arrives, with a sequencer far above the object's (tag events have their own)
    result = replicator.apply(change("k", "FFFFFF", ChangeKind.METADATA))
    # Then the replica has the new tags, no bytes were copied, and the ledger's sequencer is untouched
    assert result.outcome is Outcome.ATTRIBUTES_UPDATED
    assert held(world.s3, DST, "k").tags == {"team": "b", "stage": "prod"}
    assert "CopyObject" not in world.s3.calls
    assert world.ledger.entries[("r1", "k")].sequencer == "0A"
    # And a later overwrite with a lower sequencer than the tag event's is still replicated
    world.s3.put(SRC, "k", b"y")
    assert replicator.apply(change("k", "0B")).outcome is Outcome.COPIED


def test_a_tag_change_with_an_old_sequencer_is_not_judged_stale() -> None:
    # Given a replicated object, then a tag change whose sequencer is below the object's
    world = World()
    world.s3.put(SRC, "k", b"x")
    replicator = world.replicator()
    replicator.apply(change("k", "0B"))
    world.s3.set_tags(SRC, "k", {"team": "b"})
    # When the tag change arrives
    result = replicator.apply(change("k", "01", ChangeKind.METADATA))
    # Then the replica gets the tags
    assert result.outcome is Outcome.ATTRIBUTES_UPDATED
    assert held(world.s3, DST, "k").tags == {"team": "b"}


def test_a_tag_change_on_a_stale_replica_copies_the_current_version() -> None:
    # Given a source overwritten (notification not yet handled), then tagged
    world = World()
    world.s3.put(SRC, "k", b"x")
    replicator = world.replicator()
    replicator.apply(change("k", "0A"))
    world.s3.put(SRC, "k", b"y")
    world.s3.set_tags(SRC, "k", {"team": "b"})
    # When the tag change arrives first
    result = replicator.apply(change("k", "01", ChangeKind.METADATA))
    # Then the replica is brought to the current version, tags included
    assert result.outcome is Outcome.COPIED
    assert (held(world.s3, DST, "k").body, held(world.s3, DST, "k").tags) == (b"y", {"team": "b"})


def test_an_acl_change_sets_the_replicas_acl_in_place() -> None:
    # Given buckets using ACLs and a replicated object whose ACL the user then opens to all users
    world = World(acls=True)
    world.s3.put(SRC, "k", b"x")
    replicator = world.replicator()
    replicator.apply(change("k", "0A"))
    grants = AclGrants(full_control='id="owner"', read='uri="http://acs.amazonaws.com/groups/global/AllUsers"')
    world.s3.buckets[SRC].acls["k"] = grants
    world.s3.calls.clear()
    # When the ACL change arrives
    result = replicator.apply(change("k", "0B", ChangeKind.METADATA))
    # Then the replica's ACL is the source's, without a copy
    assert result.outcome is Outcome.ATTRIBUTES_UPDATED
    assert world.s3.buckets[DST].acls["k"] == grants
    assert "CopyObject" not in world.s3.calls


def test_an_event_for_a_deleted_key_deletes_the_replica() -> None:
    # Given a replicated object that is then deleted at the source
    world = World()
    world.s3.put(SRC, "k", b"x")
    replicator = world.replicator()
    replicator.apply(change("k", "01"))
    world.s3.remove(SRC, "k")
    # When the removal is applied
    result = replicator.apply(change("k", "02", ChangeKind.REMOVED))
    # Then the replica is gone
    assert result.outcome is Outcome.DELETED
    assert world.s3.current(DST, "k") is None


def test_a_stale_create_event_for_a_key_deleted_since_deletes_instead_of_resurrecting() -> None:
    # Given a key created then deleted at the source, with only the create notification arriving
    world = World()
    world.s3.put(SRC, "k", b"x")
    world.s3.put(DST, "k", b"x")
    world.s3.remove(SRC, "k")
    # When the create is applied
    result = world.replicator().apply(change("k", "01"))
    # Then the replicator follows the source's state, not the event: the replica is deleted
    assert result.outcome is Outcome.DELETED
    assert world.s3.current(DST, "k") is None


def test_deletes_are_not_replicated_when_the_rule_says_so() -> None:
    # Given a rule without delete replication and a replica whose source was deleted
    world = World(make_rule(replicate_deletes=False))
    world.s3.put(DST, "k", b"x")
    # When the removal is applied
    result = world.replicator().apply(change("k", "02", ChangeKind.REMOVED))
    # Then the replica stays
    assert result.outcome is Outcome.DELETES_NOT_REPLICATED
    assert world.s3.current(DST, "k") is not None


@pytest.mark.parametrize(
    ("rule", "key", "expected"),
    [
        (make_rule(status=RuleStatus.PAUSED), "k", Outcome.RULE_PAUSED),
        (make_rule(prefixes=("logs/",)), "data/k", Outcome.OUTSIDE_PREFIXES),
        (make_rule(source_bucket="other-bucket"), "k", Outcome.NO_RULE),
    ],
)
def test_records_the_rule_does_not_cover_are_acknowledged_without_s3_calls(
    rule: ReplicationRule, key: str, expected: Outcome
) -> None:
    # Given a rule that is paused, filters by prefix, or covers another bucket
    world = World(rule)
    world.s3.put(SRC, key, b"x")
    # When a change for the key arrives
    result = world.replicator().apply(change(key))
    # Then it is skipped with the reason and nothing was called
    assert result.outcome is expected
    assert world.s3.calls == {}


def test_an_object_that_is_a_replica_from_the_destination_is_not_sent_back() -> None:
    # Given a source object that the opposite rule wrote as a replica of the destination bucket
    world = World()
    world.s3.put(DST, "k", b"x")
    Replicator(FakeRules(make_rule(source_bucket=DST, destination_bucket=SRC)), world.s3, FakeLedger(), FakeProgress(),
               clock=world.s3_clock).apply(change("k", bucket=DST))  # fmt: skip
    world.s3.calls.clear()
    # When its notification is applied
    result = world.replicator().apply(change("k"))
    # Then no copy is made
    assert result.outcome is Outcome.REPLICA_OF_DESTINATION
    assert "CopyObject" not in world.s3.calls


@pytest.mark.parametrize(
    ("how", "copy_key", "metadata"),
    [
        ("cp to a new key", "copy-of-k", None),
        ("metadata-only copy onto itself (rclone touch)", "k", {"mtime": "1764590000"}),
    ],
)
def test_a_users_copy_of_a_replica_is_the_users_write_and_is_replicated(
    how: str, copy_key: str, metadata: dict[str, str] | None
) -> None:
    # Given a replica the opposite rule wrote into this rule's source
    world = World()
    world.s3.put(DST, "k", b"x", metadata={"owner": "ana"})
    Replicator(FakeRules(make_rule(source_bucket=DST, destination_bucket=SRC)), world.s3, FakeLedger(), FakeProgress(),
               clock=world.s3_clock).apply(change("k", bucket=DST))  # fmt: skip
    # When a user copies it server-side inside the source, so the copy inherits crr's marker metadata
    world.s3.copy_within(
        SRC, "k", copy_key, metadata=None if metadata is None else {**held(world.s3, SRC, "k").metadata, **metadata}
    )
    result = world.replicator().apply(change(copy_key, "0B"))
    # Then the copy is taken for what it is, the user's write, and replicated
    assert result.outcome is Outcome.COPIED, how
    replica = world.s3.current(DST, copy_key)
    assert replica is not None
    assert replica.metadata["crr-origin-bucket"] == SRC
    assert replica.metadata.get("mtime") == (metadata or {}).get("mtime")


def test_restoring_an_old_replica_version_later_is_the_users_write() -> None:
    # Given a replica written by the opposite rule, later overwritten, in a versioned source
    world = World(versioned=True)
    world.s3.put(DST, "k", b"old")
    reverse = Replicator(FakeRules(make_rule(source_bucket=DST, destination_bucket=SRC)), world.s3, FakeLedger(),
                         FakeProgress(), clock=world.s3_clock)  # fmt: skip
    reverse.apply(change("k", "01", bucket=DST))
    old_version = held(world.s3, SRC, "k").version_id
    world.s3.put(SRC, "k", b"new")
    # When a user restores the old version by copying it over the key an hour later
    world.advance(timedelta(hours=1))
    world.s3.copy_within(SRC, "k", "k", source_version=old_version)
    result = world.replicator().apply(change("k", "0C"))
    # Then the restored version is replicated: its marker was inherited, not written for it
    assert result.outcome is Outcome.COPIED
    assert held(world.s3, DST, "k").body == b"old"


def test_acl_grants_are_carried_when_both_buckets_use_acls() -> None:
    # Given buckets with ACLs enabled and an object readable by all users
    world = World(acls=True)
    world.s3.put(SRC, "k", b"x")
    grants = AclGrants(full_control='id="owner"', read='uri="http://acs.amazonaws.com/groups/global/AllUsers"')
    world.s3.buckets[SRC].acls["k"] = grants
    # When it is replicated
    world.replicator().apply(change("k"))
    # Then the replica carries the same grants
    assert world.s3.buckets[DST].acls["k"] == grants


def test_a_source_overwritten_between_head_and_copy_is_copied_at_its_new_version() -> None:
    # Given an unversioned source overwritten right after the replicator's HEAD
    world = World()
    world.s3.put(SRC, "k", b"old")
    original_head = world.s3.head

    def head_then_overwrite(bucket: str, region: str, key: str) -> ObjectState | None:
        state = original_head(bucket, region, key)
        if world.s3.calls["HeadObject"] == 1:
            world.s3.put(SRC, "k", b"new")
        return state

    world.s3.head = head_then_overwrite  # type: ignore[method-assign]
    # When the change is applied
    world.replicator().apply(change("k"))
    # Then the pinned copy failed its precondition and the newer version was copied instead
    replica = world.s3.current(DST, "k")
    assert replica is not None
    assert replica.body == b"new"
    assert world.s3.calls["HeadObject"] == 2


def test_a_missing_destination_bucket_raises_a_specific_error() -> None:
    # Given a rule whose destination bucket does not exist
    world = World()
    del world.s3.buckets[DST]
    world.s3.put(SRC, "k", b"x")
    # When a change is applied, Then the error names the bucket
    with pytest.raises(BucketMissingError, match=DST):
        world.replicator().apply(change("k"))
    assert world.ledger.entries == {}


def test_a_source_uploaded_in_parts_is_copied_in_parts() -> None:
    # Given a source whose ETag says it was uploaded in 3 parts
    world = World()
    stored = world.s3.put(SRC, "big", b"x" * 10)
    world.s3.buckets[SRC].history["big"] = [replace(stored, etag=stored.etag.rstrip('"') + '-3"')]
    # When it is applied, Then it is copied through the multipart path
    assert world.replicator().apply(change("big")).outcome is Outcome.COPIED
    assert world.s3.calls.get("MultipartCopy") == 1
    replica = world.s3.current(DST, "big")
    assert replica is not None
    assert replica.body == b"x" * 10


def test_progress_is_written_once_per_rule_per_batch() -> None:
    # Given three objects
    world = World()
    for key in ("a", "b", "c"):
        world.s3.put(SRC, key, b"12")
    replicator = world.replicator()
    # When they are applied in one batch
    with replicator.invocation_scope():
        for key in ("a", "b", "c"):
            replicator.apply(change(key))
    # Then one progress update carries all three
    assert len(world.progress.added) == 1
    rule_id, delta = world.progress.added[0]
    assert (rule_id, delta.objects_copied, delta.bytes_copied) == ("r1", 3, 6)


def test_progress_of_consecutive_small_batches_is_written_once_per_interval() -> None:
    # Given a warm replicator flushing progress at most once per second, and a fake clock
    world = World()
    now = [100.0]
    replicator = Replicator(world.rules, world.s3, world.ledger, world.progress, monotonic=lambda: now[0])
    for key in ("a", "b", "c", "d"):
        world.s3.put(SRC, key, b"1")
    # When four one-record batches arrive, the first at t=100 and the rest within the second
    for key, at in (("a", 100.0), ("b", 100.3), ("c", 100.6), ("d", 101.2)):
        now[0] = at
        with replicator.invocation_scope():
            replicator.apply(change(key))
    # Then progress was written twice: at once for the first batch, then for b, c and d together
    assert [delta.objects_copied for _, delta in world.progress.added] == [1, 3]


# ---- races, scripted: task 0 = worker A, 1 = worker B, 2 = the user -----------------------------------


def _race(order: list[int]) -> FakeS3:
    """Worker A handles v1's event, the user then writes v2, worker B handles v2's event."""
    scheduler = Interleaver(Script(order))
    world = World(versioned=True, yield_point=scheduler.yield_point)
    world.s3.put(SRC, "k", b"v1")
    a, b = world.replicator(), world.replicator()
    v2_written: list[bool] = []

    def user() -> None:
        scheduler.yield_point()
        world.s3.put(SRC, "k", b"v2")
        v2_written.append(True)

    def worker_b() -> None:
        while not v2_written:
            scheduler.yield_point()
        b.apply(change("k", "02"))

    scheduler.run([lambda: a.apply(change("k", "01")), worker_b, user])
    return world.s3


def test_an_older_copy_landing_after_a_newer_one_is_repaired_by_reconciling_again() -> None:
    # Given A has read v1 (ledger, HEAD, copy-read) when the user writes v2 and B replicates v2 fully,
    # When A's copy of v1 lands after B's and A's ledger write then conflicts,
    # yield points: A: ledger, head, copy-read, copy-write, record; B: wait, ledger, head, copy-r, copy-w, record
    s3 = _race([0, 0, 0, 0, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    # Then A reconciled again and the replica holds v2
    replica = s3.current(DST, "k")
    assert replica is not None
    assert replica.body == b"v2"


def test_when_the_older_copy_records_first_the_newer_worker_reconciles_again() -> None:
    # Given B's copy of v2 lands first, then A's copy of v1, and A records the ledger before B,
    # When B's ledger write conflicts,
    s3 = _race([0, 0, 0, 0, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    # Then B reconciled again and the replica holds v2
    replica = s3.current(DST, "k")
    assert replica is not None
    assert replica.body == b"v2"


@pytest.mark.parametrize("algorithm", ["aws:kms", "aws:kms:dsse"])
def test_a_kms_encrypted_object_without_a_replica_key_is_refused_not_downgraded(algorithm: str) -> None:
    # Given an SSE-KMS (or dual-layer DSSE-KMS) source object and a rule naming no replica key
    world = World()
    world.s3.put(SRC, "secret", b"s")
    original_head = world.s3.head

    def kms_encrypted(bucket: str, region: str, key: str) -> ObjectState | None:
        state = original_head(bucket, region, key)
        assert state is not None
        return ObjectState(
            key=state.key,
            etag=state.etag,
            size=state.size,
            last_modified=state.last_modified,
            server_side_encryption=algorithm,
            kms_key_id="arn:aws:kms:us-west-1:1:key/k",
        )

    world.s3.head = kms_encrypted  # type: ignore[method-assign]
    # When it is applied, Then it fails with a permanent, named reason and nothing is copied
    with pytest.raises(ReplicaKeyMissingError, match="names no replica_kms_key_arn"):
        world.replicator().apply(change("secret"))
    assert "CopyObject" not in world.s3.calls
    assert classify(ReplicaKeyMissingError("x")).code == "ReplicaKmsKeyMissing"
    assert classify(ReplicaKeyMissingError("x")).permanent
