"""The two SLA clocks of a ticket, replayed from its history.

The state is recomputed from scratch from the creation time, the status
changes and the first public staff reply, never updated incrementally: a
priority or plan change is handled by simply running ``compute_sla`` again
with the new values, and a replay always agrees with the first run.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from helpdesk.sla.calendar import BusinessCalendar, add_business_time, business_time_between
from helpdesk.sla.policy import Plan, Priority, SlaPolicy, calendar_for, resolve_duration


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Target(StrEnum):
    FIRST_RESPONSE = "first_response"
    RESOLUTION = "resolution"


class Phase(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


_RESOLUTION_PHASE = {
    Status.NEW: Phase.RUNNING,
    Status.OPEN: Phase.RUNNING,
    # Pending means waiting on the client: their delay is not ours to count.
    Status.PENDING: Phase.PAUSED,
    Status.RESOLVED: Phase.STOPPED,
    Status.CLOSED: Phase.STOPPED,
}

FIRST_CYCLE = 0


@dataclass(frozen=True)
class StatusChange:
    at: datetime
    status: Status


@dataclass(frozen=True)
class TicketClock:
    """What the SLA clocks depend on. A ticket is "new" at ``created_at``."""

    created_at: datetime
    priority: Priority
    plan: Plan
    status_changes: tuple[StatusChange, ...] = ()
    first_public_reply_at: datetime | None = None

    def __post_init__(self) -> None:
        instants = [self.created_at, *(c.at for c in self.status_changes)]
        if self.first_public_reply_at is not None:
            instants.append(self.first_public_reply_at)
        for t in instants:
            if t.tzinfo is None or t.utcoffset() is None:
                raise ValueError(f"naive datetime {t.isoformat()} in a ticket clock")
        changes = [self.created_at, *(c.at for c in self.status_changes)]
        if any(later < earlier for earlier, later in itertools.pairwise(changes)):
            raise ValueError("status changes must be in time order and not before creation")
        if self.first_public_reply_at is not None and self.first_public_reply_at < self.created_at:
            raise ValueError("the first staff reply cannot come before the ticket was created")


@dataclass(frozen=True)
class ClockState:
    """One target's clock.

    ``elapsed`` is the open time consumed before ``running_since`` (or in
    total, when paused or stopped); ``limit`` is the target in the same open
    time. ``warning_at`` and ``due_at`` are set only while the clock runs.
    ``cycle`` counts reopenings, so notices of a reopened ticket are new.
    ``missed_at`` is the deadline a finished stretch of running overran (the
    first such), so a met-late first response or a late resolution shows as
    missed after the clock stopped; for the running stretch compare ``due_at``
    with the time.
    """

    target: Target
    phase: Phase
    cycle: int
    limit: timedelta
    elapsed: timedelta
    running_since: datetime | None
    warning_at: datetime | None
    due_at: datetime | None
    stopped_at: datetime | None
    missed_at: datetime | None = None


def is_breached(clock: ClockState, now: datetime) -> bool:
    """Whether the target has been missed as of ``now``.

    Meeting a target exactly at its deadline is on time ("by 14:30").
    """
    return clock.missed_at is not None or (clock.due_at is not None and now > clock.due_at)


@dataclass(frozen=True)
class SlaState:
    priority: Priority
    plan: Plan
    first_response: ClockState
    resolution: ClockState
    first_response_met_at: datetime | None

    @property
    def first_response_due(self) -> datetime | None:
        return self.first_response.due_at

    @property
    def resolution_due(self) -> datetime | None:
        return self.resolution.due_at

    @property
    def resolution_elapsed(self) -> timedelta:
        return self.resolution.elapsed

    @property
    def resolution_cycle(self) -> int:
        return self.resolution.cycle

    @property
    def paused(self) -> bool:
        return self.resolution.phase is Phase.PAUSED

    def clock(self, target: Target) -> ClockState:
        return self.first_response if target is Target.FIRST_RESPONSE else self.resolution


def compute_sla(ticket: TicketClock, policy: SlaPolicy) -> SlaState:
    """Both clocks of ``ticket`` after its last recorded event."""
    cal = calendar_for(policy, ticket.plan, ticket.priority)
    targets = policy.targets[ticket.priority]

    stop_statuses = [
        c for c in ticket.status_changes if _RESOLUTION_PHASE[c.status] is Phase.STOPPED
    ]
    first_stop = stop_statuses[0].at if stop_statuses else None
    reply = ticket.first_public_reply_at
    # Resolving without a public reply also ends the wait for one: a ticket
    # closed as spam must not breach its first-response target later.
    met_at = None
    if reply is not None and (first_stop is None or reply <= first_stop):
        met_at = reply.astimezone(UTC)
    first_response_end = met_at or first_stop
    first_response_events = (
        [] if first_response_end is None else [(first_response_end, Phase.STOPPED)]
    )

    first_response = _replay(
        Target.FIRST_RESPONSE,
        ticket.created_at,
        first_response_events,
        cal,
        resolve_duration(targets.first_response, cal),
        policy.warning_share,
    )
    resolution = _replay(
        Target.RESOLUTION,
        ticket.created_at,
        ((c.at, _RESOLUTION_PHASE[c.status]) for c in ticket.status_changes),
        cal,
        resolve_duration(targets.resolution, cal),
        policy.warning_share,
    )
    return SlaState(
        priority=ticket.priority,
        plan=ticket.plan,
        first_response=first_response,
        resolution=resolution,
        first_response_met_at=met_at,
    )


def elapsed_at(clock: ClockState, cal: BusinessCalendar, now: datetime) -> timedelta:
    """Open time the clock has consumed by ``now`` (``cal`` is the clock's calendar)."""
    if clock.phase is not Phase.RUNNING or clock.running_since is None:
        return clock.elapsed
    return clock.elapsed + max(business_time_between(cal, clock.running_since, now), timedelta(0))


def _replay(
    target: Target,
    created_at: datetime,
    events: Iterable[tuple[datetime, Phase]],
    cal: BusinessCalendar,
    limit: timedelta,
    warning_share: float,
) -> ClockState:
    phase = Phase.RUNNING
    since = created_at.astimezone(UTC)
    elapsed = timedelta(0)
    cycle = FIRST_CYCLE
    missed_at: datetime | None = None
    for at, new_phase in events:
        if new_phase is phase:
            continue
        if phase is Phase.RUNNING:
            # Judged against the deadline instant, not consumed open time: a
            # reply at 18:00 to a 17:30 deadline is late though no open time
            # passed in between.
            stretch_due = _when_consumed(cal, since, limit - elapsed)
            if missed_at is None and at > stretch_due:
                missed_at = stretch_due
            elapsed += business_time_between(cal, since, at)
        elif phase is Phase.STOPPED:
            cycle += 1
        phase, since = new_phase, at.astimezone(UTC)

    if phase is not Phase.RUNNING:
        return ClockState(
            target=target,
            phase=phase,
            cycle=cycle,
            limit=limit,
            elapsed=elapsed,
            running_since=None,
            warning_at=None,
            due_at=None,
            stopped_at=since if phase is Phase.STOPPED else None,
            missed_at=missed_at,
        )
    # Consumed time is kept across pauses and reopenings, so resuming pushes the
    # deadline back by exactly the open time spent paused.
    return ClockState(
        target=target,
        phase=phase,
        cycle=cycle,
        limit=limit,
        elapsed=elapsed,
        running_since=since,
        warning_at=_when_consumed(cal, since, limit * warning_share - elapsed),
        due_at=_when_consumed(cal, since, limit - elapsed),
        stopped_at=None,
        missed_at=missed_at,
    )


def _when_consumed(cal: BusinessCalendar, since: datetime, remaining: timedelta) -> datetime:
    # Already past the mark when the clock (re)started: due at once, from the
    # restart, rather than at some instant while the clock was not running.
    if remaining <= timedelta(0):
        return since.astimezone(UTC)
    return add_business_time(cal, since, remaining)
