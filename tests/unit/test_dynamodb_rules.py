"""Rules, claims and the ledger in DynamoDB (moto): the one-destination and no-chaining guarantees."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from crr.adapters.dynamodb import DynamoLedger, DynamoProgress, DynamoRules, DynamoTombstones
from crr.adapters.dynamodb.keys import ledger_sk, rule_pk
from crr.errors import (
    DestinationAlreadyClaimedError,
    LedgerConflictError,
    RuleAlreadyExistsError,
    RuleNotFoundError,
    SourceAlreadyReplicatingError,
    SourceIsDestinationError,
)
from crr.models import LedgerEntry, ProgressDelta, TombstoneRecord
from crr.rules import ReplicationRule, RuleStatus
from crr.stamps import Stamp
from tests.support.aws import client, create_rules_table
from tests.support.rules import make_rule

TABLE = "rules"


@pytest.fixture
def dynamodb(aws: None) -> Any:
    db = client("dynamodb", "us-west-1")
    create_rules_table(db, TABLE)
    return db


def test_a_created_rule_is_found_by_its_source_bucket(dynamodb: Any) -> None:
    rules = DynamoRules(dynamodb, TABLE)
    rules.create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    found = rules.rule_for_source("src-a")
    assert found is not None
    assert found.destination_bucket == "dst-b"
    assert rules.rule_for_source("dst-b") is None


def test_records_looking_up_an_expired_rule_at_once_read_the_table_once(dynamodb: Any) -> None:
    # Given a rule whose cached answer has expired, and eight records of a concurrent batch needing it
    DynamoRules(dynamodb, TABLE).create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    rules = DynamoRules(dynamodb, TABLE, cache_seconds=60)
    reads: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb.GetItem", lambda **_: reads.append("GetItem"))
    start = threading.Barrier(8)

    def look_up() -> str | None:
        start.wait(timeout=20)
        found = rules.rule_for_source("src-a")
        return found.rule_id if found else None

    # When they look it up at the same moment
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: look_up(), range(8)))
    # Then all have the rule, and the table was read for one lookup (the claim, then the rule)
    assert answers == ["r1"] * 8
    assert reads == ["GetItem", "GetItem"]


@pytest.mark.parametrize(
    ("second", "error", "message"),
    [
        (
            make_rule(rule_id="r2", source_bucket="src-a", destination_bucket="dst-c"),
            SourceAlreadyReplicatingError,
            "through rule 'r1'",
        ),
        (
            make_rule(rule_id="r2", source_bucket="src-c", destination_bucket="dst-b"),
            DestinationAlreadyClaimedError,
            "destination of rule 'r1'",
        ),
        (
            make_rule(rule_id="r2", source_bucket="dst-b", destination_bucket="dst-c"),
            SourceIsDestinationError,
            "destination of rule 'r1'",
        ),
        (
            make_rule(rule_id="r2", source_bucket="src-c", destination_bucket="src-a"),
            DestinationAlreadyClaimedError,
            "source of rule 'r1'",
        ),
        (
            make_rule(rule_id="r1", source_bucket="src-x", destination_bucket="dst-y"),
            RuleAlreadyExistsError,
            "'r1' already exists",
        ),
    ],
)
def test_conflicting_rules_are_refused_naming_the_rule_in_the_way(
    dynamodb: Any, second: ReplicationRule, error: type[Exception], message: str
) -> None:
    # Given rule r1: src-a → dst-b
    rules = DynamoRules(dynamodb, TABLE)
    rules.create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    # When a second rule would reuse a claimed bucket, chain, or reuse the id, Then it is refused
    with pytest.raises(error, match=message):
        rules.create(second)
    # And nothing of the refused rule was written
    assert [r.rule_id for r in rules.list()] == ["r1"]


def test_removing_a_rule_releases_its_claims(dynamodb: Any) -> None:
    rules = DynamoRules(dynamodb, TABLE)
    rules.create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    rules.remove("r1")
    rules.create(make_rule(rule_id="r2", source_bucket="src-a", destination_bucket="dst-b"))
    assert [r.rule_id for r in rules.list()] == ["r2"]


def test_pausing_changes_the_status_seen_by_the_replicator(dynamodb: Any) -> None:
    rules = DynamoRules(dynamodb, TABLE, cache_seconds=60)
    rules.create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    assert rules.rule_for_source("src-a") is not None
    rules.set_status("r1", RuleStatus.PAUSED)
    paused = rules.rule_for_source("src-a")
    assert paused is not None
    assert paused.status is RuleStatus.PAUSED


def test_unknown_rules_raise_rule_not_found(dynamodb: Any) -> None:
    with pytest.raises(RuleNotFoundError, match="no rule 'ghost'"):
        DynamoRules(dynamodb, TABLE).set_status("ghost", RuleStatus.PAUSED)


def test_the_ledger_write_is_conditional_on_the_revision_read(dynamodb: Any) -> None:
    ledger = DynamoLedger(dynamodb, TABLE)
    now = datetime.now(UTC)
    ledger.record("r1", "k", LedgerEntry(1, "0A", '"e1"', False, now), expected_revision=None)
    # When two writers both expected revision 1, the second one conflicts
    ledger.record("r1", "k", LedgerEntry(2, "0B", '"e2"', False, now), expected_revision=1)
    with pytest.raises(LedgerConflictError):
        ledger.record("r1", "k", LedgerEntry(2, "0C", '"e3"', False, now), expected_revision=1)
    stored = ledger.read("r1", "k")
    assert stored is not None
    assert (stored.revision, stored.sequencer) == (2, "0B")


def test_keys_too_long_for_a_sort_key_are_hashed(dynamodb: Any) -> None:
    long_key = "é" * 512  # 1024 bytes
    ledger = DynamoLedger(dynamodb, TABLE)
    ledger.record("r1", long_key, LedgerEntry(1, "01", None, True, datetime.now(UTC)), expected_revision=None)
    assert ledger_sk(long_key).startswith("KEYH#")
    assert ledger.read("r1", long_key) is not None


def test_the_ledger_keeps_the_source_write_applied_and_reads_many_keys_at_once(dynamodb: Any) -> None:
    # Given 250 keys recorded with the source write they applied (one of them too long for a sort key)
    ledger = DynamoLedger(dynamodb, TABLE)
    now = datetime.now(UTC)
    keys = [f"k{index:03d}" for index in range(249)] + ["é" * 512]
    for key in keys:
        entry = LedgerEntry(1, "0A", '"e"', False, now, version_id="v1", source_modified=now.replace(microsecond=0))
        ledger.record("r1", key, entry, expected_revision=None)
    # When they are read back in one call, with keys that have no entry
    found = ledger.read_many("r1", [*keys, "never-recorded"])
    # Then every recorded key comes back with its version and Last-Modified, in BatchGetItems of 100
    assert set(found) == set(keys)
    assert (found["k007"].version_id, found["k007"].source_modified) == ("v1", now.replace(microsecond=0))
    assert ledger.read("r1", "k007") == found["k007"]


def test_the_ledger_keeps_the_replicas_own_etag_and_reads_items_written_before_it(dynamodb: Any) -> None:
    # Given one entry recorded with the ETag its copy gave the replica, and one item as written before the
    # replica's ETag was recorded (no such attribute)
    ledger = DynamoLedger(dynamodb, TABLE)
    now = datetime.now(UTC)
    ledger.record("r1", "new", LedgerEntry(1, None, '"src"', False, now, replica_etag='"kms-own"'), None)
    dynamodb.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": rule_pk("r1")},
            "sk": {"S": ledger_sk("old")},
            "key": {"S": "old"},
            "rev": {"N": "3"},
            "etag": {"S": '"src"'},
            "deleted": {"BOOL": False},
            "applied_at": {"S": now.isoformat()},
        },
    )
    # When both are read back, one by one and in bulk
    found = ledger.read_many("r1", ["new", "old"])
    # Then the new one carries the replica's ETag and the old one reads as not knowing it
    assert found["new"].replica_etag == '"kms-own"'
    assert ledger.read("r1", "new") == found["new"]
    assert (found["old"].revision, found["old"].etag, found["old"].replica_etag) == (3, '"src"', None)
    assert ledger.read("r1", "old") == found["old"]


def test_progress_accumulates_atomically(dynamodb: Any) -> None:
    progress = DynamoProgress(dynamodb, TABLE)
    now = datetime.now(UTC)
    progress.add("r1", ProgressDelta(objects_copied=2, bytes_copied=10), now)
    progress.add("r1", ProgressDelta(objects_copied=1, bytes_copied=5, deletes_applied=1), now)
    stored = progress.read("r1")
    assert (stored["objects_copied"], stored["bytes_copied"], stored["deletes_applied"]) == (3, 15, 1)


def test_the_breaker_store_counts_slots_holds_keys_and_flags_the_rule(dynamodb: Any) -> None:
    from crr.adapters.dynamodb import DynamoBreakerStore
    from crr.models import Verdict

    # Given a rule and its breaker store
    rules = DynamoRules(dynamodb, TABLE, cache_seconds=0)
    rules.create(make_rule(rule_id="r1", source_bucket="src-a", destination_bucket="dst-b"))
    store = DynamoBreakerStore(dynamodb, TABLE)
    at = datetime(2026, 11, 25, 12, tzinfo=UTC)
    # When copies and deletes are counted, the breaker tripped and a delete held
    store.count_copies("r1", 7, 5, 2, at)
    store.count_delete("r1", 7, [])
    counted = store.count_delete("r1", 8, [])
    assert store.trip("r1", at)
    assert not store.trip("r1", at)  # tripped once
    assert store.hold("r1", "a/b c", at, at).held_since == at
    # Then the slots, the held key and the rule's flag are all readable
    assert (counted.deletes, counted.changes, counted.overwrites) == ({7: 1, 8: 1}, {7: 6, 8: 1}, {7: 2})
    assert (counted.overwrites_total, counted.overwrites_since) == (2, at)
    assert [key for _, key in store.held_keys("r1")] == ["a/b c"]
    tripped = rules.get("r1")
    assert tripped.deletes_held
    assert tripped.deletes_held_since == at
    # When a stale slot is dropped and the burst released with slot 8 reset
    store.count_delete("r1", 9, [7])
    assert store.answer("r1", at, Verdict.RELEASED, (at, at), [8])
    # Then the flag is down, the answer recorded, no hold is accepted for that burst any more
    record = store.read("r1")
    assert (record.deletes, record.held, record.verdict) == ({9: 1}, False, Verdict.RELEASED)
    assert not store.hold("r1", "late", at, at).held
    assert [key for _, key in store.held_keys("r1")] == ["a/b c"]  # the late key was withdrawn
    assert not store.answer("r1", at, Verdict.DISCARDED, (at, at), [])
    assert not rules.get("r1").deletes_held
    for sort_key, _ in list(store.held_keys("r1")):
        store.forget_held("r1", sort_key)
    assert list(store.held_keys("r1")) == []
    # And the rule list is not confused by the breaker's items
    assert [r.rule_id for r in rules.list()] == ["r1"]


def test_a_tombstone_intent_names_the_version_it_deletes_until_settled_or_withdrawn(dynamodb: Any) -> None:
    # Given a two-way rule's tombstone registry
    tombstones = DynamoTombstones(lambda region: dynamodb, "us-west-1", TABLE)
    stamp = Stamp.of(datetime(2026, 11, 25, 12, tzinfo=UTC), "east-site", "v6")
    at = datetime(2026, 11, 25, 12, 0, 5, tzinfo=UTC)
    # When it intends to delete version v5 of a key, withdraws, intends again, and settles the marker
    tombstones.intend("r1", "k", stamp, at, "v5")
    intended = tombstones.read("r1", "k")
    tombstones.withdraw("r1", "k")
    withdrawn = tombstones.read("r1", "k")
    tombstones.intend("r1", "k", stamp, at, "v5")
    tombstones.settle("r1", "k", "m7", stamp)
    # Then the intent names that version until it is withdrawn or settled
    assert intended == TombstoneRecord(None, None, stamp, at, "v5")
    assert withdrawn == TombstoneRecord(None, None)
    assert tombstones.read("r1", "k") == TombstoneRecord("m7", stamp)
