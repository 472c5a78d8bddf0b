"""Backfill end to end on the local cloud: the real backfill ASL run by the local Step Functions
interpreter (an inline Map of range workers), its Lambda tasks by the local workers, started and
followed with the CLI.

Pages are small (a few keys) so a few dozen objects make many pages, and workers hand over to a fresh
execution after a few steps, so continue-as-new runs here as it does every thousand pages on AWS. The
fan-out test runs a job of 8 ranges over thousands of objects under the latency model, in a local
cloud of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from crr.adapters.dynamodb import DynamoBackfillJobs
from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.localcloud.lambda_.latency import LatencyModel
from crr_cli.localcloud.scenario import run_cli
from crr_cli.snapshot import compare, list_keys, snapshot
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-backfill"
PAIRS = {
    "pages": ("bf-src-pages", "bf-dst-pages"),
    "resume": ("bf-src-resume", "bf-dst-resume"),
    "race": ("bf-src-race", "bf-dst-race"),
    "stop": ("bf-src-stop", "bf-dst-stop"),
}
FANOUT_STACK = "crr-backfill-fanout"
FANOUT = ("bf-src-fanout", "bf-dst-fanout")


@dataclass(frozen=True)
class BackfillStack:
    cloud: LocalCloud
    stack: DeployedStack
    name: str
    faults: Path

    def crr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli.run_crr(self.cloud, self.name, WEST, *args)

    def inject(self, **settings: Any) -> None:
        self.faults.write_text(json.dumps(settings), encoding="utf-8")

    def pages(self, rule: str) -> int:
        """Pages the rule's newest job recorded, read straight from the table (polling through the CLI's
        process start would be too slow to catch a job in the act)."""
        jobs = DynamoBackfillJobs(self.cloud.client("dynamodb", WEST), self.stack.outputs["RulesTableName"])
        job = jobs.latest(rule)
        return job.pages if job is not None else 0

    def executions(self, job_id: str) -> list[dict[str, Any]]:
        """The job's executions, oldest first (the first, and each continue-as-new)."""
        machine = self.stack.state_machine("BackfillStateMachine").arn
        found: list[dict[str, Any]] = self.cloud.client("stepfunctions", WEST).list_executions(stateMachineArn=machine)[
            "executions"
        ]
        return sorted((e for e in found if e["name"].startswith(job_id)), key=lambda e: e["startDate"])

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.cloud.client("stepfunctions", WEST)
        pages = sfn.get_paginator("get_execution_history").paginate(
            executionArn=execution_arn, PaginationConfig={"PageSize": 1000}
        )
        return [event for page in pages for event in page["events"]]


@pytest.fixture(scope="module")
def backfill(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> BackfillStack:
    faults = tmp_path_factory.mktemp("backfill") / "faults.json"
    stack = cli.deploy_pairs_with_faults(local_cloud, STACK, PAIRS.values(), faults, MaximumConcurrency="2")
    return BackfillStack(local_cloud, stack, STACK, faults)


@pytest.fixture(scope="module")
def slow_backfill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackfillStack]:
    """A local cloud of its own with the latency model on (10 ms in a region, 60 ms across, as
    tests/integration/test_latency.py), so a page step waits on the network as a Lambda does on AWS."""
    state_dir = tmp_path_factory.mktemp("backfill-latency-cloud")
    faults = state_dir / "faults.json"
    with LocalCloud(state_dir=state_dir, latency=LatencyModel(same_region_ms=10, cross_region_ms=60)) as cloud:
        cloud.start()
        stack = cli.deploy_pairs_with_faults(
            cloud, FANOUT_STACK, [FANOUT], faults, MaximumConcurrency="2", BackfillConcurrency="8"
        )
        yield BackfillStack(cloud, stack, FANOUT_STACK, faults)


def put_objects(s3: Any, bucket: str, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=f"body of {key}".encode(),
            ContentType="text/plain",
            Metadata={"origin": "before-the-rule"},
            Tagging="era=old",
        )


def put_kibibytes(s3: Any, bucket: str, keys: list[str]) -> None:
    """1 KiB objects, written 8 at a time (thousands of them take seconds, not minutes)."""
    body = b"k" * 1024
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=body), keys))


def listing(s3: Any, bucket: str) -> dict[str, tuple[str, int]]:
    """Every key with its ETag and size, from ListObjectsV2 (a snapshot's HEAD per key is too slow for thousands)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: (item["ETag"], item["Size"]) for page in pages for item in page.get("Contents", [])}


def status_in_process(backfill: BackfillStack, rule: str, *options: str) -> dict[str, Any]:
    """`crr backfill status RULE --json` run in this process: what the CLI shows, without a process start
    per poll (a few seconds of CPU each on a loaded machine, taken from the job under test)."""
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        assert run_cli(backfill.cloud, backfill.name, WEST, ["backfill", "status", rule, "--json", *options]) == 0
    job: dict[str, Any] = json.loads(shown.getvalue())
    return job


def job_of(backfill: BackfillStack, rule: str, *options: str) -> dict[str, Any]:
    shown = backfill.crr("backfill", "status", rule, "--json", *options)
    assert shown.returncode == 0, shown.stderr
    job: dict[str, Any] = json.loads(shown.stdout)
    return job


# A Lambda task's events, each with the field holding its details (and their resourceType).
TASK_EVENT_DETAILS = {
    "TaskScheduled": "taskScheduledEventDetails",
    "TaskSucceeded": "taskSucceededEventDetails",
    "TaskFailed": "taskFailedEventDetails",
    "TaskTimedOut": "taskTimedOutEventDetails",
}


def most_lambda_steps_at_once(events: list[dict[str, Any]]) -> int:
    """The most Lambda tasks an execution had in flight at once, from its history (events in the order
    they happened: a task is in flight from TaskScheduled to its TaskSucceeded, TaskFailed or TaskTimedOut)."""
    in_flight = most = 0
    for event in events:
        details = TASK_EVENT_DETAILS.get(event["type"])
        if details is None or event[details]["resourceType"] != "lambda":
            continue
        in_flight += 1 if event["type"] == "TaskScheduled" else -1
        most = max(most, in_flight)
    return most


def test_a_backfill_copies_what_predates_the_rule_page_by_page_across_executions(backfill: BackfillStack) -> None:
    source, destination = PAIRS["pages"]
    west, east = backfill.cloud.client("s3", WEST), backfill.cloud.client("s3", EAST)
    # Given objects written before the rule: 20 under a/, 12 under b/, 6 under c/ (outside the rule's
    # prefixes), and 4 of a/ already identical at the destination
    inside = [f"a/{n:02d} x+y.txt" for n in range(20)] + [f"b/ü/{n:02d}" for n in range(12)]
    put_objects(west, source, [*inside, *(f"c/{n}" for n in range(6))])
    put_objects(east, destination, inside[:4])
    added = backfill.crr(
        "rules", "add", "--source", source, "--destination", destination, "--id", "pages", "--prefix", "a/",
        "--prefix", "b/",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # When its backfill runs 2 ranges at once in pages of 5 keys, each worker handing over after 3
    # steps, followed to the end
    done = backfill.crr(
        "backfill", "start", "pages", "--wait", "--ranges", "2", "--page-size", "5", "--steps-per-worker", "3"
    )
    # Then it succeeded and the destination holds every object under the prefixes, with its metadata and
    # tags, and nothing outside them
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100.0%" in done.stdout
    difference = compare(snapshot(west, source, prefix="a/"), snapshot(east, destination, prefix="a/"))
    assert difference.equal, difference
    assert compare(snapshot(west, source, prefix="b/"), snapshot(east, destination, prefix="b/")).equal
    assert list_keys(east, destination, prefix="c/") == []
    # And the job counted 32 objects, each once: 28 copied, 4 skipped as identical, in at least the 7
    # pages of 5 the two prefixes take
    job = job_of(backfill, "pages", "--ranges")
    assert (job["status"], job["ranges_open"]) == ("succeeded", 0)
    totals = job["totals"]
    assert (totals["listed"], totals["copied"], totals["skipped"], totals["failed"]) == (32, 28, 4, 0)
    assert job["pages"] >= 7
    # And every range, done, is gone from the store (a claim reads open ranges only); the job keeps the counts
    assert job["ranges"] == []
    assert job["ranges_made"] >= 2
    assert job["progress"]["percent"] == 100.0
    # And the job ran in several executions, each handing the open ranges to a fresh one
    executions = backfill.executions(job["job_id"])
    assert len(executions) >= 2
    assert [execution["status"] for execution in executions] == ["SUCCEEDED"] * len(executions)
    assert [execution["name"] for execution in executions] == [
        f"{job['job_id']}-r{round_}" for round_ in range(1, len(executions) + 1)
    ]
    # And crr status shows the rule's backfill as done
    status = backfill.crr("status", "pages", "--json")
    assert status.returncode == 0, status.stderr
    [rule] = json.loads(status.stdout)["rules"]
    assert rule["backfill"]["status"] == "succeeded"
    assert rule["backfill"]["percent_complete"] == 100.0


def test_a_failed_backfill_resumes_every_range_from_its_last_recorded_page(backfill: BackfillStack) -> None:
    source, destination = PAIRS["resume"]
    west, east = backfill.cloud.client("s3", WEST), backfill.cloud.client("s3", EAST)
    # Given 15 objects under a/ and 10 under b/, and a destination that refuses listings of b/
    put_objects(west, source, [f"a/{n:02d}" for n in range(15)] + [f"b/{n:02d}" for n in range(10)])
    added = backfill.crr(
        "rules", "add", "--source", source, "--destination", destination, "--id", "resume", "--prefix", "a/",
        "--prefix", "b/",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    backfill.inject(
        mode="outage", buckets=[destination], operations=["ListObjectsV2"], prefixes=["b/"], code="AccessDenied"
    )
    # When the backfill runs (pages of 5, 2 ranges at once: b/'s first page is refused)
    failed = backfill.crr("backfill", "start", "resume", "--wait", "--ranges", "2", "--page-size", "5")
    # Then the job failed with the reason, and nothing of b/ was copied
    assert failed.returncode == 1
    job = job_of(backfill, "resume", "--ranges")
    assert job["status"] == "failed"
    assert "AccessDenied" in job["failure_reason"]
    assert list_keys(east, destination, prefix="b/") == []
    assert [item["pages"] for item in job["ranges"] if item["prefix"] == "b/"] == [0]
    # And when the listing is allowed again and the backfill is started again, it resumes
    backfill.inject(mode="none")
    resumed = backfill.crr("backfill", "start", "resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stdout
    job = job_of(backfill, "resume", "--ranges")
    # Then every range went on from its own cursor: no object was listed twice (a range started over
    # would list its keys again), everything arrived (a page copied but not recorded when the job failed
    # is skipped), and every range is done (so gone from the store)
    assert (job["status"], job["totals"]["listed"], job["ranges"]) == ("succeeded", 25, [])
    assert job["totals"]["copied"] + job["totals"]["skipped"] == 25
    assert compare(snapshot(west, source), snapshot(east, destination)).equal


def test_live_writes_and_deletes_racing_the_backfill_win(
    backfill: BackfillStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["race"]
    west, east = backfill.cloud.client("s3", WEST), backfill.cloud.client("s3", EAST)
    # Given 300 objects written before the rule, and its backfill running 4 ranges at once in pages of 10
    keys = [f"k/{n:03d}" for n in range(300)]
    put_objects(west, source, keys)
    added = backfill.crr("rules", "add", "--source", source, "--destination", destination, "--id", "race")
    assert added.returncode == 0, added.stderr
    started = backfill.crr("backfill", "start", "race", "--ranges", "4", "--page-size", "10")
    assert started.returncode == 0, started.stderr
    eventually(lambda: backfill.pages("race") >= 1, timeout=30, what="the first page")
    # When, while it runs, users overwrite 75 keys and delete 75, from the end of the listing backwards
    # (so the last ones change before the backfill reaches them, and the first ones after)
    for overwritten, deleted in zip(reversed(keys[::4]), reversed(keys[1::4]), strict=True):
        west.put_object(Bucket=source, Key=overwritten, Body=b"newer, written live", Metadata={"origin": "live"})
        west.delete_object(Bucket=source, Key=deleted)
    # Then once both are done, the destination equals the source: no newer write was overwritten by an
    # older copy, and no deleted object was brought back
    eventually(lambda: job_of(backfill, "race")["status"] == "succeeded", timeout=60, what="the backfill")
    difference = eventually(
        lambda: (found := compare(snapshot(west, source), snapshot(east, destination))).equal and found,
        timeout=60,
        what="the replica to equal the source",
    )
    assert difference.equal
    assert east.get_object(Bucket=destination, Key=keys[-4])["Body"].read() == b"newer, written live"
    assert keys[-3] not in list_keys(east, destination)
    # And the race really happened: keys deleted after the job began were never listed by it
    assert job_of(backfill, "race")["totals"]["listed"] < 300


def test_a_stopped_backfill_resumes_every_range_from_its_own_cursor_with_another_fan_out(
    backfill: BackfillStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["stop"]
    west, east = backfill.cloud.client("s3", WEST), backfill.cloud.client("s3", EAST)
    # Given 360 objects under three prefixes and a backfill of 4 ranges at once in pages of 10 (36
    # pages or more: enough to stop it after a few)
    keys = [f"{prefix}/{n:03d}" for prefix in ("s", "t", "u") for n in range(120)]
    put_kibibytes(west, source, keys)
    added = backfill.crr("rules", "add", "--source", source, "--destination", destination, "--id", "stop")
    assert added.returncode == 0, added.stderr
    started = backfill.crr("backfill", "start", "stop", "--ranges", "4", "--page-size", "10", "--json")
    assert started.returncode == 0, started.stderr
    execution = json.loads(started.stdout)["execution_arn"]
    # When its execution is stopped after a few pages (an operator, or a deployment)
    eventually(lambda: backfill.pages("stop") >= 6, timeout=60, what="six pages")
    sfn = backfill.cloud.client("stepfunctions", WEST)
    sfn.stop_execution(executionArn=execution)
    status = eventually(
        lambda: (found := sfn.describe_execution(executionArn=execution)["status"]) != "RUNNING" and found,
        timeout=30,
        what="the stop",
    )
    # Then the execution was aborted and the job, still running, kept every range where it stood
    assert status == "ABORTED"
    stopped = job_of(backfill, "stop", "--ranges")
    assert stopped["status"] == "running"
    assert stopped["totals"]["listed"] < len(keys)
    stood = {item["range_id"]: item for item in stopped["ranges"]}
    assert len(stood) == stopped["ranges_open"] >= 1  # the open ones: a done range is gone
    # And started again with 6 ranges at once, it resumes rather than starting over
    resumed = backfill.crr("backfill", "start", "stop", "--ranges", "6", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stdout
    job = job_of(backfill, "stop", "--ranges")
    assert (job["job_id"], job["workers"]) == (stopped["job_id"], 6)
    # Then it ends with every object listed once (a range started over, or a page recorded twice, would
    # list keys again), so each range went on from its own cursor; done, the ranges are gone from the store
    assert (job["status"], job["totals"]["listed"], job["ranges"]) == ("succeeded", len(keys), [])
    assert job["totals"]["copied"] + job["totals"]["skipped"] == len(keys)
    assert job["pages"] >= sum(item["pages"] for item in stood.values())
    assert listing(west, source) == listing(east, destination)


def test_a_job_fans_out_over_ranges_split_while_it_runs_and_copies_every_object_once(
    slow_backfill: BackfillStack,
) -> None:
    source, destination = FANOUT
    west, east = slow_backfill.cloud.client("s3", WEST), slow_backfill.cloud.client("s3", EAST)
    # Given 3,000 objects of 1 KiB written before the rule: 2,400 under one hot prefix, 200 under each
    # of three others
    keys = [f"hot/{n:05d}" for n in range(2400)] + [f"{prefix}/{n:03d}" for prefix in "abc" for n in range(200)]
    put_kibibytes(west, source, keys)
    added = slow_backfill.crr(
        "rules", "add", "--source", source, "--destination", destination, "--id", "fanout",
        "--prefix", "hot/", "--prefix", "a/", "--prefix", "b/", "--prefix", "c/",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # When its backfill runs 8 ranges at once in pages of 100, under the latency model, while an operator
    # polls `crr backfill status`
    started = slow_backfill.crr("backfill", "start", "fanout", "--ranges", "8", "--page-size", "100")
    assert started.returncode == 0, started.stderr
    observed = [status_in_process(slow_backfill, "fanout", "--ranges")]
    deadline = time.monotonic() + 150
    while observed[-1]["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)  # the polling interval
        observed.append(status_in_process(slow_backfill, "fanout", "--ranges"))
    # Then it succeeded, over at least 8 ranges, the hot prefix split into several (seen open while it ran:
    # a done range is gone from the store)
    job = job_of(slow_backfill, "fanout", "--ranges")
    assert job["status"] == "succeeded", job["failure_reason"]
    assert (job["ranges_made"] >= 8, job["ranges"]) == (True, [])
    hot = {item["range_id"] for shown in observed for item in shown["ranges"] if item["prefix"] == "hot/"}
    assert len(hot) >= 2
    # And every object arrived, and each was listed once: 3,000 listed and copied
    assert listing(west, source) == listing(east, destination)
    totals = job["totals"]
    assert (totals["listed"], totals["copied"], totals["failed"]) == (3000, 3000, 0)
    assert job["progress"]["percent"] == 100.0
    # And ranges were copied at once: the executions had several page steps in flight together
    executions = slow_backfill.executions(job["job_id"])
    assert max(most_lambda_steps_at_once(slow_backfill.history(e["executionArn"])) for e in executions) >= 2
    # And the status polled while it ran never went backwards
    assert sum(shown["status"] == "running" for shown in observed) >= 2
    for before, after in pairwise([*observed, job]):
        for counter in ("listed", "copied", "skipped", "superseded", "failed", "bytes_copied"):
            assert after["totals"][counter] >= before["totals"][counter], (counter, before, after)
        assert after["pages"] >= before["pages"]
        if before["progress"]["percent"] is not None:
            assert after["progress"]["percent"] is not None
            assert after["progress"]["percent"] >= before["progress"]["percent"]
        if not before["progress"]["done"]:  # done: every range recorded, the Finish step still to come
            assert before["progress"]["percent"] is None or before["progress"]["percent"] <= 99.9
