"""Follow-the-sun choice of incident manager.

The incident team is spread over APAC, AMER and EMEA, each member working
their own local office hours, so that together they cover the working week
around the clock. Who takes an escalation depends on the instant it arrives:
the client's own region if that manager is at work, else whoever is at work,
else whoever starts first.

Shifts are computed from each manager's local wall clock with ``zoneinfo``,
so daylight saving (opposite in Sydney to London and New York) moves the UTC
hours of a shift without anyone having to maintain a table. Every datetime
in and out of this module is timezone-aware; results are in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ChoiceReason = Literal["region_on_duty", "on_duty", "next_on_duty"]

MONDAY_TO_FRIDAY: frozenset[int] = frozenset(range(5))


@dataclass(frozen=True)
class WorkingHours:
    """A manager's weekly shift in their local time.

    ``weekdays`` uses ``date.weekday()`` numbering (Monday is 0). A shift
    starts and ends on the same local day; ``start`` is inclusive and ``end``
    exclusive, so at 17:00 a 09:00-17:00 manager has gone home.
    """

    weekdays: frozenset[int] = MONDAY_TO_FRIDAY
    start: time = time(9)
    end: time = time(17)

    def __post_init__(self) -> None:
        if not self.weekdays:
            raise ValueError("working hours need at least one working day")
        if not self.weekdays <= frozenset(range(7)):
            raise ValueError(
                f"weekdays must be 0 (Monday) to 6 (Sunday), got {sorted(self.weekdays)}"
            )
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError(
                "working hours are local wall-clock times; the timezone is the manager's"
            )
        if self.start >= self.end:
            # Overnight shifts would need a shift to belong to two local days;
            # no one on the team works one, so keep the arithmetic simple.
            raise ValueError(
                f"a shift must end after it starts on the same day: {self.start}-{self.end}"
            )


@dataclass(frozen=True)
class Manager:
    """One incident manager. ``region`` is "APAC", "AMER" or "EMEA"."""

    name: str
    address: str
    region: str
    timezone: str
    hours: WorkingHours = WorkingHours()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"manager {self.name!r}: unknown timezone {self.timezone!r}") from exc

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class Choice:
    """Who takes an escalation, why, and from when they can act on it.

    ``on_duty_from`` is the instant of the choice when the manager is at work,
    otherwise the start of their next shift.
    """

    manager: Manager
    reason: ChoiceReason
    on_duty_from: datetime


@dataclass(frozen=True)
class _Shift:
    start: datetime
    end: datetime


def is_on_duty(manager: Manager, now: datetime) -> bool:
    now = _utc(now)
    return _shift_ending_after(manager, now).start <= now


def next_on_duty_start(manager: Manager, now: datetime) -> datetime:
    """When ``manager`` is next at work, in UTC: ``now`` itself if at work already."""
    now = _utc(now)
    return max(_shift_ending_after(manager, now).start, now)


def choose_manager(managers: Sequence[Manager], client_region: str | None, now: datetime) -> Choice:
    """Pick the manager for an escalation arriving at ``now``.

    1. the client's region's manager, if at work;
    2. else a manager at work, the one with the most of their shift left (so
       the case is not handed over again within minutes);
    3. else the manager whose next shift starts first, preferring the client's
       region on a tie.

    Remaining ties go to the earlier manager in ``managers``. Regions compare
    case-insensitively.
    """
    now = _utc(now)
    if not managers:
        raise ValueError("no incident managers configured: an escalation needs someone to go to")
    shifts = [(manager, _shift_ending_after(manager, now)) for manager in managers]
    on_duty = [(manager, shift) for manager, shift in shifts if shift.start <= now]
    if on_duty:
        in_region = [(m, s) for m, s in on_duty if _is_region(m, client_region)]
        reason: ChoiceReason = "region_on_duty" if in_region else "on_duty"
        # max() keeps the first of equal keys, which is the list-order tie-break.
        chosen, _ = max(in_region or on_duty, key=lambda pair: pair[1].end)
        return Choice(chosen, reason, now)
    chosen, shift = min(
        shifts, key=lambda pair: (pair[1].start, not _is_region(pair[0], client_region))
    )
    return Choice(chosen, "next_on_duty", shift.start)


def coverage_deadline(
    managers: Sequence[Manager], start: datetime, duration: timedelta
) -> datetime:
    """The instant by which ``duration`` of covered time has passed since ``start``.

    Covered time is time when at least one manager is at work; the clock
    stops whenever nobody is. An escalation on Saturday with an hour's target
    is therefore due an hour into the first Monday shift anywhere. With a zero
    duration the answer is the first covered instant at or after ``start``,
    since that is when the clock would start.
    """
    start = _utc(start)
    if not managers:
        raise ValueError("no incident managers configured: there is no coverage to count")
    if duration < timedelta(0):
        raise ValueError(f"duration must not be negative, got {duration}")
    clock = start
    remaining = duration
    while True:
        shift_ends = [
            shift.end
            for shift in (_shift_ending_after(manager, clock) for manager in managers)
            if shift.start <= clock
        ]
        if not shift_ends:
            clock = _first_covered(managers, clock)
            continue
        # Advance to the last end among the shifts in progress and look again,
        # rather than seeking the end of the covered stretch: a rota covering
        # round the clock has no such end.
        latest_end = max(shift_ends)
        if remaining <= latest_end - clock:
            return clock + remaining
        remaining -= latest_end - clock
        clock = latest_end


def next_manager_after(managers: Sequence[Manager], current: Manager, now: datetime) -> Manager:
    """Whom to remind when ``current`` has missed an acknowledgement target.

    The manager at work now other than ``current`` (most shift left), else the
    next other one to start. Managers are told apart by address, so a
    ``current`` rebuilt from a stored address still matches. When ``current``
    is the only manager there is nobody else, and ``current`` is returned.
    """
    if not managers:
        raise ValueError("no incident managers configured: there is nobody to remind")
    others = [m for m in managers if m.address.casefold() != current.address.casefold()]
    if not others:
        return current
    return choose_manager(others, None, now).manager


def _first_covered(managers: Sequence[Manager], now: datetime) -> datetime:
    return min(next_on_duty_start(manager, now) for manager in managers)


def _shift_ending_after(manager: Manager, now: datetime) -> _Shift:
    """The shift in progress at ``now``, or else the next one."""
    return next(shift for shift in _shifts_from(manager, now) if shift.end > now)


def _shifts_from(manager: Manager, now: datetime) -> Iterator[_Shift]:
    """The manager's shifts in time order, from the local day before ``now`` on.

    Starting a day early is for the rare zone whose clocks jump at midnight,
    where a late shift can be pushed across into the next local day.
    """
    zone = manager.zone
    day = now.astimezone(zone).date() - timedelta(days=1)
    while True:
        if day.weekday() in manager.hours.weekdays:
            yield _Shift(
                start=_local(day, manager.hours.start, zone),
                end=_local(day, manager.hours.end, zone),
            )
        day += timedelta(days=1)


def _local(day: date, wall: time, zone: ZoneInfo) -> datetime:
    # fold=0 puts an ambiguous wall time (clocks going back) at its first
    # occurrence, and reads a wall time inside a spring-forward gap on the
    # old clock (02:30 becomes 03:30), so custom hours never vanish on that day.
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def _is_region(manager: Manager, region: str | None) -> bool:
    return region is not None and manager.region.casefold() == region.casefold()


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)
