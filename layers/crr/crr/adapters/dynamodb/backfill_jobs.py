"""Backfill jobs and their ranges in the RulesTable: ``RULE#<rule id>`` / ``BACKFILL#<job id>`` and
``BACKFILL#<job id>#RANGE#<range id>``.

Job ids sort by creation time and a job's ranges sort right after it, so the newest job of a rule is
named by the last sort key under ``BACKFILL#`` (one Query, then one GetItem of the job).

A page of a range is recorded with ONE TransactWriteItems: an Update of the range (its cursors, page
count and counts; condition: the page before this one is its last recorded, and this worker holds it),
or, for the range's final page, a Delete of it on the same condition,
an Update of the worker slot's tally ``BACKFILL#<job id>#TALLY#<worker index>`` (ADD the page's counts),
and, only when the page opens, closes or finishes counting a range, an Update of the job (ADD the
changes of its made, open and uncounted ranges) and a Put per range split off (condition: not there
yet). So a page is counted once and a split loses no key: all of it lands, or none. When the range's
condition fails, the answer carries the range as stored (``ReturnValuesOnConditionCheckFailure``), which
tells a retried step (the page is recorded already, or another worker holds the range now: return the
range) from a conflict, at no extra read.

Why a done range is deleted: every claim, idle poll and release Queries the job's ranges, and a job of
a billion objects makes thousands of them; a FilterExpression would still read (and bill) the done
ones. Once done, a range's counts are already in its worker slot's tally and its job's counters, so
nothing is lost, and the Query reads only open ranges. A range goes only when its final page is
recorded, so a retried final page that finds its range gone was recorded already (it returns the range
as that page left it). The filter on ``done`` stays for jobs whose done ranges were written before.

Why tallies: DynamoDB refuses a transaction while another is in progress on one of its items
(TransactionConflict), and every worker records a page every few seconds. Were the page counts ADDed to
the job item, up to 40 workers would contend for that one item on every page; a slot's tally is written
by one worker at a time, and the job item only when ranges open or close. Reading a job adds its
tallies (one Query, at most 40 items) to the job item's counts: each only grows, so the sum never goes
backwards between two reads.

The job's status guards no page: a step of a failed or stopped execution that ends after the job was
marked failed is still recorded (its copies were made), and it cannot run past a resume, since the
resumed execution's workers take the range's claim first, and a page lands only for its range's holder.

IAM: TransactWriteItems needs no action of its own, only each item's (dynamodb:UpdateItem,
dynamodb:PutItem and dynamodb:DeleteItem here): https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code
from crr.adapters.dynamodb.items import from_value, state_error, to_value
from crr.adapters.dynamodb.keys import (
    BACKFILL_SK_PREFIX,
    backfill_job_of,
    backfill_range_sk,
    backfill_ranges_prefix,
    backfill_sk,
    backfill_tallies_prefix,
    backfill_tally_sk,
    rule_pk,
)
from crr.backfill.fanout import worker_index
from crr.backfill.models import BackfillJob, BackfillRange, BackfillStatus, PageCounts, RangePage, WorkKind
from crr.errors import BackfillJobConflictError, BackfillJobNotFoundError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


MAX_FAILURE_REASON_CHARS = 2000
# The item layout written since jobs fan out over ranges; an item without it is a single-cursor job.
JOB_FORMAT = 2
# TransactWriteItems takes at most 100 items.
MAX_TRANSACTION_ITEMS = 100
# Every worker's page updates the job item, so two transactions on it now and then collide
# (TransactionConflict): tried again at once a few times, with a little jitter, before the step fails.
TRANSACTION_ATTEMPTS = 4
_COUNTERS = tuple(PageCounts.model_fields)
# A page lands only on its range's last recorded page, and only for the range's holder.
_RANGE_HELD = "#pages = :previous AND #claim = :worker"
# What a tally adds to its job's item when the job is read.
_TALLIED = (*_COUNTERS, "pages", "counted", "counted_bytes", "active_seconds")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    return {name: to_value(value) for name, value in values.items() if value is not None}


def _job_item(job: BackfillJob) -> dict[str, Any]:
    return _clean(
        {
            "pk": rule_pk(job.rule_id),
            "sk": backfill_sk(job.job_id),
            "format": JOB_FORMAT,
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
            "workers": job.workers,
            "pages": job.pages,
            "counted": job.counted,
            "counted_bytes": job.counted_bytes,
            "active_seconds": job.active_seconds,
            "ranges_made": job.ranges_made,
            "ranges_open": job.ranges_open,
            "ranges_uncounted": job.ranges_uncounted,
            "inventory": job.inventory,
            **{name: getattr(job.totals, name) for name in _COUNTERS},
        }
    )


def _job_from(raw: dict[str, Any]) -> BackfillJob:
    item = {name: from_value(value) for name, value in raw.items()}

    def moment(name: str) -> datetime | None:
        return datetime.fromisoformat(str(item[name])) if item.get(name) else None

    legacy = "format" not in item
    if legacy:
        # A single-cursor job: its one cursor is read as one range, open until its listing ended.
        ranges = {
            "ranges_made": 1,
            "ranges_open": 0 if item.get("done") else 1,
            "ranges_uncounted": 0 if item.get("count_complete") else 1,
            "workers": 1,
        }
    else:
        ranges = {name: int(item.get(name, 0)) for name in ("ranges_made", "ranges_open", "ranges_uncounted")}
        ranges["workers"] = int(item["workers"])
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
        pages=int(item.get("pages", 0)),
        totals=PageCounts(**{name: int(item.get(name, 0)) for name in _COUNTERS}),
        counted=int(item.get("counted", 0)),
        counted_bytes=int(item.get("counted_bytes", 0)),
        active_seconds=float(item.get("active_seconds", 0)),
        legacy=legacy,
        inventory=item.get("inventory"),
        **ranges,
    )


def _range_item(item: BackfillRange) -> dict[str, Any]:
    return _clean(
        {
            "pk": rule_pk(item.rule_id),
            "sk": backfill_range_sk(item.job_id, item.range_id),
            "job_id": item.job_id,
            "rule_id": item.rule_id,
            "range_id": item.range_id,
            "kind": item.kind.value,
            "prefix": item.prefix,
            "after": item.after,
            "until": item.until,
            "cursor": item.cursor,
            "count_cursor": item.count_cursor,
            "count_complete": item.count_complete,
            "pages": item.pages,
            "done": item.done,
            "claim": item.claim,
            "counted": item.counted,
            "counted_bytes": item.counted_bytes,
            "active_seconds": item.active_seconds,
            "file": item.file,
            "row": item.row,
            **{name: getattr(item.totals, name) for name in _COUNTERS},
        }
    )


def _range_from(raw: dict[str, Any]) -> BackfillRange:
    item = {name: from_value(value) for name, value in raw.items()}
    return BackfillRange(
        rule_id=str(item["rule_id"]),
        job_id=str(item["job_id"]),
        range_id=str(item["range_id"]),
        kind=WorkKind(str(item.get("kind", WorkKind.KEYS.value))),
        prefix=str(item.get("prefix", "")),
        after=item.get("after"),
        until=item.get("until"),
        cursor=item.get("cursor"),
        count_cursor=item.get("count_cursor"),
        count_complete=bool(item.get("count_complete", False)),
        pages=int(item.get("pages", 0)),
        done=bool(item.get("done", False)),
        claim=item.get("claim"),
        totals=PageCounts(**{name: int(item.get(name, 0)) for name in _COUNTERS}),
        counted=int(item.get("counted", 0)),
        counted_bytes=int(item.get("counted_bytes", 0)),
        active_seconds=float(item.get("active_seconds", 0)),
        file=item.get("file"),
        row=int(item.get("row", 0)),
    )


def _update(
    key: dict[str, Any], sets: dict[str, Any], adds: dict[str, Any], condition: str, **extra: Any
) -> dict[str, Any]:
    """An Update of a transaction (or an UpdateItem's arguments): SET ``sets`` (None values REMOVEd),
    ADD ``adds``, on ``condition`` (whose ``#name`` and ``:value`` placeholders ``extra`` may define
    through ``names`` and ``values``)."""
    names: dict[str, str] = dict(extra.pop("names", {}))
    values: dict[str, Any] = {placeholder: to_value(value) for placeholder, value in extra.pop("values", {}).items()}
    set_parts, remove_parts, add_parts = [], [], []
    for index, (name, value) in enumerate(sets.items()):
        names[f"#s{index}"] = name
        if value is None:
            remove_parts.append(f"#s{index}")
        else:
            set_parts.append(f"#s{index} = :s{index}")
            values[f":s{index}"] = to_value(value)
    for index, (name, value) in enumerate(adds.items()):
        names[f"#a{index}"] = name
        add_parts.append(f"#a{index} :a{index}")
        values[f":a{index}"] = to_value(value)
    clauses = [
        f"{verb} {', '.join(parts)}"
        for verb, parts in (("SET", set_parts), ("REMOVE", remove_parts), ("ADD", add_parts))
        if parts
    ]
    return {
        "Key": key,
        "UpdateExpression": " ".join(clauses),
        **({"ConditionExpression": condition} if condition else {}),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        **extra,
    }


class DynamoBackfillJobs:
    """``crr.ports.table.BackfillJobs`` over DynamoDB (the rules table)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = client
        self._table = table_name
        self._clock = clock
        self._pause = pause

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
        return self._with_tallies(_job_from(found["Item"])) if "Item" in found else None

    def _with_tallies(self, job: BackfillJob) -> BackfillJob:
        """``job`` with its worker slots' tallies added to its counts (see the module's docstring)."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :tallies)",
            "ExpressionAttributeValues": {
                ":pk": to_value(rule_pk(job.rule_id)),
                ":tallies": to_value(backfill_tallies_prefix(job.job_id)),
            },
            "ConsistentRead": True,
        }
        sums: dict[str, float] = dict.fromkeys(_TALLIED, 0)
        updated_at = job.updated_at
        while True:
            try:
                page = self._db.query(**arguments)
            except ClientError as exc:
                raise state_error(exc, "Query") from exc
            for raw in page.get("Items", []):
                item = {name: from_value(value) for name, value in raw.items()}
                for name in _TALLIED:
                    sums[name] += float(item.get(name, 0))
                if item.get("updated_at"):
                    updated_at = max(updated_at, datetime.fromisoformat(str(item["updated_at"])))
            if "LastEvaluatedKey" not in page:
                break
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if not any(sums.values()):
            return job
        return job.model_copy(
            update={
                "totals": job.totals.plus(PageCounts(**{name: int(sums[name]) for name in _COUNTERS})),
                "pages": job.pages + int(sums["pages"]),
                "counted": job.counted + int(sums["counted"]),
                "counted_bytes": job.counted_bytes + int(sums["counted_bytes"]),
                "active_seconds": job.active_seconds + sums["active_seconds"],
                "updated_at": updated_at,
            }
        )

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        """Raises BackfillJobNotFoundError, StateStoreError."""
        job = self.find(rule_id, job_id)
        if job is None:
            raise BackfillJobNotFoundError(rule_id, job_id)
        return job

    def latest(self, rule_id: str) -> BackfillJob | None:
        """The newest job of the rule, or None: the last backfill sort key names it (a Query of one key),
        then its item is read."""
        try:
            found = self._db.query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :jobs)",
                ExpressionAttributeValues={":pk": to_value(rule_pk(rule_id)), ":jobs": to_value(BACKFILL_SK_PREFIX)},
                ProjectionExpression="sk",
                ScanIndexForward=False,
                Limit=1,
            )
        except ClientError as exc:
            raise state_error(exc, "Query") from exc
        items = found.get("Items", [])
        if not items:
            return None
        return self.find(rule_id, backfill_job_of(str(from_value(items[0]["sk"]))))

    def add_ranges(self, rule_id: str, job_id: str, ranges: Sequence[BackfillRange]) -> BackfillJob:
        """One transaction when the ranges fit (with the job's counters); beyond that the ranges are put
        first (then they are one per prefix, the same on every try, so a retry rewrites them alike) and
        the counters last. Raises BackfillJobNotFoundError, StateStoreError."""
        counters = _update(
            self._key(rule_id, job_id),
            {
                "ranges_made": len(ranges),
                "ranges_open": sum(not item.done for item in ranges),
                "ranges_uncounted": sum(not item.count_complete for item in ranges),
                "updated_at": _iso(self._clock()),
            },
            {},
            "attribute_exists(pk) AND (attribute_not_exists(#made) OR #made = :zero)",
            names={"#made": "ranges_made"},
            values={":zero": 0},
        )
        if len(ranges) < MAX_TRANSACTION_ITEMS:
            puts = [{"Put": {"TableName": self._table, "Item": _range_item(item)}} for item in ranges]
            try:
                self._db.transact_write_items(
                    TransactItems=[*puts, {"Update": {"TableName": self._table, **counters}}]  # type: ignore[list-item, typeddict-item]
                )
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise state_error(exc, "TransactWriteItems") from exc
            return self.get(rule_id, job_id)
        for item in ranges:
            try:
                self._db.put_item(TableName=self._table, Item=_range_item(item))
            except ClientError as exc:
                raise state_error(exc, "PutItem") from exc
        try:
            self._db.update_item(TableName=self._table, **counters)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise state_error(exc, "UpdateItem") from exc
        return self.get(rule_id, job_id)

    def ranges(self, rule_id: str, job_id: str, *, open_only: bool = False) -> list[BackfillRange]:
        """The job's ranges (one Query, paged), in range id order: only open ones are stored, since a range
        is deleted with its final page (``open_only`` drops done ones a job stored before that)."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :ranges)",
            "ExpressionAttributeValues": {
                ":pk": to_value(rule_pk(rule_id)),
                ":ranges": to_value(backfill_ranges_prefix(job_id)),
            },
            "ConsistentRead": True,
        }
        if open_only:
            arguments["FilterExpression"] = "#done = :false"
            arguments["ExpressionAttributeNames"] = {"#done": "done"}
            arguments["ExpressionAttributeValues"][":false"] = to_value(False)
        found: list[BackfillRange] = []
        while True:
            try:
                page = self._db.query(**arguments)
            except ClientError as exc:
                raise state_error(exc, "Query") from exc
            found.extend(_range_from(raw) for raw in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim(
        self, rule_id: str, job_id: str, range_id: str, worker: str, expected: str | None
    ) -> BackfillRange | None:
        """One conditional UpdateItem. Raises StateStoreError."""
        held = "attribute_not_exists(#claim)" if expected is None else "#claim = :expected"
        update = _update(
            self._range_key(rule_id, job_id, range_id),
            {"claim": worker},
            {},
            f"attribute_exists(pk) AND #done = :false AND {held}",
            names={"#done": "done"} | ({"#claim": "claim"}),
            values={":false": False} | ({":expected": expected} if expected is not None else {}),
            ReturnValues="ALL_NEW",
        )
        try:
            updated = self._db.update_item(TableName=self._table, **update)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise state_error(exc, "UpdateItem") from exc
        return _range_from(updated["Attributes"])

    def record_page(self, page: RangePage) -> BackfillRange:
        """See the module's docstring. Raises BackfillJobConflictError, StateStoreError."""
        now = _iso(self._clock())
        counts = {name: getattr(page.counts, name) for name in _COUNTERS}
        deltas = {
            **counts,
            "counted": page.counted,
            "counted_bytes": page.counted_bytes,
            "active_seconds": page.elapsed_seconds,
        }
        held_names = {"#pages": "pages", "#claim": "claim"}
        held_values = {":previous": page.sequence - 1, ":worker": page.worker}
        range_update = _update(
            self._range_key(page.rule_id, page.job_id, page.range_id),
            {
                "until": page.until,
                "cursor": page.cursor,
                "count_cursor": page.count_cursor,
                "count_complete": page.count_complete,
                "done": page.done,
                "pages": page.sequence,
                "row": page.row,
            },
            deltas,
            _RANGE_HELD,
            names=held_names,
            values=held_values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        range_write: dict[str, Any] = {"Update": {"TableName": self._table, **range_update}}
        if page.done:
            # The final page deletes the range (see the module's docstring), on the same condition; a Delete
            # takes only the names and values its condition uses (DynamoDB refuses unused ones).
            range_write = {
                "Delete": {
                    "TableName": self._table,
                    "Key": range_update["Key"],
                    "ConditionExpression": _RANGE_HELD,
                    "ExpressionAttributeNames": held_names,
                    "ExpressionAttributeValues": {name: to_value(value) for name, value in held_values.items()},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        tally_update = _update(
            {
                "pk": to_value(rule_pk(page.rule_id)),
                "sk": to_value(backfill_tally_sk(page.job_id, worker_index(page.worker))),
            },
            {"updated_at": now},
            {**deltas, "pages": 1},
            "",
        )
        job_adds = {
            name: change
            for name, change in (
                ("ranges_made", len(page.new_ranges)),
                ("ranges_open", page.opened),
                ("ranges_uncounted", page.uncounted),
            )
            if change
        }
        job_updates: list[dict[str, Any]] = []
        if job_adds:
            job_update = _update(
                self._key(page.rule_id, page.job_id),
                {"updated_at": now},
                job_adds,
                "attribute_exists(pk)",
            )
            job_updates.append({"Update": {"TableName": self._table, **job_update}})
        items: list[dict[str, Any]] = [
            range_write,
            {"Update": {"TableName": self._table, **tally_update}},
            *job_updates,
            *(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _range_item(new),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
                for new in page.new_ranges
            ),
        ]
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                self._db.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            except ClientError as exc:
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                codes = [str(reason.get("Code", "None")) for reason in reasons]
                if error_code(exc) == "TransactionCanceledException" and "ConditionalCheckFailed" in codes:
                    return self._not_recorded(page, codes, reasons, job_in_transaction=bool(job_updates))
                conflict = error_code(exc) == "TransactionConflictException" or "TransactionConflict" in codes
                if conflict and attempt < TRANSACTION_ATTEMPTS:
                    self._pause(random.uniform(0.01, 0.05) * attempt)
                    continue
                raise state_error(exc, "TransactWriteItems") from exc
            break
        if page.done:
            return page.final_range()
        # The transaction answers nothing: the range as written is read back (its bounds and totals whole).
        stored = self._range(page.rule_id, page.job_id, page.range_id)
        if stored is None:
            raise BackfillJobConflictError(f"backfill {page.job_id} has no range {page.range_id}")
        return stored

    def _not_recorded(
        self, page: RangePage, codes: list[str], reasons: list[Any], *, job_in_transaction: bool
    ) -> BackfillRange:
        if codes[0] == "ConditionalCheckFailed":
            old = reasons[0].get("Item")
            stored = _range_from(old) if old else self._range(page.rule_id, page.job_id, page.range_id)
            if stored is None:
                # Gone: a range is deleted only with its final page, so this step was recorded already.
                return page.final_range()
            if stored.pages >= page.sequence or stored.claim != page.worker:
                # A retried step (the page counted once already), or the range is another worker's now.
                return stored
            raise BackfillJobConflictError(
                f"backfill {page.job_id}, range {page.range_id}: page {page.sequence} of {page.worker} arrived, "
                f"but {stored.pages} page(s) are recorded and {stored.claim or 'no worker'} holds it"
            )
        # The items are the range, the tally (no condition), then the job when its counters change.
        if job_in_transaction and codes[2] == "ConditionalCheckFailed":
            job = self.get(page.rule_id, page.job_id)
            raise BackfillJobConflictError(
                f"backfill {job.job_id} of rule {job.rule_id} is {job.status.value}: page {page.sequence} of range "
                f"{page.range_id} was not recorded (resume the job to go on)"
            )
        raise BackfillJobConflictError(
            f"backfill {page.job_id}, range {page.range_id}: a range split off page {page.sequence} exists already"
        )

    def _range(self, rule_id: str, job_id: str, range_id: str) -> BackfillRange | None:
        try:
            found = self._db.get_item(
                TableName=self._table, Key=self._range_key(rule_id, job_id, range_id), ConsistentRead=True
            )
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        return _range_from(found["Item"]) if "Item" in found else None

    def release(self, rule_id: str, job_id: str, worker: str) -> int:
        """Each range ``worker`` holds: its claim removed, on the condition it still holds it."""
        released = 0
        for item in self.ranges(rule_id, job_id):
            if item.claim != worker:
                continue
            update = _update(
                self._range_key(rule_id, job_id, item.range_id),
                {"claim": None},
                {},
                "#claim = :worker",
                names={"#claim": "claim"},
                values={":worker": worker},
            )
            try:
                self._db.update_item(TableName=self._table, **update)
                released += 1
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise state_error(exc, "UpdateItem") from exc
        return released

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        """Succeeded once every range is done. Raises BackfillJobConflictError while ranges are open."""
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.SUCCEEDED,
            {"finished_at": _iso(at), "updated_at": _iso(at), "failure_reason": None},
            condition="#made > :zero AND #open = :zero AND #status <> :status",
            names={"#made": "ranges_made", "#open": "ranges_open"},
            values={":zero": 0},
        )

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob:
        """Failed with ``reason`` (a failed job can be resumed). Raises BackfillJobConflictError once succeeded."""
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.FAILED,
            {
                "failure_reason": reason[:MAX_FAILURE_REASON_CHARS] or "-",
                "finished_at": _iso(at),
                "updated_at": _iso(at),
            },
            condition="#status <> :succeeded",
            values={":succeeded": BackfillStatus.SUCCEEDED.value},
        )

    def set_execution(
        self, rule_id: str, job_id: str, execution_arn: str, at: datetime, *, workers: int | None = None
    ) -> BackfillJob:
        """The execution now running the job (a fresh one after continue-as-new or a resume): the job is
        running again, with ``workers`` its fan-out when given. Raises BackfillJobConflictError once
        succeeded."""
        sets: dict[str, Any] = {
            "execution_arn": execution_arn,
            "updated_at": _iso(at),
            "failure_reason": None,
            "finished_at": None,
        }
        if workers is not None:
            sets["workers"] = workers
        return self._set_status(
            rule_id,
            job_id,
            BackfillStatus.RUNNING,
            sets,
            condition="#status <> :succeeded",
            values={":succeeded": BackfillStatus.SUCCEEDED.value},
        )

    def _set_status(
        self,
        rule_id: str,
        job_id: str,
        status: BackfillStatus,
        sets: dict[str, Any],
        *,
        condition: str,
        names: dict[str, str] | None = None,
        values: dict[str, Any],
    ) -> BackfillJob:
        update = _update(
            self._key(rule_id, job_id),
            {"status": status.value, **sets},
            {},
            f"attribute_exists(pk) AND {condition}",
            names={"#status": "status", **(names or {})},
            values=({":status": status.value} if ":status" in condition else {}) | values,
            ReturnValues="ALL_NEW",
        )
        try:
            updated = self._db.update_item(TableName=self._table, **update)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise state_error(exc, "UpdateItem") from exc
            job = self.get(rule_id, job_id)
            if job.status is status:
                return job  # asked twice: already so
            raise BackfillJobConflictError(
                f"backfill {job_id} of rule {rule_id} cannot become {status.value}: it is {job.status.value}"
                + ("" if job.done else f", with {job.ranges_open} range(s) open")
            ) from exc
        return self._with_tallies(_job_from(updated["Attributes"]))

    def _key(self, rule_id: str, job_id: str) -> dict[str, Any]:
        return {"pk": to_value(rule_pk(rule_id)), "sk": to_value(backfill_sk(job_id))}

    def _range_key(self, rule_id: str, job_id: str, range_id: str) -> dict[str, Any]:
        return {"pk": to_value(rule_pk(rule_id)), "sk": to_value(backfill_range_sk(job_id, range_id))}
