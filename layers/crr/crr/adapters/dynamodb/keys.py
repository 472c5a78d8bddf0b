"""The RulesTable's key schema: every partition and sort key crr writes, composed in this one place.

One table, string keys ``pk`` (partition) and ``sk`` (sort):

====================================  =========================  ==================================================
pk                                    sk                         item
====================================  =========================  ==================================================
``RULE#<rule id>``                    ``RULE``                   the rule (``DynamoRules``)
``SRC#<bucket>``                      ``CLAIM``                  the rule a source bucket replicates through
``DST#<bucket>``                      ``CLAIM``                  the rule a destination bucket receives from
``RULE#<rule id>``                    ``KEY#<object key>``       the ledger: last applied sequencer, revision, ETag
``RULE#<rule id>``                    ``PROGRESS``               counters (atomic ADD), time of the last sync
``RULE#<rule id>``                    ``BREAKER``                the delete breaker's sliding counts and state
``RULE#<rule id>``                    ``HELD#<object key>``      a delete held while the breaker is open
``RULE#<rule id>``                    ``TOMB#<object key>``      two-way: the delete marker the rule made, its stamp
``RULE#<rule id>``                    ``BACKFILL#<job id>``      a backfill job: status, settings, the ranges'
                                                                 aggregate (counts, open/uncounted ranges)
``RULE#<rule id>``                    ``BACKFILL#<job id>#``     one range of a backfill job: bounds, cursors,
                                      ``RANGE#<range id>``       pages, claim, its own counts
``FAILURE#<message id>``              ``FAILURE``                why a queue message failed, and how often
====================================  =========================  ==================================================

Sort keys naming an object key switch to ``KEYH#`` / ``HELDH#`` / ``TOMBH#`` and the key's SHA-256 when the
key is too long for a sort key. Everything of one rule shares its partition, so a rule's held deletes or
backfill jobs are one Query (``begins_with`` on the sort key); failures have their own partitions
because a failure may name no rule.
"""

from __future__ import annotations

import hashlib

RULE_SK = "RULE"
CLAIM_SK = "CLAIM"
PROGRESS_SK = "PROGRESS"
BREAKER_SK = "BREAKER"
FAILURE_SK = "FAILURE"

_RULE_PK_PREFIX = "RULE#"
_SOURCE_CLAIM_PK_PREFIX = "SRC#"
_DESTINATION_CLAIM_PK_PREFIX = "DST#"
# The failure log's partitions, which `crr status` finds with a filtered Scan (there is no index).
FAILURE_PK_PREFIX = "FAILURE#"
# A rule's backfill jobs and their ranges; job ids sort by creation time, so the newest job's items are the
# last of this range.
BACKFILL_SK_PREFIX = "BACKFILL#"
# Between a job id and a range id in a range's sort key (job ids hold no ``#``).
_RANGE_INFIX = "#RANGE#"
# Held deletes, plain and hashed (``HELD#`` and ``HELDH#``): one begins_with finds both.
HELD_SK_PREFIX = "HELD"

# The kinds of sort key that name an object key, each with a plain and a hashed form.
_LEDGER = "KEY"
_HELD = HELD_SK_PREFIX
_TOMBSTONE = "TOMB"

# DynamoDB sort keys stop at 1024 bytes; S3 keys may use all 1024, so long ones are hashed.
MAX_PLAIN_SK_BYTES = 1000


def rule_pk(rule_id: str) -> str:
    """The partition holding a rule and everything kept per rule."""
    return f"{_RULE_PK_PREFIX}{rule_id}"


def source_claim_pk(bucket: str) -> str:
    """The claim that ``bucket`` replicates through one rule (its sort key is ``CLAIM_SK``)."""
    return f"{_SOURCE_CLAIM_PK_PREFIX}{bucket}"


def destination_claim_pk(bucket: str) -> str:
    """The claim that ``bucket`` receives from one rule (its sort key is ``CLAIM_SK``)."""
    return f"{_DESTINATION_CLAIM_PK_PREFIX}{bucket}"


def ledger_sk(key: str) -> str:
    """The ledger entry of an object key, in its rule's partition."""
    return _object_key_sk(_LEDGER, key)


def held_sk(key: str) -> str:
    """A delete of ``key`` held by the breaker, in its rule's partition."""
    return _object_key_sk(_HELD, key)


def tombstone_sk(key: str) -> str:
    """Two-way: the delete marker the rule made for ``key``, in its rule's partition."""
    return _object_key_sk(_TOMBSTONE, key)


def backfill_sk(job_id: str) -> str:
    """A backfill job, in its rule's partition."""
    return f"{BACKFILL_SK_PREFIX}{job_id}"


def backfill_range_sk(job_id: str, range_id: str) -> str:
    """A range of a backfill job, in its rule's partition (after the job's item: a Query of the job's
    ranges is a ``begins_with`` on ``backfill_ranges_prefix``)."""
    return f"{backfill_ranges_prefix(job_id)}{range_id}"


def backfill_ranges_prefix(job_id: str) -> str:
    """What the sort keys of a job's ranges begin with."""
    return f"{BACKFILL_SK_PREFIX}{job_id}{_RANGE_INFIX}"


def backfill_job_of(sort_key: str) -> str:
    """The job id a backfill sort key (a job's or one of its ranges') names."""
    return sort_key.removeprefix(BACKFILL_SK_PREFIX).split("#", 1)[0]


def failure_pk(message_id: str) -> str:
    """The failure record of a queue message (its sort key is ``FAILURE_SK``)."""
    return f"{FAILURE_PK_PREFIX}{message_id}"


def _object_key_sk(kind: str, key: str) -> str:
    encoded = key.encode("utf-8")
    if len(encoded) <= MAX_PLAIN_SK_BYTES:
        return f"{kind}#{key}"
    return f"{kind}H#{hashlib.sha256(encoded).hexdigest()}"
