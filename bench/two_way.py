"""Two-way sync cost: replicator writes, nudges and S3 requests per user change, over random scenarios
of users writing and deleting two keys on both sides (in-memory fakes, so requests are counted exactly).

Run from the repository root: python -m bench.two_way [--scenarios N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

from tests.support.two_way import EAST, KEYS, WEST, UserOp, run_scenario


def random_ops(rng: random.Random) -> list[UserOp]:
    return [
        UserOp(
            bucket=rng.choice([EAST, WEST]),
            put=rng.random() < 0.75,
            key=rng.choice(KEYS),
            pause_ms=rng.choice([0, 150, 400, 900, 1600]),
        )
        for _ in range(rng.randint(1, 12))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    changes = writes = nudges = 0
    calls: Counter[str] = Counter()
    most = 0.0
    for _ in range(args.scenarios):
        outcome = run_scenario(random_ops(rng), rng.randint(1, 4), rng.randint(1, 3), rng, rng.random() * 0.9)
        changes += outcome.user_changes
        writes += outcome.replicator_writes
        nudges += outcome.nudges
        calls.update(outcome.s3_calls)
        most = max(most, outcome.replicator_writes / outcome.user_changes)
    print(f"{args.scenarios} scenarios, {changes} user changes (both sides, 2 keys, duplicated deliveries)")
    print(f"replicator writes per user change: {writes / changes:.3f} (worst scenario {most:.2f}; bound 1.0)")
    print(f"nudges per user change:            {nudges / changes:.3f}")
    for operation, count in sorted(calls.items()):
        print(f"  {operation:<20} {count / changes:7.3f} per user change")


if __name__ == "__main__":
    main()
