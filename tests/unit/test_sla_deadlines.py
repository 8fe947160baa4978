"""The first-response and resolution clocks, replayed from a ticket's history."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.sla.calendar import add_business_time, business_time_between
from helpdesk.sla.deadlines import (
    FIRST_CYCLE,
    Phase,
    SlaState,
    Status,
    StatusChange,
    TicketClock,
    compute_sla,
    elapsed_at,
    is_breached,
)
from helpdesk.sla.policy import (
    Duration,
    Plan,
    Priority,
    SlaPolicy,
    Targets,
    calendar_for,
    cap_priority,
    default_policy,
    raise_priority,
    resolve_duration,
    urgency,
)
from helpdesk.sla.wording import format_deadline

LONDON = ZoneInfo("Europe/London")
POLICY = default_policy()
UK = POLICY.business_calendar
PROPERTY = settings(database=None, deadline=None, max_examples=150)


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)


def sla(
    created: datetime,
    priority: Priority = Priority.MEDIUM,
    plan: Plan = Plan.STANDARD,
    changes: tuple[tuple[datetime, Status], ...] = (),
    reply: datetime | None = None,
    policy: SlaPolicy = POLICY,
) -> SlaState:
    ticket = TicketClock(
        created_at=created,
        priority=priority,
        plan=plan,
        status_changes=tuple(StatusChange(at, status) for at, status in changes),
        first_public_reply_at=reply,
    )
    return compute_sla(ticket, policy)


# --- the policy table -------------------------------------------------------

FRIDAY_1700 = london(2020, 11, 27, 17, 0)


def test_critical_on_standard_opened_friday_1700_is_due_monday_0930() -> None:
    state = sla(FRIDAY_1700, Priority.CRITICAL, Plan.STANDARD)
    assert state.first_response_due == london(2020, 11, 30, 9, 30)
    # Four office hours: 30 minutes on Friday, 3.5 on Monday.
    assert state.resolution_due == london(2020, 11, 30, 12, 30)


def test_critical_on_enhanced_opened_friday_1700_is_due_friday_1800() -> None:
    state = sla(FRIDAY_1700, Priority.CRITICAL, Plan.ENHANCED)
    assert state.first_response_due == london(2020, 11, 27, 18, 0)
    assert state.resolution_due == london(2020, 11, 27, 21, 0)


def test_enhanced_runs_only_critical_and_high_round_the_clock() -> None:
    high = sla(FRIDAY_1700, Priority.HIGH, Plan.ENHANCED)
    medium = sla(FRIDAY_1700, Priority.MEDIUM, Plan.ENHANCED)
    assert high.first_response_due == london(2020, 11, 27, 21, 0)
    # One business day on the 24x7 clock is 24 hours.
    assert high.resolution_due == london(2020, 11, 28, 17, 0)
    assert medium.first_response_due == london(2020, 11, 30, 17, 0)


def test_enterprise_runs_every_priority_round_the_clock() -> None:
    low = sla(FRIDAY_1700, Priority.LOW, Plan.ENTERPRISE)
    assert low.first_response_due == FRIDAY_1700 + hours(48)
    assert low.resolution_due == FRIDAY_1700 + hours(5 * 24)


def test_high_opened_the_day_before_a_bank_holiday_skips_it() -> None:
    # Friday 22 August 2025; Monday 25 August is the summer bank holiday.
    state = sla(london(2025, 8, 22, 14, 0), Priority.HIGH)
    assert state.first_response_due == london(2025, 8, 26, 9, 30)
    # One business day = 8.5 office hours: 3.5 on Friday, 5 on Tuesday.
    assert state.resolution_due == london(2025, 8, 26, 14, 0)


def test_medium_first_response_is_one_business_day_of_eight_and_a_half_hours() -> None:
    created = london(2025, 6, 3, 13, 0)
    state = sla(created, Priority.MEDIUM)
    assert state.first_response_due == london(2025, 6, 4, 13, 0)
    assert state.first_response_due is not None
    assert business_time_between(UK, created, state.first_response_due) == hours(8.5)
    assert state.first_response.limit == hours(8.5)


def test_low_targets_are_two_and_five_business_days() -> None:
    state = sla(london(2025, 6, 2, 9, 0), Priority.LOW)
    assert state.first_response_due == london(2025, 6, 3, 17, 30)
    assert state.resolution_due == london(2025, 6, 6, 17, 30)


@pytest.mark.parametrize(
    ("priority", "plan", "first_response", "resolution"),
    [
        (Priority.CRITICAL, Plan.STANDARD, hours(1), hours(4)),
        (Priority.HIGH, Plan.STANDARD, hours(4), hours(8.5)),
        (Priority.MEDIUM, Plan.STANDARD, hours(8.5), hours(25.5)),
        (Priority.LOW, Plan.STANDARD, hours(17), hours(42.5)),
        (Priority.CRITICAL, Plan.ENHANCED, hours(1), hours(4)),
        (Priority.HIGH, Plan.ENHANCED, hours(4), hours(24)),
        (Priority.MEDIUM, Plan.ENHANCED, hours(8.5), hours(25.5)),
        (Priority.MEDIUM, Plan.ENTERPRISE, hours(24), hours(72)),
        (Priority.LOW, Plan.ENTERPRISE, hours(48), hours(120)),
    ],
)
def test_the_policy_table_in_clock_time(
    priority: Priority, plan: Plan, first_response: timedelta, resolution: timedelta
) -> None:
    cal = calendar_for(POLICY, plan, priority)
    targets = POLICY.targets[priority]
    assert resolve_duration(targets.first_response, cal) == first_response
    assert resolve_duration(targets.resolution, cal) == resolution


def test_extra_closures_reach_the_business_calendar() -> None:
    policy = default_policy([date(2025, 6, 3)])
    state = sla(london(2025, 6, 2, 17, 0), Priority.CRITICAL, policy=policy)
    assert state.first_response_due == london(2025, 6, 4, 9, 30)


def test_custom_targets_override_the_table() -> None:
    policy = SlaPolicy(
        targets={
            **POLICY.targets,
            Priority.HIGH: Targets(Duration.minutes(30), Duration.days(2)),
        }
    )
    state = sla(london(2025, 6, 2, 10, 0), Priority.HIGH, policy=policy)
    assert state.first_response_due == london(2025, 6, 2, 10, 30)
    assert state.resolution_due == london(2025, 6, 4, 10, 0)


# --- the first-response clock -----------------------------------------------

MONDAY_0900 = london(2025, 6, 2, 9, 0)


def test_first_public_reply_stops_the_first_response_clock() -> None:
    reply = london(2025, 6, 2, 11, 0)
    state = sla(MONDAY_0900, reply=reply)
    assert state.first_response_due is None
    assert state.first_response_met_at == reply
    assert state.first_response.phase is Phase.STOPPED
    assert state.first_response.elapsed == hours(2)
    assert state.first_response.missed_at is None


def test_a_late_first_reply_is_recorded_as_over_the_limit() -> None:
    state = sla(MONDAY_0900, Priority.CRITICAL, reply=london(2025, 6, 2, 10, 30))
    assert state.first_response.missed_at == london(2025, 6, 2, 10, 0)
    assert is_breached(state.first_response, london(2025, 6, 2, 11, 0))
    assert state.first_response.elapsed == hours(1.5)


def test_a_reply_after_closing_time_misses_a_deadline_at_closing_time() -> None:
    # No office time passes between 17:30 and 18:00, but the promise was 17:30.
    created = london(2025, 6, 2, 16, 30)
    on_time = sla(created, Priority.CRITICAL, reply=london(2025, 6, 2, 17, 30))
    late = sla(created, Priority.CRITICAL, reply=london(2025, 6, 2, 18, 0))
    assert on_time.first_response.missed_at is None
    assert late.first_response.missed_at == london(2025, 6, 2, 17, 30)
    assert late.first_response.elapsed == late.first_response.limit


def test_first_response_clock_ignores_pending() -> None:
    paused = sla(MONDAY_0900, changes=((london(2025, 6, 2, 10, 0), Status.PENDING),))
    assert paused.first_response_due == sla(MONDAY_0900).first_response_due
    assert paused.first_response.phase is Phase.RUNNING


def test_resolving_without_a_reply_stops_the_first_response_clock_unmet() -> None:
    resolved = london(2025, 6, 2, 10, 0)
    state = sla(MONDAY_0900, changes=((resolved, Status.RESOLVED),), reply=resolved + hours(1))
    assert state.first_response_due is None
    assert state.first_response_met_at is None
    assert state.first_response.stopped_at == resolved


# --- the resolution clock ---------------------------------------------------


def test_pending_pauses_the_resolution_clock() -> None:
    state = sla(MONDAY_0900, changes=((london(2025, 6, 2, 11, 0), Status.PENDING),))
    assert state.paused
    assert state.resolution_due is None
    assert state.resolution.warning_at is None
    assert state.resolution_elapsed == hours(2)
    assert elapsed_at(state.resolution, UK, london(2025, 6, 20, 12, 0)) == hours(2)


def test_resuming_pushes_the_due_by_the_open_time_spent_pending() -> None:
    unpaused = sla(MONDAY_0900)
    state = sla(
        MONDAY_0900,
        changes=(
            (london(2025, 6, 2, 11, 0), Status.PENDING),
            (london(2025, 6, 4, 11, 0), Status.OPEN),
        ),
    )
    # 25.5 office hours from Monday 09:00 end Wednesday 17:30; the pause held
    # 17 office hours (Monday 11:00 to Wednesday 11:00), so Friday 17:30.
    assert unpaused.resolution_due == london(2025, 6, 4, 17, 30)
    assert state.resolution_due == london(2025, 6, 6, 17, 30)
    assert not state.paused
    assert state.resolution_cycle == FIRST_CYCLE
    assert state.resolution.running_since == london(2025, 6, 4, 11, 0)


def test_a_client_reply_reopening_from_pending_to_open_keeps_the_cycle() -> None:
    state = sla(
        MONDAY_0900,
        changes=(
            (london(2025, 6, 2, 10, 0), Status.PENDING),
            (london(2025, 6, 3, 10, 0), Status.OPEN),
        ),
    )
    assert state.resolution_cycle == FIRST_CYCLE


def test_resolving_stops_the_clock_and_reopening_resumes_with_a_new_cycle() -> None:
    resolved_at = london(2025, 6, 2, 13, 0)
    resolved = sla(MONDAY_0900, changes=((resolved_at, Status.RESOLVED),))
    assert resolved.resolution_due is None
    assert resolved.resolution.phase is Phase.STOPPED
    assert not resolved.paused
    assert resolved.resolution_elapsed == hours(4)
    assert resolved.resolution.stopped_at == resolved_at

    reopened_at = london(2025, 6, 5, 9, 0)
    reopened = sla(
        MONDAY_0900,
        changes=(
            (resolved_at, Status.RESOLVED),
            (london(2025, 6, 3, 9, 0), Status.CLOSED),
            (reopened_at, Status.OPEN),
        ),
    )
    assert reopened.resolution_cycle == FIRST_CYCLE + 1
    # 4 of 25.5 hours were used before resolving; 21.5 remain from Thursday.
    assert reopened.resolution_due == add_business_time(UK, reopened_at, hours(21.5))
    assert reopened.resolution_due == london(2025, 6, 9, 13, 30)


def test_each_reopening_is_a_new_cycle() -> None:
    changes = []
    t = MONDAY_0900
    for _ in range(3):
        t += hours(1)
        changes.append((t, Status.RESOLVED))
        t += hours(1)
        changes.append((t, Status.OPEN))
    assert sla(MONDAY_0900, changes=tuple(changes)).resolution_cycle == FIRST_CYCLE + 3


def test_reopening_into_pending_counts_a_cycle_but_stays_paused() -> None:
    state = sla(
        MONDAY_0900,
        changes=(
            (london(2025, 6, 2, 10, 0), Status.RESOLVED),
            (london(2025, 6, 3, 10, 0), Status.PENDING),
        ),
    )
    assert state.paused
    assert state.resolution_cycle == FIRST_CYCLE + 1


def test_reopening_after_the_target_was_used_up_is_due_at_once() -> None:
    reopened_at = london(2025, 6, 10, 9, 0)
    state = sla(
        MONDAY_0900,
        Priority.CRITICAL,
        changes=((london(2025, 6, 2, 15, 0), Status.RESOLVED), (reopened_at, Status.OPEN)),
    )
    assert state.resolution.missed_at == london(2025, 6, 2, 13, 0)
    assert state.resolution.elapsed > state.resolution.limit
    assert state.resolution_due == reopened_at
    assert state.resolution.warning_at == reopened_at


def test_elapsed_at_counts_running_time_up_to_now() -> None:
    state = sla(MONDAY_0900)
    assert elapsed_at(state.resolution, UK, london(2025, 6, 3, 10, 0)) == hours(9.5)
    assert elapsed_at(state.resolution, UK, MONDAY_0900 - hours(1)) == timedelta(0)


def test_a_priority_change_is_a_rerun_from_creation() -> None:
    medium = sla(MONDAY_0900, Priority.MEDIUM)
    raised = sla(MONDAY_0900, raise_priority(Priority.MEDIUM))
    assert medium.first_response_due == london(2025, 6, 2, 17, 30)
    assert raised.priority is Priority.HIGH
    assert raised.first_response_due == london(2025, 6, 2, 13, 0)


def test_ticket_clock_rejects_out_of_order_or_naive_history() -> None:
    with pytest.raises(ValueError, match="time order"):
        TicketClock(
            MONDAY_0900,
            Priority.LOW,
            Plan.STANDARD,
            (StatusChange(MONDAY_0900 - hours(1), Status.OPEN),),
        )
    with pytest.raises(ValueError, match="naive"):
        TicketClock(datetime(2025, 6, 2, 9, 0), Priority.LOW, Plan.STANDARD)
    with pytest.raises(ValueError, match="before the ticket"):
        TicketClock(MONDAY_0900, Priority.LOW, Plan.STANDARD, (), MONDAY_0900 - hours(1))


# --- policy values ----------------------------------------------------------


def test_raise_priority_steps_up_and_stops_at_critical() -> None:
    assert raise_priority(Priority.LOW) is Priority.MEDIUM
    assert raise_priority(Priority.MEDIUM, 2) is Priority.CRITICAL
    assert raise_priority(Priority.HIGH, 5) is Priority.CRITICAL
    assert raise_priority(Priority.CRITICAL) is Priority.CRITICAL
    assert raise_priority(Priority.LOW, 0) is Priority.LOW
    with pytest.raises(ValueError):
        raise_priority(Priority.LOW, -1)


def test_cap_priority_never_raises() -> None:
    assert cap_priority(Priority.CRITICAL, Priority.HIGH) is Priority.HIGH
    assert cap_priority(Priority.LOW, Priority.HIGH) is Priority.LOW


def test_durations_are_clock_time_or_business_days_not_both() -> None:
    with pytest.raises(ValueError):
        Duration(clock=hours(1), business_days=1)
    with pytest.raises(ValueError):
        Duration()
    with pytest.raises(ValueError):
        Duration(clock=-hours(1))


def test_policy_needs_every_priority_and_a_sane_warning_share() -> None:
    with pytest.raises(ValueError, match="low"):
        SlaPolicy(targets={p: t for p, t in POLICY.targets.items() if p is not Priority.LOW})
    with pytest.raises(ValueError, match="warning_share"):
        SlaPolicy(warning_share=1.5)


def test_policy_keeps_its_own_copy_of_the_targets() -> None:
    targets = dict(POLICY.targets)
    policy = SlaPolicy(targets=targets)
    targets[Priority.LOW] = Targets(Duration.minutes(1), Duration.minutes(2))
    assert policy.targets[Priority.LOW] == POLICY.targets[Priority.LOW]


# --- properties ---------------------------------------------------------------

starts = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
gaps = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5))
statuses = st.sampled_from(list(Status))


@st.composite
def histories(draw: st.DrawFn) -> tuple[datetime, tuple[tuple[datetime, Status], ...]]:
    created = draw(starts)
    t = created
    changes = []
    for status in draw(st.lists(statuses, max_size=8)):
        t += draw(gaps)
        changes.append((t, status))
    return created, tuple(changes)


def _phase(status: Status) -> Phase:
    return {
        Status.PENDING: Phase.PAUSED,
        Status.RESOLVED: Phase.STOPPED,
        Status.CLOSED: Phase.STOPPED,
    }.get(status, Phase.RUNNING)


@PROPERTY
@given(
    history=histories(),
    priority=st.sampled_from(list(Priority)),
    plan=st.sampled_from(list(Plan)),
)
def test_resolution_clock_invariants(
    history: tuple[datetime, tuple[tuple[datetime, Status], ...]], priority: Priority, plan: Plan
) -> None:
    created, changes = history
    state = sla(created, priority, plan, changes)
    cal = calendar_for(POLICY, plan, priority)
    clock = state.resolution
    last_phase = _phase(changes[-1][1]) if changes else Phase.RUNNING

    assert clock.phase is last_phase
    assert state.paused == (last_phase is Phase.PAUSED)
    assert (clock.due_at is None) == (last_phase is not Phase.RUNNING)
    last_event = changes[-1][0] if changes else created
    assert timedelta(0) <= clock.elapsed <= business_time_between(cal, created, last_event)

    phases = [Phase.RUNNING, *(_phase(s) for _, s in changes)]
    reopenings = sum(1 for a, b in itertools.pairwise(phases) if a is Phase.STOPPED and b is not a)
    assert clock.cycle == FIRST_CYCLE + reopenings

    if clock.due_at is not None and clock.warning_at is not None:
        assert clock.running_since is not None
        assert clock.running_since <= clock.warning_at <= clock.due_at
        consumed = clock.elapsed + business_time_between(cal, clock.running_since, clock.due_at)
        assert consumed == max(clock.limit, clock.elapsed)


@PROPERTY
@given(
    created=starts,
    pause_after=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    pause_for=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)),
    priority=st.sampled_from(list(Priority)),
)
def test_a_pause_before_the_deadline_moves_it_by_the_paused_open_time(
    created: datetime, pause_after: timedelta, pause_for: timedelta, priority: Priority
) -> None:
    unpaused = sla(created, priority).resolution_due
    assert unpaused is not None
    paused_at = created + pause_after
    resumed_at = paused_at + pause_for
    if paused_at >= unpaused:
        return
    state = sla(created, priority, changes=((paused_at, Status.PENDING), (resumed_at, Status.OPEN)))
    assert state.resolution_due is not None
    paused_open_time = business_time_between(UK, paused_at, resumed_at)
    assert business_time_between(UK, unpaused, state.resolution_due) == paused_open_time


@PROPERTY
@given(created=starts, reply_after=gaps, priority=st.sampled_from(list(Priority)))
def test_first_response_met_iff_reply_within_target(
    created: datetime, reply_after: timedelta, priority: Priority
) -> None:
    due = sla(created, priority).first_response_due
    assert due is not None
    state = sla(created, priority, reply=created + reply_after)
    assert state.first_response_met_at == created + reply_after
    assert (state.first_response.missed_at is not None) == (created + reply_after > due)
    assert is_breached(state.first_response, created + reply_after) == (created + reply_after > due)


# --- confirmation wording ---------------------------------------------------


def test_deadline_later_today_in_winter() -> None:
    now = london(2020, 11, 27, 10, 0)
    assert format_deadline(london(2020, 11, 27, 14, 30), now, "Europe/London") == (
        "by 14:30 GMT today"
    )


def test_deadline_on_a_later_day() -> None:
    now = FRIDAY_1700
    due = sla(now, Priority.CRITICAL).first_response_due
    assert due is not None
    assert format_deadline(due, now, "Europe/London") == "by Monday 30 November, 09:30 GMT"


def test_deadline_in_summer_time_uses_bst_and_local_days() -> None:
    # 23:30 UTC on Friday is already Saturday in London.
    now = datetime(2025, 6, 6, 12, 0, tzinfo=UTC)
    due = datetime(2025, 6, 6, 23, 30, tzinfo=UTC)
    assert format_deadline(due, now, "Europe/London") == "by Saturday 7 June, 00:30 BST"
    assert format_deadline(due, now, "UTC") == "by 23:30 UTC today"


def test_deadline_in_another_year_names_the_year() -> None:
    now = london(2025, 12, 24, 17, 0)
    due = sla(now, Priority.LOW).resolution_due
    assert due is not None
    assert format_deadline(due, now, "Europe/London") == "by Monday 5 January 2026, 17:00 GMT"


def test_deadline_wording_rejects_naive_times() -> None:
    with pytest.raises(ValueError):
        format_deadline(datetime(2025, 1, 1, 9), london(2025, 1, 1), "Europe/London")


def test_urgency_orders_priorities() -> None:
    ordered = sorted(Priority, key=urgency)
    assert ordered == [Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL]
