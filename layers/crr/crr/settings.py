"""Function configuration, read from the environment per invocation (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crr.errors import CrrError
from crr.failures import DEFAULT_RETRY_BASE_SECONDS

# The template's RecordConcurrency default: docs/performance.md gives the measurements behind it.
DEFAULT_RECORD_CONCURRENCY = 10


class ConfigurationError(CrrError):
    """A required setting is missing or malformed: the deployment is broken, not the record."""


class FunctionSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    rules_table_name: str = Field(min_length=1)
    replication_queue_url: str = Field(min_length=1)
    dead_letter_queue_url: str = Field(min_length=1)
    retry_base_seconds: float = Field(default=DEFAULT_RETRY_BASE_SECONDS, gt=0)
    # The replication queue's redrive maxReceiveCount: a record failing its last delivery is
    # dead-lettered by the function, with its reason (None: left to SQS's redrive).
    max_receive_count: int | None = Field(default=None, ge=1)
    region: str = Field(min_length=1)
    rule_cache_seconds: float = Field(default=5.0, ge=0)
    progress_flush_seconds: float = Field(default=1.0, ge=0)
    delete_breaker_count: int = Field(default=1000, ge=1)
    delete_breaker_percent: float = Field(default=50.0, ge=0, le=100)
    delete_breaker_window_seconds: int = Field(default=300, ge=1)
    # Large objects: copy in parts above this size (or when the source was uploaded in parts), in parts
    # of this size, and hand a copy to the large-copy workflow when it would not fit at this rate.
    multipart_threshold_bytes: int = Field(default=5 * 1024**3, ge=5 * 1024**2, le=5 * 1024**3)
    part_size_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)
    copy_bytes_per_second: float = Field(default=100 * 1024**2, gt=0)
    large_copy_state_machine_arn: str | None = None
    # Backfill: objects copied at once by one page step, and whether SSE-KMS sources may exist.
    backfill_concurrency: int = Field(default=32, ge=1, le=256)
    # Backfill: the most ranges one job works at once (its workers; a job asking for more gets this many).
    backfill_max_ranges: int = Field(default=16, ge=1, le=40)
    sse_kms_sources: bool = False
    # Live path: messages of one queue batch applied at once (records of one key stay in order).
    record_concurrency: int = Field(default=DEFAULT_RECORD_CONCURRENCY, ge=1, le=64)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> FunctionSettings:
        """Raises ConfigurationError naming the variable that is missing or wrong."""
        env = os.environ if environ is None else environ
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        values = {
            "rules_table_name": env.get("RULES_TABLE_NAME"),
            "replication_queue_url": env.get("REPLICATION_QUEUE_URL"),
            "dead_letter_queue_url": env.get("DEAD_LETTER_QUEUE_URL"),
            "retry_base_seconds": env.get("RETRY_BASE_SECONDS", str(DEFAULT_RETRY_BASE_SECONDS)),
            "max_receive_count": env.get("MAX_RECEIVE_COUNT") or None,
            "region": region,
            "rule_cache_seconds": env.get("RULE_CACHE_SECONDS", "5"),
            "progress_flush_seconds": env.get("PROGRESS_FLUSH_SECONDS", "1"),
            "delete_breaker_count": env.get("DELETE_BREAKER_COUNT", "1000"),
            "delete_breaker_percent": env.get("DELETE_BREAKER_PERCENT", "50"),
            "delete_breaker_window_seconds": env.get("DELETE_BREAKER_WINDOW_SECONDS", "300"),
            "multipart_threshold_bytes": env.get("MULTIPART_THRESHOLD_BYTES", str(5 * 1024**3)),
            "part_size_bytes": env.get("PART_SIZE_BYTES", str(64 * 1024**2)),
            "copy_bytes_per_second": env.get("COPY_BYTES_PER_SECOND", str(100 * 1024**2)),
            "large_copy_state_machine_arn": env.get("LARGE_COPY_STATE_MACHINE_ARN") or None,
            "backfill_concurrency": env.get("BACKFILL_CONCURRENCY", "32"),
            "backfill_max_ranges": env.get("BACKFILL_MAX_RANGES", "16"),
            "sse_kms_sources": env.get("SSE_KMS_SOURCES", "false"),
            "record_concurrency": env.get("RECORD_CONCURRENCY", str(DEFAULT_RECORD_CONCURRENCY)),
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            names = {
                "rules_table_name": "RULES_TABLE_NAME",
                "replication_queue_url": "REPLICATION_QUEUE_URL",
                "dead_letter_queue_url": "DEAD_LETTER_QUEUE_URL",
                "retry_base_seconds": "RETRY_BASE_SECONDS",
                "max_receive_count": "MAX_RECEIVE_COUNT",
                "region": "AWS_REGION",
                "rule_cache_seconds": "RULE_CACHE_SECONDS",
                "progress_flush_seconds": "PROGRESS_FLUSH_SECONDS",
                "delete_breaker_count": "DELETE_BREAKER_COUNT",
                "delete_breaker_percent": "DELETE_BREAKER_PERCENT",
                "delete_breaker_window_seconds": "DELETE_BREAKER_WINDOW_SECONDS",
                "multipart_threshold_bytes": "MULTIPART_THRESHOLD_BYTES",
                "part_size_bytes": "PART_SIZE_BYTES",
                "copy_bytes_per_second": "COPY_BYTES_PER_SECOND",
                "backfill_concurrency": "BACKFILL_CONCURRENCY",
                "backfill_max_ranges": "BACKFILL_MAX_RANGES",
                "sse_kms_sources": "SSE_KMS_SOURCES",
                "record_concurrency": "RECORD_CONCURRENCY",
            }
            problems = ", ".join(f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"function environment is incomplete: {problems}") from None
