"""Property: two rules, A -> B and B -> A, under users writing and deleting on both sides at once (and
doing what users do besides: server-side copies of another key, copies with metadata replaced,
metadata-only copies onto the key itself, tag changes, identical bytes with metadata of their own,
zero-byte objects), with notifications shuffled, duplicated and handled by concurrent workers, leave
both buckets equal to the last writer (by origin stamp) in bytes and user metadata, equal to each other
in tags and content type, and copy at most once per user change (no ping-pong)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.two_way import EAST, KEYS, WEST, Action, UserOp, run_scenario

user_ops = st.lists(
    st.builds(
        UserOp,
        bucket=st.sampled_from([EAST, WEST]),
        put=st.booleans() | st.just(True),
        key=st.sampled_from(KEYS),
        pause_ms=st.sampled_from([0, 150, 400, 900, 1600]),
        action=st.sampled_from(list(Action)) | st.just(Action.WRITE),
        settled=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("record_concurrency", [1, 8])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=user_ops,
    workers=st.integers(1, 4),
    duplicates=st.integers(1, 3),
    seed=st.randoms(use_true_random=False),
    stickiness=st.sampled_from([0.0, 0.6, 0.85, 0.95]),
)
def test_both_buckets_converge_on_the_last_writer_without_ping_pong(
    record_concurrency: int,
    ops: list[UserOp],
    workers: int,
    duplicates: int,
    seed: random.Random,
    stickiness: float,
) -> None:
    # Given users putting, overwriting, copying, touching, tagging and deleting the same keys on both
    #       sides of a two-way pair,
    # When every notification (the replicator's writes included) is shuffled, duplicated and handled by
    #      1-4 concurrent workers serving both directions (one at a time, or batches with that many
    #      records at once),
    # Then both buckets hold the last writer's version of every key (bytes and user metadata) and the
    #      same tags (asserted inside the scenario), and there was at most one replicator write per
    #      user change.
    outcome = run_scenario(ops, workers, duplicates, seed, stickiness, record_concurrency)
    assert outcome.replicator_writes <= outcome.user_changes, f"ping-pong: {outcome}"
