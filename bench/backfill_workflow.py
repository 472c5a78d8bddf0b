"""The whole backfill on the embedded local cloud: the real template, the real ASL run by the local Step
Functions interpreter, its Lambda steps on the local workers, started and followed like the CLI does.

Writes N objects of 1 KiB under P prefixes into a source bucket, adds a rule, starts its backfill fanned
out over R key ranges at once and follows the job to its end; prints objects per second (job time, from
the start to the last page), the ranges the job made, its pages, the executions (rounds of continue-as-new)
and their Lambda steps by state, and the requests made per object, counted where they arrive (the local
cloud's server side; the benchmark's own writes and reads are not counted).

    python -m bench.backfill_workflow [--objects 2000] [--page-size 1000] [--ranges 8] [--prefixes 50]
                                      [--latency 10,60] [--copy-threads 32]

With `--latency SAME,CROSS` the local cloud's latency model adds AWS's round trips (milliseconds, in a
region and across) to the functions' calls, so the figures show what fan-out buys when each step waits
on the network, as each Lambda does on AWS; `--prefixes 1` puts every object under one prefix, so the
job's ranges come from splitting alone. `--copy-threads` is the stack's BackfillConcurrency (copies in
flight per page step): on AWS each step has a Lambda of its own, here every step shares this machine's
cores and one moto server, so with the default 32 a few ranges already saturate the server and more
ranges only queue; a small pool per range (say 4) shows what fan-out buys when each range waits on
latency, as each Lambda does.

The figures are the emulator's on this machine (moto is a single-threaded Python server shared by
S3, SQS and Step Functions), not AWS's: they show what a page costs, not how fast S3 copies.
Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crr.adapters.dynamodb import DynamoBackfillJobs, DynamoRules
from crr.adapters.stepfunctions import StepFunctionsExecutions
from crr.backfill.models import BackfillJob, BackfillStatus
from crr.backfill.workflow import BackfillControl
from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_.latency import LatencyModel
from crr_cli.localcloud.scenario import create_bucket, run_cli

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION, STACK = "crr-bench-bf-source", "crr-bench-bf-replica", "crr-bench-bf"
TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def seed(cloud: LocalCloud, objects: int, prefixes: int) -> None:
    s3 = cloud.client("s3", SOURCE_REGION)
    body = b"x" * 1024
    keys = [f"p{n % prefixes:02d}/object-{n:07d}" for n in range(objects)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=SOURCE, Key=key, Body=body), keys))


def follow(control: BackfillControl, rule_id: str, timeout_s: float) -> BackfillJob:
    deadline = time.monotonic() + timeout_s
    while True:
        job = control.latest(rule_id)
        if job is not None and job.status is not BackfillStatus.RUNNING:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"the backfill did not end within {timeout_s:.0f}s: {job}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Settings:
    objects: int
    page_size: int
    ranges: int
    prefixes: int
    latency: LatencyModel | None
    copy_threads: int
    timeout_s: float


def run(settings: Settings) -> int:
    with LocalCloud(latency=settings.latency) as cloud:
        cloud.start()
        stack = cloud.deploy(
            TEMPLATE,
            STACK,
            SOURCE_REGION,
            {
                "SourceBuckets": SOURCE,
                "DestinationBuckets": DESTINATION,
                "BackfillMaxRanges": "40",
                "BackfillConcurrency": str(settings.copy_threads),
            },
        )
        create_bucket(cloud.client("s3", SOURCE_REGION), SOURCE, SOURCE_REGION, versioned=True)
        create_bucket(cloud.client("s3", DESTINATION_REGION), DESTINATION, DESTINATION_REGION)
        seed(cloud, settings.objects, settings.prefixes)
        if run_cli(cloud, STACK, SOURCE_REGION, ["rules", "add", "--source", SOURCE, "--destination", DESTINATION]):
            return 1
        dynamodb = cloud.client("dynamodb", SOURCE_REGION)
        table = stack.outputs["RulesTableName"]
        machine = stack.state_machine("BackfillStateMachine").arn
        jobs = DynamoBackfillJobs(dynamodb, table)
        control = BackfillControl(
            jobs,
            DynamoRules(dynamodb, table, cache_seconds=0),
            StepFunctionsExecutions(cloud.client("stepfunctions", SOURCE_REGION), machine),
        )
        cloud.request_counts(reset=True)
        started = time.monotonic()
        control.start(SOURCE, page_size=settings.page_size, workers=settings.ranges)
        job = follow(control, SOURCE, settings.timeout_s)
        elapsed = time.monotonic() - started
        counts = Counter(cloud.request_counts())
        sfn = cloud.client("stepfunctions", SOURCE_REGION)
        executions = [
            execution
            for execution in sfn.list_executions(stateMachineArn=machine)["executions"]
            if execution["name"].startswith(job.job_id)
        ]
        workflow = Workflow(
            ranges=len(jobs.ranges(job.rule_id, job.job_id)),
            executions=len(executions),
            steps=Counter(step for execution in executions for step in lambda_steps(sfn, execution["executionArn"])),
        )
        report(settings, job, workflow, elapsed=elapsed, counts=counts)
    return 0 if job.status is BackfillStatus.SUCCEEDED else 1


@dataclass(frozen=True)
class Workflow:
    ranges: int  # the job's ranges at its end: one per prefix, and those split off while it ran
    executions: int  # rounds: the first execution and each continue-as-new
    steps: Counter[str]  # Lambda task invocations by state (retries included)


def lambda_steps(sfn: Any, execution_arn: str) -> Iterator[str]:
    """The state name of every Lambda invocation in an execution's history, a retried task's every try
    (each event names the one before it in its iteration: a try leads back to its state's entry)."""
    previous: dict[int, int] = {}
    entered: dict[int, str] = {}
    scheduled: list[int] = []
    pages = sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn, PaginationConfig={"PageSize": 1000}
    )
    for page in pages:
        for event in page["events"]:
            previous[event["id"]] = event.get("previousEventId", 0)
            if event["type"] == "TaskStateEntered":
                entered[event["id"]] = event["stateEnteredEventDetails"]["name"]
            elif event["type"] == "TaskScheduled" and event["taskScheduledEventDetails"]["resourceType"] == "lambda":
                scheduled.append(event["id"])
    for try_id in scheduled:
        step = try_id
        while step and step not in entered:
            step = previous.get(step, 0)
        yield entered.get(step, "unknown")


def report(settings: Settings, job: BackfillJob, workflow: Workflow, *, elapsed: float, counts: Counter[str]) -> None:
    s3 = {name.split(":", 1)[1]: count for name, count in counts.items() if name.startswith("s3:")}
    dynamodb = {name.split(":", 1)[1]: count for name, count in counts.items() if name.startswith("dynamodb:")}
    totals = job.totals
    latency = (
        f"latency {settings.latency.same_region_ms:g} ms in a region, {settings.latency.cross_region_ms:g} ms across"
        if settings.latency
        else "no latency model"
    )
    print(
        f"backfill of {settings.objects} objects of 1 KiB under {settings.prefixes} prefixes, pages of "
        f"{settings.page_size}, {settings.ranges} ranges at once, {settings.copy_threads} copies in flight per "
        f"range, local cloud, {latency}"
    )
    print(
        f"  job {job.status.value}: {workflow.ranges} ranges, {job.pages} pages in {workflow.executions} execution(s)"
        f"; listed {totals.listed}, copied {totals.copied}, skipped {totals.skipped}, superseded "
        f"{totals.superseded}, failed {totals.failed}"
    )
    print(
        f"  {elapsed:.1f}s from start to the job's end: {totals.listed / elapsed:.0f} objects/s "
        f"({job.active_seconds:.1f}s inside the page steps, summed over the ranges)"
    )
    steps = workflow.steps
    print(f"  Lambda steps: {sum(steps.values())}  {dict(sorted(steps.items()))}")
    per_object = sum(s3.values()) / max(totals.listed, 1)
    print(f"  S3 requests: {sum(s3.values())} = {per_object:.3f} per object  {dict(sorted(s3.items()))}")
    print(
        f"  DynamoDB requests: {sum(dynamodb.values())} = {sum(dynamodb.values()) / max(totals.listed, 1):.3f} per "
        f"object  {dict(sorted(dynamodb.items()))}"
    )


def latency_model(text: str) -> LatencyModel | None:
    """`SAME,CROSS` in milliseconds; `0,0` (or `off`): no latency model."""
    if text == "off":
        return None
    same, cross = (float(part) for part in text.split(","))
    return LatencyModel(same_region_ms=same, cross_region_ms=cross) if same or cross else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--ranges", type=int, default=8, help="key ranges copied at once (the job's workers)")
    parser.add_argument("--prefixes", type=int, default=50, help="prefixes the objects are spread over")
    parser.add_argument("--latency", type=latency_model, default=None, help="SAME,CROSS round trips in ms")
    parser.add_argument("--copy-threads", type=int, default=32, help="copies in flight per page step")
    parser.add_argument("--timeout", type=float, default=600.0)
    arguments = parser.parse_args()
    return run(
        Settings(
            objects=arguments.objects,
            page_size=arguments.page_size,
            ranges=arguments.ranges,
            prefixes=arguments.prefixes,
            latency=arguments.latency,
            copy_threads=arguments.copy_threads,
            timeout_s=arguments.timeout,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
