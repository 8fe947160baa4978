from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.escalation.policy import (
    DEFAULT_REPEAT_WINDOW,
    PRIORITIES,
    EscalationDecision,
    EscalationState,
    decide_escalation,
    raised_priority,
)

NOW = datetime(2024, 1, 17, 12, 0, tzinfo=UTC)
MANAGER = "ava@example.com"

FRESH = EscalationState(priority="medium")


def escalated(
    *,
    ago: timedelta,
    level: int = 1,
    priority: str = "high",
    first_ago: timedelta | None = None,
    manager: str | None = MANAGER,
) -> EscalationState:
    """A ticket last escalated (with notices) ``ago`` before NOW."""
    return EscalationState(
        priority=priority,
        escalated_at=NOW - (first_ago if first_ago is not None else ago),
        level=level,
        last_escalated_at=NOW - ago,
        manager_address=manager,
    )


def decide(
    state: EscalationState,
    *,
    is_requester_or_cc: bool = True,
    is_verified_staff: bool = False,
    repeat_window: timedelta = DEFAULT_REPEAT_WINDOW,
    raise_priority: bool = True,
) -> EscalationDecision:
    return decide_escalation(
        state,
        is_requester_or_cc=is_requester_or_cc,
        is_verified_staff=is_verified_staff,
        now=NOW,
        repeat_window=repeat_window,
        raise_priority=raise_priority,
    )


# --- who may escalate ---------------------------------------------------------


@pytest.mark.parametrize(
    ("is_requester_or_cc", "is_verified_staff"),
    [(True, False), (False, True), (True, True)],
    ids=["requester-or-cc", "staff", "both"],
)
def test_participants_and_staff_may_escalate(
    is_requester_or_cc: bool, is_verified_staff: bool
) -> None:
    decision = decide(
        FRESH, is_requester_or_cc=is_requester_or_cc, is_verified_staff=is_verified_staff
    )
    assert decision.kind == "new"
    assert decision.send_notices


@pytest.mark.parametrize(
    "state", [FRESH, escalated(ago=timedelta(hours=6))], ids=["fresh", "escalated"]
)
def test_a_stranger_escalates_nothing_on_someone_elses_ticket(state: EscalationState) -> None:
    decision = decide(state, is_requester_or_cc=False, is_verified_staff=False)
    assert decision == EscalationDecision(
        kind="not_allowed",
        level=state.level,
        priority=state.priority,
        send_notices=False,
        manager_address=state.manager_address,
        escalated_at=state.escalated_at,
        last_escalated_at=state.last_escalated_at,
    )
    assert not decision.is_recorded
    assert not decision.needs_manager


# --- first escalation ---------------------------------------------------------


def test_first_escalation_starts_level_one_and_raises_priority() -> None:
    decision = decide(FRESH)
    assert decision == EscalationDecision(
        kind="new",
        level=1,
        priority="high",
        send_notices=True,
        manager_address=None,
        escalated_at=NOW,
        last_escalated_at=NOW,
    )
    assert decision.is_recorded
    assert decision.needs_manager


@pytest.mark.parametrize(
    ("before", "after"),
    [("low", "medium"), ("medium", "high"), ("high", "critical"), ("critical", "critical")],
)
def test_priority_goes_up_one_step_and_stops_at_critical(before: str, after: str) -> None:
    assert raised_priority(before) == after
    assert decide(EscalationState(priority=before)).priority == after


def test_priority_is_kept_when_raising_is_disabled() -> None:
    decision = decide(EscalationState(priority="low"), raise_priority=False)
    assert (decision.kind, decision.level, decision.priority) == ("new", 1, "low")
    assert decision.send_notices


# --- repeats ------------------------------------------------------------------


def test_repeat_within_the_window_is_recorded_without_notices() -> None:
    state = escalated(ago=timedelta(hours=1))
    decision = decide(state)
    assert decision.kind == "repeat_in_window"
    assert decision.is_recorded
    assert not decision.send_notices
    assert (decision.level, decision.priority) == (state.level, state.priority)
    # The window keeps its anchor, so a later repeat is measured from the
    # escalation that notified, not from this one.
    assert decision.last_escalated_at == state.last_escalated_at
    assert decision.escalated_at == state.escalated_at


def test_repeat_after_the_window_raises_the_level_and_notifies() -> None:
    state = escalated(ago=timedelta(hours=5), level=2, priority="high", first_ago=timedelta(days=1))
    decision = decide(state)
    assert decision == EscalationDecision(
        kind="raise_level",
        level=3,
        priority="critical",
        send_notices=True,
        manager_address=MANAGER,
        escalated_at=NOW - timedelta(days=1),
        last_escalated_at=NOW,
    )
    assert not decision.needs_manager


@pytest.mark.parametrize(
    ("ago", "kind"),
    [
        # The default window is four hours.
        (timedelta(hours=4) - timedelta(seconds=1), "repeat_in_window"),
        (timedelta(hours=4), "raise_level"),
        (timedelta(0), "repeat_in_window"),
        (-timedelta(minutes=5), "repeat_in_window"),  # clock skew: not time passing
    ],
)
def test_window_boundaries(ago: timedelta, kind: str) -> None:
    assert decide(escalated(ago=ago)).kind == kind


def test_window_is_configurable() -> None:
    state = escalated(ago=timedelta(minutes=45))
    assert decide(state, repeat_window=timedelta(minutes=30)).kind == "raise_level"
    assert decide(state, repeat_window=timedelta(hours=1)).kind == "repeat_in_window"


def test_window_is_measured_from_the_last_notified_escalation() -> None:
    state = escalated(ago=timedelta(hours=1), level=2, first_ago=timedelta(hours=9))
    assert decide(state).kind == "repeat_in_window"


def test_window_falls_back_to_the_first_escalation_when_no_later_one_is_known() -> None:
    recent = EscalationState(priority="high", escalated_at=NOW - timedelta(hours=1), level=1)
    old = EscalationState(priority="high", escalated_at=NOW - timedelta(hours=5), level=1)
    assert decide(recent).kind == "repeat_in_window"
    assert decide(old).kind == "raise_level"


def test_existing_manager_stays_the_dedicated_contact() -> None:
    decision = decide(escalated(ago=timedelta(hours=8), manager=MANAGER))
    assert decision.manager_address == MANAGER
    assert not decision.needs_manager


def test_escalated_ticket_without_a_manager_still_needs_one() -> None:
    decision = decide(escalated(ago=timedelta(hours=1), manager=None))
    assert decision.kind == "repeat_in_window"
    assert decision.needs_manager


def test_critical_ticket_stays_critical_as_levels_rise() -> None:
    decision = decide(escalated(ago=timedelta(hours=5), level=4, priority="critical"))
    assert (decision.kind, decision.level, decision.priority) == ("raise_level", 5, "critical")


# --- a ticket's life as a sequence of attempts --------------------------------

attempt_gaps = st.lists(
    st.tuples(
        st.integers(0, 12 * 60).map(lambda m: timedelta(minutes=m)),
        st.booleans(),  # whether the sender is allowed
    ),
    min_size=1,
    max_size=12,
)


@given(attempt_gaps, st.sampled_from(PRIORITIES), st.booleans())
def test_a_sequence_of_attempts_follows_the_rules(
    attempts: list[tuple[timedelta, bool]], priority: str, raise_priority: bool
) -> None:
    state = EscalationState(priority=priority)
    now = NOW
    notified_at: datetime | None = None  # independent record of the window anchor
    for gap, allowed in attempts:
        now += gap
        decision = decide_escalation(
            state,
            is_requester_or_cc=allowed,
            is_verified_staff=False,
            now=now,
            raise_priority=raise_priority,
        )
        rank_before = PRIORITIES.index(state.priority)
        rank_after = PRIORITIES.index(decision.priority)
        if not allowed:
            expected = "not_allowed"
        elif notified_at is None:
            expected = "new"
        elif now - notified_at < timedelta(hours=4):
            expected = "repeat_in_window"
        else:
            expected = "raise_level"
        assert decision.kind == expected
        assert decision.send_notices == (expected in ("new", "raise_level"))
        if decision.send_notices:
            notified_at = now
            assert decision.level == state.level + 1
            bump = 1 if raise_priority and state.priority != "critical" else 0
            assert rank_after == rank_before + bump
        else:
            assert decision.level == state.level
            assert rank_after == rank_before
        state = EscalationState(
            priority=decision.priority,
            escalated_at=decision.escalated_at,
            level=decision.level,
            last_escalated_at=decision.last_escalated_at,
            manager_address=decision.manager_address or MANAGER,
        )


# --- rejected input -----------------------------------------------------------


def test_unknown_priority_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        EscalationState(priority="urgent")
    with pytest.raises(ValueError, match="unknown priority"):
        raised_priority("Critical")


@pytest.mark.parametrize(
    "build",
    [
        lambda: EscalationState(priority="low", escalated_at=NOW, level=-1),
        lambda: EscalationState(priority="low", level=1),
        lambda: EscalationState(priority="low", escalated_at=NOW),
        lambda: EscalationState(priority="low", last_escalated_at=NOW),
    ],
    ids=["negative-level", "level-without-time", "time-without-level", "last-without-first"],
)
def test_inconsistent_state_is_rejected(build: Callable[[], EscalationState]) -> None:
    with pytest.raises(ValueError):
        build()


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_escalation(
            FRESH, is_requester_or_cc=True, is_verified_staff=False, now=datetime(2024, 1, 17)
        )


def test_negative_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        decide(FRESH, repeat_window=-timedelta(hours=1))
