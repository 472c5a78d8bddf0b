"""`crr status` on the mass-delete breaker and the overwrite rate: a line when a person must act."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from crr.breaker import BreakerSettings, BreakerState
from crr.models import BreakerRecord, Verdict
from crr_cli.operations.status import StackStatus, StatusReport, render_text
from tests.support.fakes import (
    FakeBacklogAgeGauge,
    FakeBreakerStore,
    FakeFailureCounter,
    FakeProgress,
    FakeQueueGauge,
    FakeRules,
)
from tests.support.rules import named_rule
from tests.unit.test_status import EMPTY, NOW

SETTINGS = BreakerSettings(count=100, percent=50, window_seconds=300)


def report(record: BreakerRecord, held: int = 0, at: datetime = NOW) -> StatusReport:
    return StackStatus(
        stack="crr-test",
        region="us-west-1",
        rules=FakeRules(named_rule("photos")),
        progress=FakeProgress(),
        queue=FakeQueueGauge(EMPTY),
        dead_letters=FakeQueueGauge(EMPTY),
        backlog_age=FakeBacklogAgeGauge(),
        failures=FakeFailureCounter(),
        breakers=(FakeBreakerStore(record, held=[f"held-{n}" for n in range(held)]), SETTINGS),
        clock=lambda: at,
    ).report()


def slot(seconds_ago: float) -> int:
    return SETTINGS.slot(NOW - timedelta(seconds=seconds_ago))


def test_a_holding_breaker_says_how_many_are_held_and_how_to_answer() -> None:
    # Given a breaker tripped a minute ago, holding 7 deletes after 120 counted
    record = BreakerRecord(deletes={slot(60): 120}, changes={slot(60): 120}, held_since=NOW - timedelta(seconds=60))
    # When the status is shown
    shown = report(record, held=7)
    # Then the JSON and the text both say so, with the command that answers it
    breaker = json.loads(shown.model_dump_json())["rules"][0]["breaker"]
    assert (breaker["state"], breaker["held_deletes"], breaker["deletes_in_window"]) == ("holding", 7, 120)
    assert "rule photos: deletes HELD by the mass-delete breaker (7 held" in render_text(shown)
    assert "crr rules resume-deletes photos [--discard]" in render_text(shown)


def test_a_discarded_burst_shows_while_it_is_arriving_and_not_once_it_is_over() -> None:
    # Given a discarded burst whose deletes still fill the window
    record = BreakerRecord(
        deletes={slot(30): 150},
        changes={slot(30): 150},
        verdict=Verdict.DISCARDED,
        verdict_from=NOW - timedelta(seconds=400),
        verdict_to=NOW - timedelta(seconds=60),
        discarding=True,
    )
    # Then the status says it is discarding it
    assert report(record).rules[0].breaker.state is BreakerState.DISCARDING  # type: ignore[union-attr]
    assert "discarding the rest of a discarded burst" in render_text(report(record))
    # When a window passes without deletes, Then the breaker shows closed and no line
    later = report(record, at=NOW + timedelta(seconds=SETTINGS.window_seconds + SETTINGS.slot_seconds))
    assert later.rules[0].breaker.state is BreakerState.CLOSED  # type: ignore[union-attr]
    assert "breaker" not in render_text(later)


def test_overwrites_far_above_their_usual_rate_get_a_status_line() -> None:
    # Given a rule that overwrote about 2 keys per window for ten days, then 140 in the last window
    days = 10
    usual = 2 * days * 24 * 12
    record = BreakerRecord(
        overwrites={slot(100): 140}, overwrites_total=usual + 140, overwrites_since=NOW - timedelta(days=days)
    )
    # When the status is shown, Then it flags the jump, with the usual rate beside it
    shown = report(record)
    assert shown.rules[0].breaker.overwrite_burst  # type: ignore[union-attr]
    assert "rule photos: OVERWRITES JUMPED: 140 in the last 300 s, usually 2" in render_text(shown)


def test_a_steady_high_overwrite_rate_is_not_a_jump() -> None:
    # Given a rule that always overwrites about 150 keys per window (a nightly rewrite job, say)
    days = 10
    record = BreakerRecord(
        overwrites={slot(100): 150},
        overwrites_total=150 * days * 24 * 12,
        overwrites_since=NOW - timedelta(days=days),
    )
    # Then the status does not flag it
    shown = report(record)
    assert not shown.rules[0].breaker.overwrite_burst  # type: ignore[union-attr]
    assert "OVERWRITES" not in render_text(shown)


def test_a_closed_breaker_with_ordinary_traffic_adds_no_line() -> None:
    record = BreakerRecord(deletes={slot(10): 3}, changes={slot(10): 40}, overwrites={slot(10): 5})
    assert report(record).rules[0].breaker.state is BreakerState.CLOSED  # type: ignore[union-attr]
    assert "rule photos:" not in render_text(report(record))
