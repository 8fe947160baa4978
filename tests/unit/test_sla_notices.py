"""What the SLA tick sends, and when it should next wake up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.sla.deadlines import (
    FIRST_CYCLE,
    SlaState,
    Status,
    StatusChange,
    Target,
    TicketClock,
    compute_sla,
)
from helpdesk.sla.notices import (
    DEFAULT_GRACE,
    Notice,
    NoticeKey,
    NoticeKind,
    due_notices,
    judge_late,
    next_wakeup,
)
from helpdesk.sla.policy import Plan, Priority, SlaPolicy, default_policy

LONDON = ZoneInfo("Europe/London")
POLICY = default_policy()
MICRO = timedelta(microseconds=1)
PROPERTY = settings(database=None, deadline=None, max_examples=150)

FR, RES = Target.FIRST_RESPONSE, Target.RESOLUTION
WARNING, BREACH = NoticeKind.WARNING, NoticeKind.BREACH


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)


def sla(
    created: datetime,
    priority: Priority,
    plan: Plan = Plan.STANDARD,
    changes: tuple[tuple[datetime, Status], ...] = (),
    reply: datetime | None = None,
    policy: SlaPolicy = POLICY,
) -> SlaState:
    return compute_sla(
        TicketClock(
            created,
            priority,
            plan,
            tuple(StatusChange(at, status) for at, status in changes),
            reply,
        ),
        policy,
    )


def key(target: Target, kind: NoticeKind, cycle: int = FIRST_CYCLE) -> NoticeKey:
    return NoticeKey(target, kind, cycle)


# A Critical ticket on Enhanced runs round the clock: 1 h / 4 h from 10:00 UTC.
T = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
CRITICAL = sla(T, Priority.CRITICAL, Plan.ENHANCED)


def test_nothing_is_due_before_three_quarters_of_the_target() -> None:
    assert due_notices(CRITICAL, T + minutes(45) - MICRO, set()) == ()


def test_warning_is_due_exactly_at_75_percent() -> None:
    assert due_notices(CRITICAL, T + minutes(45), set()) == (
        Notice(FR, WARNING, FIRST_CYCLE, T + minutes(45), late=False),
    )


def test_warning_at_75_percent_of_business_time_on_office_hours() -> None:
    created = london(2025, 6, 2, 9, 0)
    state = sla(created, Priority.MEDIUM)
    # 75% of 8.5 office hours is 6 h 22 m 30 s.
    warning_at = london(2025, 6, 2, 15, 22) + timedelta(seconds=30)
    assert due_notices(state, warning_at - MICRO, set()) == ()
    assert due_notices(state, warning_at, set()) == (
        Notice(FR, WARNING, FIRST_CYCLE, warning_at, late=False),
    )
    # 75% of 25.5 office hours ends on Wednesday after 2 h 7 m 30 s.
    resolution_warning = london(2025, 6, 4, 11, 7) + timedelta(seconds=30)
    assert state.resolution.warning_at == resolution_warning


def test_warning_share_comes_from_the_policy() -> None:
    state = sla(T, Priority.CRITICAL, Plan.ENHANCED, policy=SlaPolicy(warning_share=0.5))
    assert [n.due_at for n in due_notices(state, T + minutes(30), set())] == [T + minutes(30)]


def test_breach_is_due_exactly_at_the_deadline() -> None:
    sent = {key(FR, WARNING)}
    assert due_notices(CRITICAL, T + minutes(60) - MICRO, sent) == ()
    assert due_notices(CRITICAL, T + minutes(60), sent) == (
        Notice(FR, BREACH, FIRST_CYCLE, T + minutes(60), late=False),
    )


def test_breach_supersedes_an_unsent_warning() -> None:
    assert due_notices(CRITICAL, T + minutes(60), set()) == (
        Notice(FR, BREACH, FIRST_CYCLE, T + minutes(60), late=False),
    )


def test_nothing_is_repeated_once_sent() -> None:
    sent = {key(FR, BREACH)}
    assert due_notices(CRITICAL, T + minutes(90), sent) == ()


def test_late_only_when_more_than_the_grace_period_has_passed() -> None:
    warning_at = T + minutes(45)
    on_time = due_notices(CRITICAL, warning_at + DEFAULT_GRACE, set())
    late = due_notices(CRITICAL, warning_at + DEFAULT_GRACE + MICRO, set())
    assert [n.late for n in on_time] == [False]
    assert [n.late for n in late] == [True]
    assert [n.late for n in due_notices(CRITICAL, warning_at + minutes(2), set(), minutes(1))] == [
        True
    ]


def test_a_deadline_a_priority_change_moved_into_the_past_is_not_late() -> None:
    # Raised at 11:30 with the breach's deadline now 11:00: news only since
    # 11:30, so on time at 11:32 and late only once the grace period is over.
    breach = Notice(FR, BREACH, FIRST_CYCLE, T + minutes(60), late=True)
    changed = T + minutes(90)
    assert judge_late((breach,), changed, T + minutes(92)) == (
        Notice(FR, BREACH, FIRST_CYCLE, T + minutes(60), late=False),
    )
    assert judge_late((breach,), changed, changed + DEFAULT_GRACE + MICRO) == (breach,)


def test_judging_lateness_never_makes_a_notice_late_nor_without_a_priority_change() -> None:
    on_time = Notice(FR, WARNING, FIRST_CYCLE, T + minutes(45), late=False)
    late = Notice(RES, WARNING, FIRST_CYCLE, T + minutes(180), late=True)
    assert judge_late((on_time, late), None, T + minutes(300)) == (on_time, late)
    assert judge_late((on_time,), T - minutes(60), T + minutes(300)) == (on_time,)
    # A change long before the deadline leaves a late notice late.
    assert judge_late((late,), T, T + minutes(300)) == (late,)


def test_after_downtime_both_clocks_catch_up_late_in_deadline_order() -> None:
    notices = due_notices(CRITICAL, T + minutes(5 * 60), {key(FR, WARNING)})
    assert notices == (
        Notice(FR, BREACH, FIRST_CYCLE, T + minutes(60), late=True),
        Notice(RES, BREACH, FIRST_CYCLE, T + minutes(240), late=True),
    )


def test_a_paused_clock_sends_nothing() -> None:
    state = sla(T, Priority.CRITICAL, Plan.ENHANCED, changes=((T + minutes(10), Status.PENDING),))
    notices = due_notices(state, T + minutes(10 * 60), {key(FR, WARNING), key(FR, BREACH)})
    assert notices == ()
    assert next_wakeup(state, {key(FR, WARNING), key(FR, BREACH)}) is None


def test_a_met_first_response_sends_nothing_more() -> None:
    state = sla(T, Priority.CRITICAL, Plan.ENHANCED, reply=T + minutes(50))
    targets = {n.target for n in due_notices(state, T + minutes(10 * 60), set())}
    assert targets == {RES}


def test_a_resolved_ticket_has_no_wakeup() -> None:
    state = sla(T, Priority.CRITICAL, Plan.ENHANCED, changes=((T + minutes(30), Status.RESOLVED),))
    assert next_wakeup(state, set()) is None
    assert due_notices(state, T + minutes(10 * 60), set()) == ()


def test_a_reopened_ticket_past_its_target_breaches_again_in_the_new_cycle() -> None:
    reopened_at = T + minutes(10 * 60)
    state = sla(
        T,
        Priority.CRITICAL,
        Plan.ENHANCED,
        changes=((T + minutes(5 * 60), Status.RESOLVED), (reopened_at, Status.OPEN)),
        reply=T + minutes(30),
    )
    sent = {key(RES, WARNING), key(RES, BREACH)}
    assert state.resolution_cycle == FIRST_CYCLE + 1
    assert due_notices(state, reopened_at + minutes(1), sent) == (
        Notice(RES, BREACH, FIRST_CYCLE + 1, reopened_at, late=False),
    )


def test_a_reopened_ticket_with_time_left_warns_again_in_the_new_cycle() -> None:
    reopened_at = T + minutes(10 * 60)
    state = sla(
        T,
        Priority.CRITICAL,
        Plan.ENHANCED,
        changes=((T + minutes(60), Status.RESOLVED), (reopened_at, Status.OPEN)),
        reply=T + minutes(30),
    )
    # One of four hours was used: warning after two more, breach after three.
    assert next_wakeup(state, {key(RES, WARNING)}) == reopened_at + minutes(120)
    cycle = FIRST_CYCLE + 1
    assert due_notices(state, reopened_at + minutes(180), {key(RES, WARNING, cycle)}) == (
        Notice(RES, BREACH, cycle, reopened_at + minutes(180), late=False),
    )


def test_next_wakeup_steps_through_each_notice_in_turn() -> None:
    sent: set[NoticeKey] = set()
    expected = [
        (T + minutes(45), key(FR, WARNING)),
        (T + minutes(60), key(FR, BREACH)),
        (T + minutes(180), key(RES, WARNING)),
        (T + minutes(240), key(RES, BREACH)),
    ]
    for at, sent_key in expected:
        assert next_wakeup(CRITICAL, sent) == at
        sent.add(sent_key)
    assert next_wakeup(CRITICAL, sent) is None


def test_next_wakeup_is_in_the_past_while_a_due_notice_is_unsent() -> None:
    # Shell fell over between computing and sending: the tick must run at once.
    assert next_wakeup(CRITICAL, set()) == T + minutes(45)
    assert due_notices(CRITICAL, T + minutes(50), set())


def test_a_breach_already_sent_retires_the_unsent_warning() -> None:
    assert next_wakeup(CRITICAL, {key(FR, BREACH)}) == T + minutes(180)


# --- properties ---------------------------------------------------------------

starts = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
gaps = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3))
all_keys = [
    NoticeKey(target, kind, cycle) for target in Target for kind in NoticeKind for cycle in range(4)
]


@st.composite
def states(draw: st.DrawFn) -> tuple[SlaState, datetime]:
    created = draw(starts)
    t = created
    changes = []
    for status in draw(st.lists(st.sampled_from(list(Status)), max_size=6)):
        t += draw(gaps)
        changes.append((t, status))
    reply = draw(st.none() | gaps.map(lambda g: created + g))
    state = sla(
        created,
        draw(st.sampled_from(list(Priority))),
        draw(st.sampled_from(list(Plan))),
        tuple(changes),
        reply,
    )
    return state, t


@PROPERTY
@given(
    drawn=states(),
    since_last=st.timedeltas(timedelta(0), timedelta(days=10)),
    sent=st.sets(st.sampled_from(all_keys)),
    grace=st.timedeltas(timedelta(0), timedelta(hours=1)),
)
def test_notices_are_due_unsent_single_and_leave_a_future_wakeup(
    drawn: tuple[SlaState, datetime],
    since_last: timedelta,
    sent: set[NoticeKey],
    grace: timedelta,
) -> None:
    state, last_event = drawn
    now = last_event + since_last
    notices = due_notices(state, now, sent, grace)
    for notice in notices:
        assert notice.due_at <= now
        assert notice.key not in sent
        assert notice.late == (now - notice.due_at > grace)
        assert notice.cycle == state.clock(notice.target).cycle
    assert len({(n.target, n.cycle) for n in notices}) == len(notices)
    wakeup = next_wakeup(state, sent | {n.key for n in notices})
    assert wakeup is None or wakeup > now


@PROPERTY
@given(
    created=starts,
    priority=st.sampled_from(list(Priority)),
    plan=st.sampled_from(list(Plan)),
)
def test_a_daemon_ticking_at_each_wakeup_sends_every_notice_once_and_on_time(
    created: datetime, priority: Priority, plan: Plan
) -> None:
    state = sla(created, priority, plan)
    sent: set[NoticeKey] = set()
    log: list[Notice] = []
    while (wakeup := next_wakeup(state, sent)) is not None:
        notices = due_notices(state, wakeup, sent)
        assert notices
        log.extend(notices)
        sent |= {n.key for n in notices}
    assert sorted((n.target, n.kind) for n in log) == sorted(
        (t, k) for t in Target for k in NoticeKind
    )
    assert not any(n.late for n in log)
    assert [n.due_at for n in log] == sorted(n.due_at for n in log)
    for n in log:
        clock = state.clock(n.target)
        assert n.due_at == (clock.warning_at if n.kind is WARNING else clock.due_at)
