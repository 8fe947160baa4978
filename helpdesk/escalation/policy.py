"""What an escalation attempt on a ticket does.

The shell has already recognised an escalation (a subject marker or mail to
the escalation address) and found the ticket; this decides whether the
sender may escalate it, whether it is a fresh escalation, a repeat to record
quietly, or a repeat late enough to raise the level and notify again.

The repeat window runs from the last escalation that sent notices. A repeat
inside it does not restart the window, so a client who re-escalates every
few hours is heard once per window instead of never.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

DecisionKind = Literal["new", "repeat_in_window", "raise_level", "not_allowed"]

# Lowest first. Plain strings so this module does not depend on how the SLA
# package spells its priority type; a StrEnum member compares equal to these.
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
DEFAULT_REPEAT_WINDOW = timedelta(hours=4)


@dataclass(frozen=True)
class EscalationState:
    """A ticket's escalation so far.

    ``level`` is 0 until the first escalation. ``last_escalated_at`` is the
    last escalation that notified anyone (the repeat window's anchor); when
    absent the first escalation is used.
    """

    priority: str
    escalated_at: datetime | None = None
    level: int = 0
    last_escalated_at: datetime | None = None
    manager_address: str | None = None

    def __post_init__(self) -> None:
        _check_priority(self.priority)
        if self.level < 0:
            raise ValueError(f"escalation level cannot be negative, got {self.level}")
        if (self.escalated_at is None) != (self.level == 0):
            raise ValueError(
                "a ticket is escalated exactly when its level is above 0: "
                f"escalated_at={self.escalated_at}, level={self.level}"
            )
        if self.escalated_at is None and self.last_escalated_at is not None:
            raise ValueError("last_escalated_at is set but the ticket was never escalated")


@dataclass(frozen=True)
class EscalationDecision:
    """The ticket's escalation state after the attempt, and what to send.

    ``manager_address`` is the ticket's existing dedicated manager, kept for
    every later escalation; ``None`` means the shell must choose one from the
    rota (see ``needs_manager``).
    """

    kind: DecisionKind
    level: int
    priority: str
    send_notices: bool
    manager_address: str | None
    escalated_at: datetime | None
    last_escalated_at: datetime | None

    @property
    def is_recorded(self) -> bool:
        """Whether the attempt belongs in this ticket's history."""
        return self.kind != "not_allowed"

    @property
    def needs_manager(self) -> bool:
        return self.is_recorded and self.manager_address is None


def decide_escalation(
    state: EscalationState,
    *,
    is_requester_or_cc: bool,
    is_verified_staff: bool,
    now: datetime,
    repeat_window: timedelta = DEFAULT_REPEAT_WINDOW,
    raise_priority: bool = True,
) -> EscalationDecision:
    """Decide what one escalation attempt does to a ticket.

    The requester, CC participants and verified staff may escalate. Anyone
    else gets ``not_allowed`` and the ticket is left as it was: a stranger
    cannot raise the alarm on someone else's ticket (the shell opens a new
    escalated ticket for them instead).

    An attempt less than ``repeat_window`` after the last notified one is
    recorded without notices; at or after the window the level goes up and
    notices go out again. Each notified escalation raises the priority one
    step, up to "critical", unless ``raise_priority`` is off.

    A ``now`` before the window's anchor (clock skew, a replayed message)
    counts as inside the window: it is not evidence that time has passed.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {now.isoformat()}")
    if repeat_window < timedelta(0):
        raise ValueError(f"repeat window must not be negative, got {repeat_window}")
    if not (is_requester_or_cc or is_verified_staff):
        return _unchanged(state, "not_allowed")
    anchor = state.last_escalated_at or state.escalated_at
    if anchor is None:
        kind: DecisionKind = "new"
    elif now - anchor < repeat_window:
        return _unchanged(state, "repeat_in_window")
    else:
        kind = "raise_level"
    return EscalationDecision(
        kind=kind,
        level=state.level + 1,
        priority=raised_priority(state.priority) if raise_priority else state.priority,
        send_notices=True,
        manager_address=state.manager_address,
        escalated_at=state.escalated_at or now,
        last_escalated_at=now,
    )


def raised_priority(priority: str) -> str:
    """One step up from ``priority``; "critical" stays "critical"."""
    index = _check_priority(priority)
    return PRIORITIES[min(index + 1, len(PRIORITIES) - 1)]


def _unchanged(state: EscalationState, kind: DecisionKind) -> EscalationDecision:
    return EscalationDecision(
        kind=kind,
        level=state.level,
        priority=state.priority,
        send_notices=False,
        manager_address=state.manager_address,
        escalated_at=state.escalated_at,
        last_escalated_at=state.last_escalated_at,
    )


def _check_priority(priority: str) -> int:
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
    return PRIORITIES.index(priority)
