"""Listing and replaying dead letters over in-memory queues: filters, reasons, and the order of
send-then-delete that makes a crash duplicate instead of drop."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from crr.failures import FailureKind, FailureReason, FailureRecord
from crr.models import RawDeadLetter
from crr.replay import DeadLetters, ReplayRequest, parse_replay_event
from tests.support.events import load_event
from tests.support.fakes import FakeDeadLetterQueue, FakeFailureLog, FakeReplicationQueue

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# The dead-letter queue and the failure log that explains the letters SQS moved there itself
DeadLettersWorld = tuple[FakeDeadLetterQueue, FakeFailureLog]


def body_for(key: str) -> str:
    document = load_event("s3/object-created-put")
    document["Records"][0]["s3"]["object"]["key"] = key
    return json.dumps(document)


def attributes(code: str, at: datetime) -> dict[str, str]:
    return {
        "crr-error-code": code,
        "crr-error-message": f"{code} happened",
        "crr-attempts": "1",
        "crr-last-failure": at.isoformat(),
    }


@pytest.fixture
def world() -> DeadLettersWorld:
    # Two dead-lettered at once with attributes, one moved by SQS redrive (reason in the failure log)
    dlq = FakeDeadLetterQueue(
        [
            RawDeadLetter("a", "", body_for("logs/a"), T0, attributes("NoSuchBucket", T0)),
            RawDeadLetter("b", "", body_for("data/b"), T0, attributes("AccessDenied", T0 + timedelta(hours=1))),
            RawDeadLetter("c", "", body_for("logs/c"), T0 + timedelta(hours=2)),
            RawDeadLetter("d", "", "{garbage", T0 + timedelta(hours=3)),
        ]
    )
    redriven = FailureRecord(
        "c", FailureReason(FailureKind.TRANSIENT, "SlowDown", "reduce rate"), 5, T0, T0 + timedelta(hours=2)
    )
    return dlq, FakeFailureLog({"c": redriven}, refuse_records=True)


def test_the_summary_groups_by_reason_from_attributes_or_the_failure_log(
    world: DeadLettersWorld,
) -> None:
    dlq, failures = world
    summary = DeadLetters(dlq, failures).summarize()
    assert summary.total == 4
    assert {reason.code: reason.count for reason in summary.reasons} == {
        "NoSuchBucket": 1,
        "AccessDenied": 1,
        "SlowDown": 1,
        "Unknown": 1,
    }
    assert next(r for r in summary.reasons if r.code == "SlowDown").sample_keys == ["logs/c"]
    # And listing changes nothing: every message is visible again
    assert dlq.hidden == set()
    assert len(dlq.letters) == 4


class SamplingDlq(FakeDeadLetterQueue):
    """Answers some polls empty although messages are visible, as SQS may; ``lost`` are counted but
    never returned (what the walk cannot reach)."""

    def __init__(self, letters: list[RawDeadLetter], lost: int = 0) -> None:
        super().__init__(letters)
        self.polls = 0
        self.lost = lost

    def visible_count(self) -> int:
        return super().visible_count() + self.lost

    def receive(self, max_messages: int, hold_seconds: int, wait_seconds: int) -> list[RawDeadLetter]:
        self.polls += 1
        return [] if self.polls % 2 else super().receive(1, hold_seconds, wait_seconds)


def test_a_walk_goes_on_past_empty_replies_until_the_queue_counts_nothing_visible(
    world: DeadLettersWorld,
) -> None:
    # Given a DLQ whose every other reply is empty although messages are visible
    dlq, failures = world
    sampling = SamplingDlq(list(dlq.letters.values()))
    # When it is listed
    summary = DeadLetters(sampling, failures).summarize()
    # Then every message is counted, and the walk says it is complete
    assert (summary.total, summary.complete) == (4, True)


def test_a_walk_that_cannot_reach_what_the_queue_counts_says_it_is_incomplete(
    world: DeadLettersWorld,
) -> None:
    # Given a DLQ that counts two messages more than any poll returns
    dlq, failures = world
    sampling = SamplingDlq(list(dlq.letters.values()), lost=2)
    # When it is listed and replayed
    summary = DeadLetters(sampling, failures).summarize()
    report = DeadLetters(sampling, failures).replay(ReplayRequest(dry_run=True), FakeReplicationQueue())
    # Then what was reached is reported, flagged incomplete rather than passed off as everything
    assert (summary.total, summary.complete) == (4, False)
    assert (report.examined, report.complete) == (4, False)


@pytest.mark.parametrize(
    ("request_", "replayed"),
    [
        (ReplayRequest(), {"a", "b", "c", "d"}),
        (ReplayRequest(reason="NoSuchBucket"), {"a"}),
        (ReplayRequest(prefix="logs/"), {"a", "c"}),
        (ReplayRequest(since=T0 + timedelta(minutes=30)), {"b", "c", "d"}),
        (ReplayRequest(prefix="logs/", since=T0 + timedelta(minutes=30)), {"c"}),
        (ReplayRequest.model_validate({"max": 2}), {"a", "b"}),
    ],
)
def test_replay_moves_exactly_the_matching_messages(
    world: DeadLettersWorld, request_: ReplayRequest, replayed: set[str]
) -> None:
    dlq, failures = world
    bodies = {mid: letter.body for mid, letter in dlq.letters.items()}
    queue = FakeReplicationQueue()
    report = DeadLetters(dlq, failures).replay(request_, queue)
    assert set(queue.bodies) == {bodies[mid] for mid in replayed}
    assert set(dlq.letters) == set(bodies) - replayed
    assert report.replayed == len(replayed)
    assert dlq.hidden == set()


def test_a_dry_run_counts_without_moving_anything(world: DeadLettersWorld) -> None:
    dlq, failures = world
    queue = FakeReplicationQueue()
    report = DeadLetters(dlq, failures).replay(ReplayRequest(prefix="logs/", dry_run=True), queue)
    assert (report.matched, report.replayed, queue.bodies, len(dlq.letters)) == (2, 0, [], 4)


def test_a_crash_between_send_and_delete_duplicates_but_never_drops(
    world: DeadLettersWorld,
) -> None:
    # Given a DLQ whose delete fails as if the process died right after the send
    dlq, failures = world
    dlq.fail_delete = True
    queue = FakeReplicationQueue()
    # When a replay runs, it fails
    with pytest.raises(ConnectionError):
        DeadLetters(dlq, failures).replay(ReplayRequest(reason="NoSuchBucket"), queue)
    # Then the message was sent back to the replication queue AND is still in the DLQ, visible again
    assert queue.bodies == [body_for("logs/a")]
    assert "a" in dlq.letters
    assert dlq.hidden == set()


def test_the_replay_function_event_is_validated() -> None:
    request = parse_replay_event({"reason": "NoSuchBucket", "max": 5, "dry_run": True})
    assert (request.reason, request.max_messages, request.dry_run) == ("NoSuchBucket", 5, True)
    with pytest.raises(ValueError, match="extra"):
        parse_replay_event({"reasons": "typo"})
