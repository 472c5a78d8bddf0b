"""bench/scale.py's arithmetic: the cost model, the projection, what it reads from the template and the
state machine, and the last line it prints (the measurements themselves are stood in for)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import replicate, scale
from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^scale: backfill \d+\.\dx at 8 ranges, live \d+\.\dx per invocation, \d+\.\d\d USD per million objects$"
)


def test_s3_prices_requests_by_class() -> None:
    # Given the operations crr makes; When each is classed; Then reads are class B, writes and lists
    # class A, and deletes free (https://aws.amazon.com/s3/pricing/, "Requests & data retrievals").
    assert scale.s3_request_class("CopyObject") == "A"
    assert scale.s3_request_class("ListObjectsV2") == "A"
    assert scale.s3_request_class("UploadPartCopy") == "A"
    assert scale.s3_request_class("HeadObject") == "B"
    assert scale.s3_request_class("GetBucketOwnershipControls") == "B"
    assert scale.s3_request_class("DeleteObject") == "free"
    assert scale.s3_request_class("AbortMultipartUpload") == "free"


def test_s3_replication_costs_one_put_per_object_and_the_transfer() -> None:
    # Given S3 Replication's bill per million 1 KiB objects
    lines = scale.s3_replication_per_million()

    # Then it is a million PUTs at $0.005 per 1,000 plus 1 KiB x 1 M at $0.02 per GB
    assert lines["S3 PUT/COPY/LIST requests"] == pytest.approx(5.0)
    assert lines["inter-region transfer"] == pytest.approx(1024 * 1_000_000 / 2**30 * 0.02)
    assert sum(lines.values()) == pytest.approx(5.019, abs=0.001)


def test_a_live_copy_with_a_per_key_ledger_costs_over_six_dollars_before_any_read_or_compute() -> None:
    # Given the floor of a live copy that records its sequencer, per million 1 KiB objects
    lines = scale.ledger_floor_per_million()

    # Then it is S3 Replication's bill plus S3's SendMessage of each notification ($0.40 per million SQS
    # requests) and one on-demand DynamoDB write ($0.625 per million write units)
    beyond_s3_replication = sum(lines.values()) - sum(scale.s3_replication_per_million().values())
    assert beyond_s3_replication == pytest.approx(0.40 + 0.625)
    assert lines["SQS requests"] == pytest.approx(0.40)
    assert lines["DynamoDB writes"] == pytest.approx(0.625)
    # And that alone is over the $6 target
    assert sum(lines.values()) > scale.TARGET_LIVE_USD_PER_MILLION


def test_live_usage_prices_each_counted_request_and_the_measured_duration() -> None:
    # Given what one live object cost in a batch of 10: a HEAD, a copy, a free delete, a ledger write, a
    # transaction and a read, and 20 ms of a 512 MB arm64 function
    counted = {
        "s3:HeadObject": 1.0,
        "s3:CopyObject": 1.0,
        "s3:DeleteObject": 0.5,
        "dynamodb:PutItem": 1.0,
        "dynamodb:TransactWriteItems": 0.1,
        "dynamodb:GetItem": 1.0,
    }

    # When it is priced
    usage = scale.live_usage(counted, 20.0, batch=10, memory_mb=512, arm=True)
    lines = scale.cost_per_million(usage)

    # Then each line is the count per million at its list price
    assert usage.dynamodb_write_units == pytest.approx(1.2)  # a transaction bills two units per item
    assert lines["S3 PUT/COPY/LIST requests"] == pytest.approx(5.0)
    assert lines["S3 GET/HEAD requests"] == pytest.approx(0.4)
    assert lines["DynamoDB writes"] == pytest.approx(1.2 * 0.625)
    assert lines["DynamoDB reads"] == pytest.approx(0.125)
    # S3's SendMessage, then one receive and one delete per 10 messages
    assert lines["SQS requests"] == pytest.approx(1.2 * 0.40)
    assert lines["Lambda duration"] == pytest.approx(0.020 * 0.5 * 1_000_000 * 0.0000133334)
    assert lines["Lambda requests"] == pytest.approx(0.1 * 0.20)
    assert lines["Step Functions transitions"] == 0


def test_sqs_requests_per_object_fall_with_the_batch_until_the_ten_message_receive_limit() -> None:
    # Given batches of 1, 10 and 50; Then the event source receives and deletes at most 10 per call
    assert scale.sqs_requests_per_live_object(1) == pytest.approx(3.0)
    assert scale.sqs_requests_per_live_object(10) == pytest.approx(1.2)
    assert scale.sqs_requests_per_live_object(50) == pytest.approx(1.2)


def test_backfill_usage_spreads_the_per_page_costs_over_the_page() -> None:
    # Given a page of 1000 objects: a copy each, 3 lists, a ledger write and read each, a 4-unit
    # transaction, 2 invocations and 4 transitions per page, 2 ms of a 1024 MB function per object
    inputs = scale.BackfillUsageInputs(
        s3_per_object={"s3:CopyObject": 1.0, "s3:ListObjectsV2": 0.003},
        ledger_writes=1.0,
        ledger_reads=1.0,
        job_write_units_per_page=4.0,
        objects_per_page=1000,
        lambda_seconds_per_object=0.002,
        lambda_invocations_per_page=2.0,
        transitions_per_page=4,
    )

    # When it is priced
    lines = scale.cost_per_million(scale.backfill_usage(inputs, memory_mb=1024, arm=True))

    # Then the page's shares are divided by its objects
    assert lines["S3 PUT/COPY/LIST requests"] == pytest.approx(1.003 * 5.0)
    assert lines["DynamoDB writes"] == pytest.approx(1.004 * 0.625)
    assert lines["Lambda duration"] == pytest.approx(0.002 * 1_000_000 * 0.0000133334)
    assert lines["Lambda requests"] == pytest.approx(0.002 * 0.20)
    assert lines["Step Functions transitions"] == pytest.approx(4000 / 1000 * 0.025)
    assert lines["SQS requests"] == 0


def test_per_page_requests_are_spread_over_the_products_page_size() -> None:
    # Given requests counted in pages of 125: a copy per object, the listings and settings per page
    counted = {"s3:CopyObject": 1.0, "s3:ListObjectsV2": 0.04, "s3:GetBucketEncryption": 0.008}

    # When they are restated for pages of 1000
    restated = scale.at_page_size(counted, 125, 1000)

    # Then the copies stay one per object and the per-page requests fall eightfold
    assert restated == pytest.approx({"s3:CopyObject": 1.0, "s3:ListObjectsV2": 0.005, "s3:GetBucketEncryption": 0.001})


def test_over_target_names_the_largest_extra_lines_that_make_up_the_excess() -> None:
    # Given a bill of $6.80 against a $6.00 target, the copy and its transfer being unavoidable
    lines = {"copy": 5.0, "transfer": 0.02, "head": 0.40, "writes": 0.64, "queue": 0.48, "lambda": 0.26}

    # When the difference is explained
    found = scale.over_target(lines, 6.0, kept=("copy", "transfer"))

    # Then the largest other lines are named until they cover the $0.80
    assert found == [("writes", 0.64), ("queue", 0.48)]
    assert scale.over_target(lines, 7.0, kept=("copy",)) == []


def test_projection_takes_the_least_of_latency_cpu_and_listing() -> None:
    # Given 32 copy threads at 60 ms, full efficiency, on a 1024 MB function
    assumptions = scale.ProjectionAssumptions(
        copy_threads=32, cross_region_copy_seconds=0.060, efficiency=1.0, memory_mb=1024
    )

    # Then latency allows 533/s, but 1024/1769 of a vCPU at 1.2 ms per copy allows only ~482/s
    assert assumptions.latency_bound() == pytest.approx(533.3, abs=0.1)
    assert assumptions.cpu_bound() == pytest.approx(1024 / 1769 / 0.0012)
    assert assumptions.per_range_rate() == pytest.approx(assumptions.cpu_bound())

    # And at half the efficiency latency binds
    slower = scale.ProjectionAssumptions(
        copy_threads=32, cross_region_copy_seconds=0.060, efficiency=0.5, memory_mb=1024
    )
    assert slower.per_range_rate() == pytest.approx(266.7, abs=0.1)


def test_projection_hours_and_prefixes() -> None:
    # Given 40 ranges of 500 objects/s
    rate = scale.job_rate(500.0, 40)

    # Then 1 B objects take 1e9 / 20,000 s, and S3 needs 6 prefixes of 3,500 COPY/s
    assert rate == 20_000
    assert scale.hours_to_backfill(1e9, rate) == pytest.approx(1e9 / 20_000 / 3600)
    assert scale.prefixes_needed(rate) == 6
    assert scale.prefixes_needed(100.0) == 1


def test_template_facts_are_read_from_the_template() -> None:
    # Given the real template; When its facts are read
    facts = scale.template_facts(load_cfn_template(ROOT / "template.yaml"))

    # Then they match what it declares for the two functions
    template = load_cfn_template(ROOT / "template.yaml")
    assert facts.replicate_memory_mb == template["Globals"]["Function"]["MemorySize"]
    assert facts.backfill_memory_mb == template["Resources"]["BackfillFunction"]["Properties"]["MemorySize"]
    assert facts.arm is (template["Globals"]["Function"]["Architectures"] == ["arm64"])
    maximum = template["Parameters"].get("BackfillMaxRanges", {}).get("MaxValue")
    assert facts.max_ranges == (int(maximum) if maximum is not None else None)


def test_transitions_per_page_follow_the_loop_of_the_real_state_machine() -> None:
    # Given the backfill state machine; When its page loop is walked
    definition = json.loads((ROOT / "statemachine" / "backfill.asl.json").read_text())
    transitions = scale.transitions_per_page(definition)

    # Then it takes at least the copy and the record step, and fewer states than the machine has
    assert 2 <= transitions <= 12


def test_transitions_per_page_walks_into_a_map_and_takes_each_choice_default() -> None:
    # Given a Map whose workers copy, record, choose, count and copy again
    definition: dict[str, Any] = {
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Map",
                "ItemProcessor": {
                    "StartAt": "CopyPage",
                    "States": {
                        "CopyPage": {
                            "Type": "Task",
                            "Parameters": {"Payload": {"action": "copy_page"}},
                            "Next": "Record",
                        },
                        "Record": {"Type": "Task", "Next": "More?"},
                        "More?": {"Type": "Choice", "Choices": [{"Next": "Done"}], "Default": "Count"},
                        "Count": {"Type": "Pass", "Next": "CopyPage"},
                        "Done": {"Type": "Succeed"},
                    },
                },
                "End": True,
            }
        },
    }

    # Then a page costs 4 transitions
    assert scale.transitions_per_page(definition) == 4


def test_the_cost_table_sets_the_columns_side_by_side_with_totals() -> None:
    # Given two bills; When tabled
    rows = scale.cost_table({"crr": {"a": 1.0, "b": 0.5}, "other": {"a": 2.0}})

    # Then each line has a cell per column ("-" for nothing) and the last row totals them
    assert rows[1].split() == ["a", "1.000", "2.000"]
    assert rows[2].split() == ["b", "0.500", "-"]
    assert rows[3].split() == ["total", "1.500", "2.000"]


def test_last_line_has_the_issues_format() -> None:
    # Given measured figures; Then the line reads exactly as issue 13 asks, one decimal and two for USD
    line = scale.last_line(7.04, 6.55, 6.804)
    assert line == "scale: backfill 7.0x at 8 ranges, live 6.5x per invocation, 6.80 USD per million objects"
    assert LAST_LINE.match(line)


def test_the_median_round_is_kept_of_each_live_setting() -> None:
    # Given three rounds of one setting, the machine busier in one of them
    def round_at(objects_per_second: float) -> replicate.InvocationFigures:
        return replicate.InvocationFigures(
            batch=10,
            record_concurrency=10,
            invocations=10,
            handled=100,
            replicated=100,
            ms_per_invocation=10_000 / objects_per_second,
            objects_per_second=objects_per_second,
            lambda_ms_per_object=1000 / objects_per_second,
            requests_per_object={},
        )

    # Then the middle one is kept, and of two the slower (the figure never flatters)
    assert scale.median_round([round_at(30.0), round_at(55.0), round_at(50.0)]).objects_per_second == 50.0
    assert scale.median_round([round_at(55.0), round_at(50.0)]).objects_per_second == 50.0


def test_main_ends_with_the_last_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Given measurements stood in for: the live path at 1 and 10 records at once, and backfills at 1-8 ranges
    def invocation(batch: int, record_concurrency: int, ms_per_object: float) -> replicate.InvocationFigures:
        return replicate.InvocationFigures(
            batch=batch,
            record_concurrency=record_concurrency,
            invocations=10,
            handled=100,
            replicated=100,
            ms_per_invocation=ms_per_object * batch,
            objects_per_second=1000 / ms_per_object,
            lambda_ms_per_object=ms_per_object,
            requests_per_object={"s3:HeadObject": 1.0, "s3:CopyObject": 1.0, "dynamodb:PutItem": 1.0},
        )

    def live(objects: int, batches: list[tuple[int, list[int]]], *, p99: bool, rounds: int = 1) -> scale.LiveFigures:
        return scale.LiveFigures(rows=[invocation(10, 1, 120.0), invocation(10, 10, 18.0), invocation(50, 10, 16.0)])

    def backfill(objects: int, fan_outs: list[int], copy_threads: int, page_size: int) -> list[scale.BackfillRun]:
        return [
            scale.BackfillRun(
                ranges=ranges,
                objects=objects,
                seconds=60.0 / (ranges * 0.9 if ranges > 1 else 1),
                s3_per_object={"s3:CopyObject": 1.0, "s3:ListObjectsV2": 0.004},
                ledger_writes_per_object=1.0,
                ledger_reads_per_object=1.0,
                pages=objects // page_size,
                active_seconds=objects * 0.015,
                steps={},
            )
            for ranges in fan_outs
        ]

    monkeypatch.setattr(scale, "measure_live", live)
    monkeypatch.setattr(scale, "measure_backfill", backfill)

    # When the bench runs
    assert scale.main(["--quick"]) == 0

    # Then it prints the targets and ends with the issue's line, from those figures: 120 / 18 ms = 6.7x;
    # copy 5.00 + HEAD 0.40 + transfer 0.02 + ledger 0.625 + SQS 0.48 + Lambda 0.12 + 0.02 = 6.66 USD
    printed = capsys.readouterr().out.splitlines()
    assert any("backfill at 8 ranges >= 6x 1 range: 7.2x  met" in line for line in printed)
    # And the live cost's verdict says why it cannot reach $6: the copy, its notification and the ledger write
    assert any("floor of a live copy with a per-key ledger: $6.04" in line for line in printed)
    assert any("NOT met" in line and "one on-demand ledger write alone are $6.04" in line for line in printed)
    assert printed[-1] == "scale: backfill 7.2x at 8 ranges, live 6.7x per invocation, 6.66 USD per million objects"
    assert LAST_LINE.match(printed[-1])
