"""The SLA report: where each ticket stands on each target, the figures per
priority and plan, and the table and JSON they are shown as."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.sla import report_cli
from helpdesk.sla.deadlines import Status, StatusChange, TicketClock
from helpdesk.sla.policy import Plan, Priority, default_policy
from helpdesk.sla.report import (
    GroupFigures,
    SlaReport,
    Standing,
    TargetFigures,
    TargetResult,
    build_report,
    format_duration,
    judge_ticket,
    median,
    render_table,
    report_json,
)

LONDON = ZoneInfo("Europe/London")
POLICY = default_policy()
SECOND = timedelta(seconds=1)
CRITICAL, HIGH, MEDIUM, LOW = Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW
STANDARD, ENHANCED, ENTERPRISE = Plan.STANDARD, Plan.ENHANCED, Plan.ENTERPRISE


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """London time in 2026; Monday 23 November is inside office hours (GMT)."""
    return datetime(2026, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


MONDAY_10 = at(23, 10)


def ticket(
    created: datetime = MONDAY_10,
    priority: Priority = CRITICAL,
    plan: Plan = STANDARD,
    changes: tuple[tuple[datetime, Status], ...] = (),
    reply: datetime | None = None,
) -> TicketClock:
    return TicketClock(created, priority, plan,
                       tuple(StatusChange(when, status) for when, status in changes), reply)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)


# -- one ticket --------------------------------------------------------------------------


def test_a_reply_by_the_deadline_is_met_and_a_later_one_breached() -> None:
    # Critical on Standard from Monday 10:00: first response due 11:00.
    on_time = judge_ticket(ticket(reply=at(23, 11)), POLICY, at(23, 15))
    assert on_time.first_response == TargetResult(Standing.MET, hours(1))
    late = judge_ticket(ticket(reply=at(23, 11) + SECOND), POLICY, at(23, 15))
    assert late.first_response == TargetResult(Standing.BREACHED, hours(1) + SECOND)


@pytest.mark.parametrize(
    ("now", "standing"),
    [
        (at(23, 10, 44), Standing.ON_TRACK),
        (at(23, 10, 45), Standing.AT_RISK),  # 75 % of the hour: the warning point
        (at(23, 11), Standing.AT_RISK),  # due "by 11:00": not missed yet
        (at(23, 11) + SECOND, Standing.BREACHED),
    ],
)
def test_an_unanswered_ticket_goes_at_risk_at_the_warning_then_breached(
    now: datetime, standing: Standing
) -> None:
    result = judge_ticket(ticket(), POLICY, now)
    assert result.first_response == TargetResult(standing)


def test_resolved_before_any_reply_was_due_needs_no_first_response() -> None:
    result = judge_ticket(ticket(changes=((at(23, 10, 20), Status.RESOLVED),)), POLICY, at(23, 16))
    assert result.first_response == TargetResult(Standing.NOT_NEEDED)
    assert result.resolution == TargetResult(Standing.MET, timedelta(minutes=20))


def test_resolved_without_a_reply_after_its_deadline_breached_the_first_response() -> None:
    result = judge_ticket(ticket(changes=((at(23, 11, 30), Status.RESOLVED),)), POLICY, at(23, 16))
    assert result.first_response.standing is Standing.BREACHED
    assert result.resolution.standing is Standing.MET


def test_pending_is_neither_at_risk_nor_breached_and_its_time_is_not_counted() -> None:
    # 3.5 of 4 hours used by 13:30, past the warning point, then pending for a day.
    waiting = ticket(reply=at(23, 10, 30), changes=((at(23, 13, 30), Status.PENDING),))
    assert judge_ticket(waiting, POLICY, at(24, 12)).resolution == TargetResult(Standing.ON_TRACK)
    # Back at Tuesday 10:00, resolved at 10:20: 3 h 50 m of SLA time, within 4 h.
    done = ticket(reply=at(23, 10, 30), changes=(
        (at(23, 13, 30), Status.PENDING),
        (at(24, 10), Status.OPEN),
        (at(24, 10, 20), Status.RESOLVED),
    ))
    assert judge_ticket(done, POLICY, at(24, 12)).resolution == TargetResult(
        Standing.MET, hours(3) + timedelta(minutes=50)
    )


def test_a_breach_before_a_reopening_still_counts() -> None:
    reopened = ticket(reply=at(23, 10, 30), changes=(
        (at(23, 15), Status.RESOLVED), (at(24, 9, 30), Status.OPEN),  # resolved an hour late
    ))
    assert judge_ticket(reopened, POLICY, at(24, 9, 40)).resolution.standing is Standing.BREACHED


def test_times_are_sla_clock_time_on_the_tickets_own_calendar() -> None:
    # Medium on Standard, Friday 17:00, answered Monday 09:30: an hour of office time.
    friday = ticket(at(27, 17), MEDIUM, reply=at(30, 9, 30))
    assert judge_ticket(friday, POLICY, at(30, 12)).first_response == TargetResult(
        Standing.MET, hours(1)
    )
    # Critical on Enterprise runs 24x7: Saturday 10:00, due 11:00 the same day.
    saturday = ticket(at(28, 10), CRITICAL, ENTERPRISE)
    assert judge_ticket(saturday, POLICY, at(28, 11, 1)).first_response.standing is (
        Standing.BREACHED
    )
    # The same on Standard waits for Monday's office hours.
    assert judge_ticket(ticket(at(28, 10)), POLICY, at(28, 11, 1)).first_response.standing is (
        Standing.ON_TRACK
    )


# -- figures -----------------------------------------------------------------------------


def report_at(now: datetime, *tickets: TicketClock) -> SlaReport:
    return build_report(tickets, now, POLICY, since=at(1, 0))


def test_figures_per_priority_per_plan_and_in_total() -> None:
    now = at(23, 16)
    report = report_at(
        now,
        ticket(reply=at(23, 10, 30), changes=((at(23, 12), Status.RESOLVED),)),  # both met
        ticket(reply=at(23, 11, 30), changes=((at(23, 11, 30), Status.PENDING),)),  # FR late
        ticket(at(23, 12), HIGH),  # FR due 16:00: at risk since 15:00
        ticket(at(23, 9), LOW, ENTERPRISE),  # 24x7, 2 x 24 h: on track
        ticket(at(20, 10), MEDIUM, ENHANCED),  # Friday, no answer by Monday 10:00: breached
    )
    critical, high, medium, low = report.by_priority
    assert critical == GroupFigures(
        "critical", 2,
        TargetFigures(met=1, breached=1, at_risk=0, median=hours(1)),  # 30 m and 90 m
        TargetFigures(met=1, breached=0, at_risk=0, median=hours(2)),
    )
    assert (high.tickets, high.first_response.at_risk, high.first_response.median) == (1, 1, None)
    assert (medium.group, medium.tickets, medium.first_response.breached) == ("medium", 1, 1)
    # The Friday ticket's resolution (3 business days) is not due until Wednesday.
    assert (medium.resolution.breached, medium.resolution.at_risk) == (0, 0)
    assert (low.tickets, low.first_response, low.resolution) == (
        1, TargetFigures(), TargetFigures()
    )
    assert [(g.group, g.tickets) for g in report.by_plan] == [
        ("standard", 3), ("enhanced", 1), ("enterprise", 1)
    ]
    assert report.total == GroupFigures(
        "all", 5,
        TargetFigures(met=1, breached=2, at_risk=1, median=hours(1)),
        TargetFigures(met=1, breached=0, at_risk=0, median=hours(2)),
    )


def test_every_priority_and_plan_is_listed_even_without_tickets() -> None:
    report = report_at(at(23, 12))
    assert [g.group for g in report.by_priority] == ["critical", "high", "medium", "low"]
    assert [g.group for g in report.by_plan] == ["standard", "enhanced", "enterprise"]
    assert report.total == GroupFigures("all", 0, TargetFigures(), TargetFigures())


def test_median() -> None:
    assert median([]) is None
    assert median([hours(3), hours(1), hours(2)]) == hours(2)
    assert median([hours(4), hours(1), hours(2), hours(8)]) == hours(3)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        build_report([], datetime(2026, 11, 23, 12), POLICY)


_instants = st.integers(min_value=0, max_value=14 * 24 * 60).map(
    lambda m: at(16, 0) + timedelta(minutes=m)
)


@st.composite
def _tickets(draw: st.DrawFn) -> TicketClock:
    created = draw(_instants)
    steps = draw(st.lists(st.tuples(st.integers(1, 3000), st.sampled_from(list(Status))),
                          max_size=4))
    changes, when = [], created
    for gap, status in steps:
        when += timedelta(minutes=gap)
        changes.append((when, status))
    reply = draw(st.none() | st.integers(0, 3000).map(lambda m: created + timedelta(minutes=m)))
    return ticket(created, draw(st.sampled_from(list(Priority))),
                  draw(st.sampled_from(list(Plan))), tuple(changes), reply)


@settings(database=None, deadline=None, max_examples=100)
@given(st.lists(_tickets(), max_size=12), _instants)
def test_groups_add_up_to_the_total(tickets: list[TicketClock], now: datetime) -> None:
    report = build_report(tickets, now, POLICY)
    for groups in (report.by_priority, report.by_plan):
        assert sum(g.tickets for g in groups) == report.total.tickets == len(tickets)
        for target in ("first_response", "resolution"):
            for field in ("met", "breached", "at_risk"):
                total = getattr(getattr(report.total, target), field)
                assert sum(getattr(getattr(g, target), field) for g in groups) == total
    for g in (*report.by_priority, *report.by_plan):
        for figures in (g.first_response, g.resolution):
            assert figures.met + figures.breached + figures.at_risk <= g.tickets


# -- output ------------------------------------------------------------------------------


def sample_report() -> SlaReport:
    return build_report(
        [
            ticket(reply=at(23, 10, 30), changes=((at(23, 10, 30), Status.PENDING),)),
            ticket(reply=at(23, 11, 30), changes=((at(23, 12), Status.RESOLVED),)),
            ticket(at(23, 9), LOW, ENTERPRISE, changes=((at(23, 10), Status.RESOLVED),)),
        ],
        at(23, 16),
        POLICY,
        since=at(1, 0),
        skipped=("HD-000009",),
    )


def test_json_is_plain_data_with_medians_in_seconds() -> None:
    data = json.loads(json.dumps(report_json(sample_report())))
    assert data["now"] == "2026-11-23T16:00:00+00:00"
    assert data["since"] == "2026-11-01T00:00:00+00:00"
    assert data["skipped"] == ["HD-000009"]
    assert data["by_priority"][0] == {
        "group": "critical",
        "tickets": 2,
        "first_response": {"met": 1, "breached": 1, "at_risk": 0, "median_seconds": 3600.0},
        "resolution": {"met": 1, "breached": 0, "at_risk": 0, "median_seconds": 7200.0},
    }
    assert data["by_priority"][1]["first_response"]["median_seconds"] is None
    assert [g["group"] for g in data["by_plan"]] == ["standard", "enhanced", "enterprise"]
    assert (data["total"]["tickets"], data["total"]["resolution"]["median_seconds"]) == (3, 5400)


GROUPS = {*(p.value for p in Priority), *(p.value for p in Plan), "all"}


def table_rows(table: str) -> dict[str, list[str]]:
    """Each group's row as its words after the group name, keyed by the name."""
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        words = line.split()
        if words[:1] in (["priority"], ["plan"]):
            words = words[1:]
        if words and words[0] in GROUPS:
            rows[words[0]] = words[1:]
    return rows


def test_table_has_a_row_per_priority_and_plan_and_the_total() -> None:
    table = render_table(sample_report(), "Europe/London")
    lines = table.splitlines()
    assert lines[0] == (
        "SLA report at 2026-11-23 16:00 GMT, tickets opened since 2026-11-01 00:00 GMT"
    )
    # Each target's name spans its four columns: met .. median.
    spans, header = lines[2], lines[3]
    first_median = header.index("median")
    assert header.index("met") <= spans.index("first response") < first_median
    assert first_median < spans.index("resolution") < header.rindex("median")
    assert header.split() == ["tickets", "met", "breached", "at", "risk", "median",
                                "met", "breached", "at", "risk", "median"]
    rows = table_rows(table)
    assert list(rows) == ["critical", "high", "medium", "low",
                          "standard", "enhanced", "enterprise", "all"]
    #                          tickets  met breached at-risk median  met breached at-risk median
    assert rows["critical"] == ["2", "1", "1", "0", "1h", "00m", "1", "0", "0", "2h", "00m"]
    assert rows["high"] == ["0", "0", "0", "0", "-", "0", "0", "0", "-"]
    assert rows["low"] == ["1", "0", "0", "0", "-", "1", "0", "0", "1h", "00m"]
    assert rows["enterprise"] == rows["low"]
    assert rows["all"] == ["3", "1", "1", "0", "1h", "00m", "2", "0", "0", "1h", "30m"]
    # Figures are right-aligned under their headings.
    critical = next(line for line in lines if "critical" in line)
    assert critical.index("1h 00m") + len("1h 00m") == header.index("median") + len("median")
    assert lines[-1] == "Skipped (priority or plan unknown): HD-000009"


def test_durations_read_in_hours_and_minutes() -> None:
    assert format_duration(None) == "-"
    assert format_duration(timedelta(minutes=45)) == "45m"
    assert format_duration(hours(3) + timedelta(minutes=5)) == "3h 05m"
    assert format_duration(hours(27.5)) == "27h 30m"
    assert format_duration(timedelta(seconds=29)) == "0m"


# -- the command line ------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="helpdesk")
    report_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_since_is_a_day_starting_at_local_midnight() -> None:
    args = parse("sla", "report", "--since", "2026-07-01", "--json")
    assert (args.command, args.action, args.json) == ("sla", "report", True)
    # Summer time: the day starts an hour before midnight UTC.
    assert report_cli.start_of_day(args.since, "Europe/London") == datetime(
        2026, 6, 30, 23, 0, tzinfo=UTC
    )
    assert parse("sla", "report").since is None


def test_a_date_that_cannot_be_read_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("sla", "report", "--since", "last week")
    assert exited.value.code == 2
    assert "'last week' is not a date like 2026-11-30" in capsys.readouterr().err
