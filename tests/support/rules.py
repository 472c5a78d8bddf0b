"""One way to build the replication rules tests need: a valid one-way rule by default, any field
overridden by keyword, and the two halves of a two-way pair."""

from __future__ import annotations

from typing import Any

from crr.rules import PeerRule, ReplicationRule

WEST, EAST = "us-west-1", "us-east-1"
SOURCE_BUCKET, DESTINATION_BUCKET = "src-bucket", "dst-bucket"

_DEFAULTS: dict[str, Any] = {
    "rule_id": "r1",
    "source_bucket": SOURCE_BUCKET,
    "source_region": WEST,
    "destination_bucket": DESTINATION_BUCKET,
    "destination_region": EAST,
}


def rule_fields(**overrides: Any) -> dict[str, Any]:
    """The fields of a valid one-way rule (r1: src-bucket in us-west-1 -> dst-bucket in us-east-1),
    with ``overrides`` (ReplicationRule field names) applied: for tests of what validation refuses."""
    return {**_DEFAULTS, **overrides}


def make_rule(*prefixes: str, **overrides: Any) -> ReplicationRule:
    """A one-way rule built the way the CLI builds one (``ReplicationRule.create``), selecting
    ``prefixes`` (none: every key); ``overrides`` are ReplicationRule field names."""
    if prefixes:
        overrides = {"prefixes": prefixes, **overrides}
    return ReplicationRule.create(**rule_fields(**overrides))


def named_rule(rule_id: str, **overrides: Any) -> ReplicationRule:
    """A one-way rule whose buckets carry its id (``<id>-src`` -> ``<id>-dst``), for tests with several rules."""
    return make_rule(
        **{"rule_id": rule_id, "source_bucket": f"{rule_id}-src", "destination_bucket": f"{rule_id}-dst", **overrides}
    )


def two_way_rules(
    first: tuple[str, str], second: tuple[str, str], **overrides: Any
) -> tuple[ReplicationRule, ReplicationRule]:
    """Both halves of a two-way pair between ``first`` and ``second`` (each a (bucket, region)):
    ``<a>-to-<b>`` and ``<b>-to-<a>``, each naming the other as its peer with the table and queue of
    the peer's region's stack. ``overrides`` apply to both halves."""

    def half(source: tuple[str, str], destination: tuple[str, str]) -> ReplicationRule:
        (source_bucket, source_region), (destination_bucket, destination_region) = source, destination
        return make_rule(
            **{
                "rule_id": f"{source_bucket}-to-{destination_bucket}",
                "source_bucket": source_bucket,
                "source_region": source_region,
                "destination_bucket": destination_bucket,
                "destination_region": destination_region,
                "peer": PeerRule(
                    rule_id=f"{destination_bucket}-to-{source_bucket}",
                    rules_table=f"table-{destination_region}",
                    queue_url=f"https://sqs.{destination_region}.amazonaws.com/123456789012/crr",
                ),
                **overrides,
            }
        )

    return half(first, second), half(second, first)
