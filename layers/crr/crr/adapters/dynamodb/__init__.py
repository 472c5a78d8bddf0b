"""The RulesTable (one DynamoDB table), one repository per kind of item; ``keys`` is its key schema.

Callers import the repositories from here; ``keys`` lists every item and how its keys are composed.
"""

from crr.adapters.dynamodb.backfill_jobs import DynamoBackfillJobs
from crr.adapters.dynamodb.breaker import DynamoBreakerStore
from crr.adapters.dynamodb.failures import DynamoFailureLog
from crr.adapters.dynamodb.ledger import DynamoLedger
from crr.adapters.dynamodb.progress import DynamoProgress
from crr.adapters.dynamodb.rules import DynamoRules
from crr.adapters.dynamodb.tombstones import DynamoTombstones

__all__ = [
    "DynamoBackfillJobs",
    "DynamoBreakerStore",
    "DynamoFailureLog",
    "DynamoLedger",
    "DynamoProgress",
    "DynamoRules",
    "DynamoTombstones",
]
