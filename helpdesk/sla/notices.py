"""Which SLA warnings and breach notices are due for a ticket at a given instant.

A notice is identified by (target, kind, cycle); the shell stores the keys it
has sent under a unique constraint, so asking again after a crash or a double
tick never sends anything twice.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from helpdesk.sla.deadlines import ClockState, Phase, SlaState, Target

DEFAULT_GRACE = timedelta(minutes=5)


class NoticeKind(StrEnum):
    WARNING = "warning"
    BREACH = "breach"


@dataclass(frozen=True)
class NoticeKey:
    target: Target
    kind: NoticeKind
    cycle: int


@dataclass(frozen=True)
class Notice:
    """A notice to send. ``due_at`` is when it became due; ``late`` means the
    daemon noticed it more than the grace period afterwards (it was down)."""

    target: Target
    kind: NoticeKind
    cycle: int
    due_at: datetime
    late: bool

    @property
    def key(self) -> NoticeKey:
        return NoticeKey(self.target, self.kind, self.cycle)


def due_notices(
    state: SlaState,
    now: datetime,
    sent: Set[NoticeKey],
    grace: timedelta = DEFAULT_GRACE,
) -> tuple[Notice, ...]:
    """The notices to send at ``now``, earliest first.

    When a breach is due, a warning for the same target and cycle that was
    never sent is dropped: "75% gone" is stale news once the deadline passed.
    """
    notices: list[Notice] = []
    for clock in (state.first_response, state.resolution):
        ripe = [(kind, at) for kind, at in _outstanding(clock, sent) if at <= now]
        if any(kind is NoticeKind.BREACH for kind, _ in ripe):
            ripe = [(kind, at) for kind, at in ripe if kind is NoticeKind.BREACH]
        notices.extend(
            Notice(clock.target, kind, clock.cycle, at, late=now - at > grace) for kind, at in ripe
        )
    return tuple(sorted(notices, key=lambda n: (n.due_at, n.target, n.kind)))


def judge_late(
    notices: tuple[Notice, ...],
    priority_changed_at: datetime | None,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> tuple[Notice, ...]:
    """``notices`` with ``late`` judged against the last priority change.

    ``late`` means "its time passed while we were not running". A priority
    change recomputes deadlines from creation, so a deadline can land in the
    past at once: such a notice was not knowable before the change, and is
    only late if the change itself went unnoticed for longer than ``grace``.
    """
    if priority_changed_at is None:
        return notices
    return tuple(
        replace(n, late=now - max(n.due_at, priority_changed_at) > grace) if n.late else n
        for n in notices
    )


def next_wakeup(state: SlaState, sent: Set[NoticeKey]) -> datetime | None:
    """When the next unsent notice becomes due, or None if none can.

    May be in the past, when a notice is due but not yet sent: the scheduler
    should then run at once. This is the value for the ``next_sla_at`` index.
    """
    instants = [
        at
        for clock in (state.first_response, state.resolution)
        for _, at in _outstanding(clock, sent)
    ]
    return min(instants, default=None)


def _outstanding(clock: ClockState, sent: Set[NoticeKey]) -> list[tuple[NoticeKind, datetime]]:
    """The clock's notices not yet sent nor superseded by a sent breach."""
    # A paused or stopped clock asks nothing of anyone: no notices. Anything
    # still unsent when it resumes is picked up then, from the resumed state.
    if clock.phase is not Phase.RUNNING or clock.warning_at is None or clock.due_at is None:
        return []
    if NoticeKey(clock.target, NoticeKind.BREACH, clock.cycle) in sent:
        return []
    outstanding: list[tuple[NoticeKind, datetime]] = []
    warning_sent = NoticeKey(clock.target, NoticeKind.WARNING, clock.cycle) in sent
    # A warning at the deadline itself would only ever be superseded.
    if not warning_sent and clock.warning_at < clock.due_at:
        outstanding.append((NoticeKind.WARNING, clock.warning_at))
    outstanding.append((NoticeKind.BREACH, clock.due_at))
    return outstanding
