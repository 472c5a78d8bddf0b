"""The whole backfill on the embedded local cloud: the real template, the real ASL run by the local Step
Functions interpreter, its Lambda steps on the local workers, started and followed like the CLI does.

Writes N objects of 1 KiB under 50 prefixes into a source bucket, adds a rule, starts its backfill and
follows the job to its end; prints objects per second (job time, from the start to the last page), the
pages, executions and Lambda steps, and the requests made per object, counted where they arrive (the
local cloud's server side; the benchmark's own writes and reads are not counted).

    python -m bench.backfill_workflow [--objects 2000] [--page-size 1000]

The figures are the emulator's on this machine (moto is a single-threaded Python server shared by
S3, SQS and Step Functions), not AWS's: they show what a page costs, not how fast S3 copies.
Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crr.adapters.dynamodb import DynamoBackfillJobs, DynamoRules
from crr.adapters.stepfunctions import StepFunctionsExecutions
from crr.backfill.models import BackfillJob, BackfillStatus
from crr.backfill.workflow import BackfillControl
from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket, run_cli

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION, STACK = "crr-bench-bf-source", "crr-bench-bf-replica", "crr-bench-bf"
TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
PREFIXES = 50


def seed(cloud: LocalCloud, objects: int) -> None:
    s3 = cloud.client("s3", SOURCE_REGION)
    body = b"x" * 1024
    keys = [f"p{n % PREFIXES:02d}/object-{n:07d}" for n in range(objects)]
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


def run(objects: int, page_size: int, timeout_s: float) -> int:
    with LocalCloud() as cloud:
        cloud.start()
        stack = cloud.deploy(
            TEMPLATE, STACK, SOURCE_REGION, {"SourceBuckets": SOURCE, "DestinationBuckets": DESTINATION}
        )
        create_bucket(cloud.client("s3", SOURCE_REGION), SOURCE, SOURCE_REGION, versioned=True)
        create_bucket(cloud.client("s3", DESTINATION_REGION), DESTINATION, DESTINATION_REGION)
        seed(cloud, objects)
        if run_cli(cloud, STACK, SOURCE_REGION, ["rules", "add", "--source", SOURCE, "--destination", DESTINATION]):
            return 1
        dynamodb = cloud.client("dynamodb", SOURCE_REGION)
        table = stack.outputs["RulesTableName"]
        machine = stack.state_machine("BackfillStateMachine").arn
        control = BackfillControl(
            DynamoBackfillJobs(dynamodb, table),
            DynamoRules(dynamodb, table, cache_seconds=0),
            StepFunctionsExecutions(cloud.client("stepfunctions", SOURCE_REGION), machine),
        )
        cloud.request_counts(reset=True)
        started = time.monotonic()
        control.start(SOURCE, page_size=page_size)
        job = follow(control, SOURCE, timeout_s)
        elapsed = time.monotonic() - started
        counts = Counter(cloud.request_counts())
        executions = cloud.client("stepfunctions", SOURCE_REGION).list_executions(stateMachineArn=machine)
        report(objects, page_size, job, elapsed=elapsed, counts=counts, runs=len(executions["executions"]))
    return 0 if job.status is BackfillStatus.SUCCEEDED else 1


def report(objects: int, page_size: int, job: BackfillJob, *, elapsed: float, counts: Counter[str], runs: int) -> None:
    s3 = {name.split(":", 1)[1]: count for name, count in counts.items() if name.startswith("s3:")}
    dynamodb = {name.split(":", 1)[1]: count for name, count in counts.items() if name.startswith("dynamodb:")}
    totals = job.totals
    print(f"backfill of {objects} objects of 1 KiB under {PREFIXES} prefixes, pages of {page_size}, local cloud")
    print(
        f"  job {job.status.value}: {job.pages} pages in {runs} execution(s); listed {totals.listed}, copied "
        f"{totals.copied}, skipped {totals.skipped}, superseded {totals.superseded}, failed {totals.failed}"
    )
    print(
        f"  {elapsed:.1f}s from start to the job's end: {totals.listed / elapsed:.0f} objects/s "
        f"({job.active_seconds:.1f}s inside the page steps: {totals.listed / max(job.active_seconds, 1e-9):.0f}/s)"
    )
    per_object = sum(s3.values()) / max(totals.listed, 1)
    print(f"  S3 requests: {sum(s3.values())} = {per_object:.3f} per object  {dict(sorted(s3.items()))}")
    print(
        f"  DynamoDB requests: {sum(dynamodb.values())} = {sum(dynamodb.values()) / max(totals.listed, 1):.3f} per "
        f"object  {dict(sorted(dynamodb.items()))}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    arguments = parser.parse_args()
    return run(arguments.objects, arguments.page_size, arguments.timeout)


if __name__ == "__main__":
    sys.exit(main())
