"""Backfill jobs in the RulesTable: ``RULE#<rule id>`` / ``BACKFILL#<job id>``.

Job ids sort by creation time, so the newest job of a rule is one Query (descending, limit 1) away.
A page is recorded with one UpdateItem that ADDs the page's counts and SETs the cursors, conditional on
the job's page count being the page's sequence less one: a retried step cannot count a page twice, nor
move the cursor back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code
from crr.adapters.dynamodb.items import from_value, state_error, to_value
from crr.adapters.dynamodb.keys import BACKFILL_SK_PREFIX, backfill_sk, rule_pk
from crr.backfill.models import BackfillJob, BackfillStatus, CountProgress, ListingCursor, PageCounts, PageResult
from crr.errors import BackfillJobConflictError, BackfillJobNotFoundError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


MAX_FAILURE_REASON_CHARS = 2000
_COUNTERS = tuple(PageCounts.model_fields)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _job_item(job: BackfillJob) -> dict[str, Any]:
    values: dict[str, Any] = {
        "pk": rule_pk(job.rule_id),
        "sk": backfill_sk(job.job_id),
        "job_id": job.job_id,
        "rule_id": job.rule_id,
        "plan": job.plan,
        "status": job.status.value,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.updated_at),
        "finished_at": _iso(job.finished_at) if job.finished_at else None,
        "execution_arn": job.execution_arn,
        "failure_reason": job.failure_reason,
        "page_size": job.page_size,
        "count_pages": job.count_pages,
        "pages": job.pages,
        "cursor_prefix": job.cursor.prefix_index,
        "cursor_after": job.cursor.after,
        "done": job.done,
        "count_prefix": job.count.cursor.prefix_index,
        "count_after": job.count.cursor.after,
        "counted": job.count.objects,
        "counted_bytes": job.count.bytes,
        "count_complete": job.count.complete,
        "active_seconds": job.active_seconds,
        **{name: getattr(job.totals, name) for name in _COUNTERS},
    }
    return {name: to_value(value) for name, value in values.items() if value is not None}


def _job_from(raw: dict[str, Any]) -> BackfillJob:
    item = {name: from_value(value) for name, value in raw.items()}

    def moment(name: str) -> datetime | None:
        return datetime.fromisoformat(str(item[name])) if item.get(name) else None

    return BackfillJob(
        job_id=str(item["job_id"]),
        rule_id=str(item["rule_id"]),
        plan=str(item["plan"]),
        status=BackfillStatus(str(item["status"])),
        created_at=datetime.fromisoformat(str(item["created_at"])),
        updated_at=datetime.fromisoformat(str(item["updated_at"])),
        finished_at=moment("finished_at"),
        execution_arn=item.get("execution_arn"),
        failure_reason=item.get("failure_reason"),
        page_size=int(item["page_size"]),
        count_pages=int(item["count_pages"]),
        pages=int(item["pages"]),
        cursor=ListingCursor(prefix_index=int(item["cursor_prefix"]), after=item.get("cursor_after")),
        done=bool(item["done"]),
        totals=PageCounts(**{name: int(item.get(name, 0)) for name in _COUNTERS}),
        count=CountProgress(
            cursor=ListingCursor(prefix_index=int(item["count_prefix"]), after=item.get("count_after")),
            objects=int(item["counted"]),
            bytes=int(item["counted_bytes"]),
            complete=bool(item["count_complete"]),
        ),
        active_seconds=float(item.get("active_seconds", 0)),
    )


class DynamoBackfillJobs:
    """``crr.ports.table.BackfillJobs`` over DynamoDB (the rules table)."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._db = client
        self._table = table_name
        self._clock = clock

    def create(self, job: BackfillJob) -> None:
        """Raises BackfillJobConflictError when a job with this id exists, StateStoreError otherwise."""
        try:
            self._db.put_item(
                TableName=self._table, Item=_job_item(job), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise BackfillJobConflictError(f"rule {job.rule_id} already has a backfill {job.job_id}") from exc
            raise state_error(exc, "PutItem") from exc

    def find(self, rule_id: str, job_id: str) -> BackfillJob | None:
        try:
            found = self._db.get_item(TableName=self._table, Key=self._key(rule_id, job_id), ConsistentRead=True)
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        return _job_from(found["Item"]) if "Item" in found else None

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        """Raises BackfillJobNotFoundError, StateStoreError."""
        job = self.find(rule_id, job_id)
        if job is None:
            raise BackfillJobNotFoundError(rule_id, job_id)
        return job

    def latest(self, rule_id: str) -> BackfillJob | None:
        """The newest job of the rule (one Query), or None."""
        try:
            found = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :jobs)",
                ExpressionAttributeValues={":pk": to_value(rule_pk(rule_id)), ":jobs": to_value(BACKFILL_SK_PREFIX)},
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise state_error(exc, "Query") from exc
        items = found.get("Items", [])
        return _job_from(items[0]) if items else None

    def record_page(self, result: PageResult) -> BackfillJob:
        """Add the page's counts and set the cursors, once: a page already recorded returns the job as it is.

        Raises BackfillJobConflictError when pages before this one are missing or the job has finished,
        BackfillJobNotFoundError, StateStoreError.
        """
        now = self._clock()
        adds = ", ".join(f"#{name} :{name}" for name in [*_COUNTERS, "active_seconds"])
        sets = [
            "#pages = :sequence",
            "#cursor_prefix = :cursor_prefix",
            "#done = :done",
            "#count_prefix = :count_prefix",
            "#counted = :counted",
            "#counted_bytes = :counted_bytes",
            "#count_complete = :count_complete",
            "#updated_at = :now",
        ]
        removes: list[str] = []
        values: dict[str, Any] = {
            **{f":{name}": getattr(result.counts, name) for name in _COUNTERS},
            ":active_seconds": result.elapsed_seconds,
            ":sequence": result.sequence,
            ":previous": result.sequence - 1,
            ":cursor_prefix": result.cursor.prefix_index,
            ":done": result.done,
            ":count_prefix": result.count.cursor.prefix_index,
            ":counted": result.count.objects,
            ":counted_bytes": result.count.bytes,
            ":count_complete": result.count.complete,
            ":now": _iso(now),
            ":running": BackfillStatus.RUNNING.value,
        }
        for name, after in (("cursor_after", result.cursor.after), ("count_after", result.count.cursor.after)):
            if after is None:
                removes.append(f"#{name}")
            else:
                sets.append(f"#{name} = :{name}")
                values[f":{name}"] = after
        expression = f"ADD {adds} SET {', '.join(sets)}" + (f" REMOVE {', '.join(removes)}" if removes else "")
        names = [*_COUNTERS, "active_seconds", "pages", "cursor_prefix", "cursor_after", "done", "count_prefix"]
        names += ["count_after", "counted", "counted_bytes", "count_complete", "updated_at", "status"]
        try:
            updated = self._db.update_item(
                TableName=self._table,
                Key=self._key(result.rule_id, result.job_id),
                UpdateExpression=expression,
                # The page before this one is the last recorded, and the job is still running.
                ConditionExpression="#pages = :previous AND #status = :running",
                ExpressionAttributeNames={f"#{name}": name for name in names if f"#{name}" in expression}
                | {"#pages": "pages", "#status": "status"},
                ExpressionAttributeValues={name: to_value(value) for name, value in values.items()},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise state_error(exc, "UpdateItem") from exc
            return self._already_recorded(result)
        return _job_from(updated["Attributes"])

    def _already_recorded(self, result: PageResult) -> BackfillJob:
        job = self.get(result.rule_id, result.job_id)
        if job.pages >= result.sequence:
            return job  # a retried step: the page counted once already
        if job.status is not BackfillStatus.RUNNING:
            raise BackfillJobConflictError(
                f"backfill {job.job_id} of rule {job.rule_id} is {job.status.value}: page {result.sequence} "
                "was not recorded (resume the job to go on)"
            )
        raise BackfillJobConflictError(
            f"backfill {job.job_id} of rule {job.rule_id}: page {result.sequence} arrived, "
            f"but only {job.pages} page(s) are recorded"
        )

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        """Succeeded once every page is recorded. Raises BackfillJobConflictError when pages are left."""
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.SUCCEEDED,
            "SET #status = :status, #finished_at = :at, #updated_at = :at REMOVE #failure_reason",
            {":at": _iso(at)},
            condition="#done = :true AND #status <> :status",
            condition_values={":true": True},
        )

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob:
        """Failed with ``reason`` (a failed job can be resumed). Raises BackfillJobConflictError once succeeded."""
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.FAILED,
            "SET #status = :status, #failure_reason = :reason, #finished_at = :at, #updated_at = :at",
            {":reason": reason[:MAX_FAILURE_REASON_CHARS] or "-", ":at": _iso(at)},
            condition="#status <> :succeeded",
            condition_values={":succeeded": BackfillStatus.SUCCEEDED.value},
        )

    def set_execution(self, rule_id: str, job_id: str, execution_arn: str, at: datetime) -> BackfillJob:
        """The execution now running the job (a fresh one after continue-as-new or a resume): the job is
        running again. Raises BackfillJobConflictError once succeeded."""
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.RUNNING,
            "SET #status = :status, #execution_arn = :arn, #updated_at = :at REMOVE #failure_reason, #finished_at",
            {":arn": execution_arn, ":at": _iso(at)},
            condition="#status <> :succeeded",
            condition_values={":succeeded": BackfillStatus.SUCCEEDED.value},
        )

    def _set_status(
        self,
        rule_id: str,
        job_id: str,
        status: BackfillStatus,
        expression: str,
        values: dict[str, Any],
        *,
        condition: str,
        condition_values: dict[str, Any],
    ) -> BackfillJob:
        names = ["status", "finished_at", "updated_at", "failure_reason", "execution_arn", "done"]
        try:
            updated = self._db.update_item(
                TableName=self._table,
                Key=self._key(rule_id, job_id),
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(pk) AND {condition}",
                ExpressionAttributeNames={
                    f"#{name}": name for name in names if f"#{name}" in expression or f"#{name}" in condition
                },
                ExpressionAttributeValues={
                    name: to_value(value)
                    for name, value in {":status": status.value, **values, **condition_values}.items()
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise state_error(exc, "UpdateItem") from exc
            job = self.get(rule_id, job_id)
            if job.status is status:
                return job  # asked twice: already so
            raise BackfillJobConflictError(
                f"backfill {job_id} of rule {rule_id} cannot become {status.value}: it is {job.status.value}"
                + ("" if job.done else f", with pages left after page {job.pages}")
            ) from exc
        return _job_from(updated["Attributes"])

    def _key(self, rule_id: str, job_id: str) -> dict[str, Any]:
        return {"pk": to_value(rule_pk(rule_id)), "sk": to_value(backfill_sk(job_id))}
