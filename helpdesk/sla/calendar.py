"""When the service desk is open, and time arithmetic that only counts open time.

Opening hours are wall-clock ranges in a named zone; every instant crossing this
module's API is timezone-aware and results are returned in UTC. Local time is
used only to turn "Monday 09:00-17:30" into UTC intervals for one day at a time,
so daylight-saving changes fall out of ``zoneinfo`` rather than special cases.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

_MIDNIGHT = time(0)
_ONE_DAY = timedelta(days=1)
_NO_TIME = timedelta(0)
# A calendar that stays shut for this many consecutive days is treated as never
# opening, so a misconfiguration (everything closed) fails instead of looping.
_MAX_CLOSED_RUN_DAYS = 2 * 366


@dataclass(frozen=True)
class OpenRange:
    """Opening hours within one local day, half-open: ``[start, end)``.

    An ``end`` of 00:00 means midnight at the end of the day, because neither
    ``datetime.time`` nor TOML can spell 24:00.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("opening hours are local wall-clock times; drop the tzinfo")
        if self.end != _MIDNIGHT and self.end <= self.start:
            raise ValueError(f"opening range {self.start}-{self.end} ends before it starts")

    @property
    def length(self) -> timedelta:
        """Nominal length, ignoring any daylight-saving change on the day."""
        anchor = date(2000, 1, 3)
        end_day = anchor + _ONE_DAY if self.end == _MIDNIGHT else anchor
        return datetime.combine(end_day, self.end) - datetime.combine(anchor, self.start)


WeeklyHours = tuple[tuple[OpenRange, ...], ...]
"""Seven entries, Monday first, each the day's ranges in order."""

ALL_DAY = OpenRange(_MIDNIGHT, _MIDNIGHT)


def week_of(ranges: Iterable[OpenRange], weekdays: Iterable[int] = range(5)) -> WeeklyHours:
    """The same ``ranges`` on each of ``weekdays`` (0 = Monday), closed on the others."""
    day_ranges = tuple(ranges)
    open_days = set(weekdays)
    return tuple(day_ranges if day in open_days else () for day in range(7))


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly opening hours in ``timezone``, minus bank holidays and closures.

    Bank holidays come from the ``holidays`` package for ``holiday_country``
    (and ``holiday_subdiv``), fetched per year on first use; ``closed_dates``
    adds local dates on which the desk is shut all day.
    """

    timezone: str
    weekly: WeeklyHours
    closed_dates: frozenset[date] = frozenset()
    holiday_country: str | None = None
    holiday_subdiv: str | None = None

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if len(self.weekly) != 7:
            raise ValueError("weekly hours need seven days, Monday first")
        for ranges in self.weekly:
            for earlier, later in itertools.pairwise(ranges):
                if earlier.end == _MIDNIGHT or later.start < earlier.end:
                    raise ValueError("a day's opening ranges must be in order and not overlap")
        if not any(self.weekly):
            raise ValueError("a business calendar must be open at some time in the week")
        if self.holiday_country is not None:
            # Checked here, when the configuration is loaded, rather than
            # failing at the first deadline that reaches a new year.
            subdivisions = _holiday_subdivisions().get(self.holiday_country)
            if subdivisions is None:
                raise ValueError(f"no bank holidays known for country {self.holiday_country!r}")
            if self.holiday_subdiv and self.holiday_subdiv not in subdivisions:
                raise ValueError(
                    f"no subdivision {self.holiday_subdiv!r} of {self.holiday_country!r}"
                )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def day_length(self) -> timedelta:
        """What one "business day" of a target means: the longest day of the week.

        8.5 hours for 09:00-17:30, 24 hours for a 24x7 calendar.
        """
        return max(sum((r.length for r in ranges), _NO_TIME) for ranges in self.weekly)

    @property
    def is_always_open(self) -> bool:
        """Open every instant, so business time is plain elapsed time."""
        return (
            all(ranges == (ALL_DAY,) for ranges in self.weekly)
            and not self.closed_dates
            and self.holiday_country is None
        )


def always_open() -> BusinessCalendar:
    """The 24x7 calendar: every instant counts, holidays and DST included."""
    return BusinessCalendar(timezone="UTC", weekly=week_of((ALL_DAY,), range(7)))


def uk_business_calendar(
    extra_closures: Iterable[date] = (),
    *,
    opens: time = time(9, 0),
    closes: time = time(17, 30),
    timezone: str = "Europe/London",
) -> BusinessCalendar:
    """Monday to Friday office hours in London, shut on England and Wales bank holidays."""
    return BusinessCalendar(
        timezone=timezone,
        weekly=week_of((OpenRange(opens, closes),)),
        closed_dates=frozenset(extra_closures),
        holiday_country="GB",
        holiday_subdiv="ENG",
    )


def is_open(cal: BusinessCalendar, t: datetime) -> bool:
    """Whether ``t`` falls inside an opening range (a range's end is already closed)."""
    utc = _as_utc(t)
    if cal.is_always_open:
        return True
    day = utc.astimezone(cal.zone).date()
    # The previous day is checked too: see _open_intervals_from.
    return any(
        start <= utc < end for d in (day - _ONE_DAY, day) for start, end in _day_intervals(cal, d)
    )


def next_open(cal: BusinessCalendar, t: datetime) -> datetime:
    """``t`` itself if the desk is open then, else the next instant it opens (UTC)."""
    utc = _as_utc(t)
    if cal.is_always_open:
        return utc
    first = next(_open_intervals_from(cal, utc), None)
    if first is None:
        raise ValueError("the calendar never opens after this instant")
    return first[0]


def add_business_time(cal: BusinessCalendar, start: datetime, duration: timedelta) -> datetime:
    """The instant by which ``duration`` of open time has passed since ``start`` (UTC).

    A positive duration always ends inside an opening range or exactly at the
    end of one (a 1-day target from 09:00 is due 17:30 that day, not 09:00 the
    next). Walks one day of opening ranges at a time, so five business days
    cost about a week of steps, however short the ranges.
    """
    utc = _as_utc(start)
    if duration < _NO_TIME:
        raise ValueError("business time cannot be negative")
    if duration == _NO_TIME or cal.is_always_open:
        return utc + duration
    remaining = duration
    for interval_start, interval_end in _open_intervals_from(cal, utc):
        available = interval_end - interval_start
        if remaining <= available:
            return interval_start + remaining
        remaining -= available
    raise ValueError("the calendar never opens after this instant")


def business_time_between(cal: BusinessCalendar, a: datetime, b: datetime) -> timedelta:
    """Open time from ``a`` to ``b``; negative when ``b`` is before ``a``."""
    start, end = _as_utc(a), _as_utc(b)
    if end < start:
        return -business_time_between(cal, end, start)
    if cal.is_always_open:
        return end - start
    total = _NO_TIME
    for interval_start, interval_end in _open_intervals_from(cal, start):
        if interval_start >= end:
            break
        total += min(interval_end, end) - interval_start
    return total


def is_closed_day(cal: BusinessCalendar, day: date) -> bool:
    """Whether the local date ``day`` is a bank holiday or an extra closure."""
    if day in cal.closed_dates:
        return True
    if cal.holiday_country is None:
        return False
    return day in _public_holidays(cal.holiday_country, cal.holiday_subdiv, day.year)


@functools.cache
def _holiday_subdivisions() -> dict[str, list[str]]:
    supported: dict[str, list[str]] = holidays.list_supported_countries()
    return supported


@functools.cache
def _public_holidays(country: str, subdiv: str | None, year: int) -> frozenset[date]:
    # Cached per year so a deadline years ahead costs one lookup for that year,
    # and the process never holds a precomputed (and eventually stale) range.
    return frozenset(holidays.country_holidays(country, subdiv=subdiv, years=year))


def _day_intervals(cal: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The local date's opening ranges as ordered, non-overlapping UTC intervals."""
    if is_closed_day(cal, day):
        return []
    zone = cal.zone
    intervals: list[tuple[datetime, datetime]] = []
    for r in cal.weekly[day.weekday()]:
        end_day = day + _ONE_DAY if r.end == _MIDNIGHT else day
        start = datetime.combine(day, r.start, tzinfo=zone).astimezone(UTC)
        end = datetime.combine(end_day, r.end, tzinfo=zone).astimezone(UTC)
        if intervals:
            # A wall time inside a spring-forward gap maps to the pre-change
            # offset, which can land before the previous range's end.
            start = max(start, intervals[-1][1])
        if end > start:
            intervals.append((start, end))
    return intervals


def _open_intervals_from(cal: BusinessCalendar, t: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Open intervals ending after UTC ``t``, in order, the first clipped to start at ``t``.

    Stops (rather than looping for ever) after a long run of closed days.
    """
    # Start one local day early: where midnight itself is skipped or repeated by
    # a DST change, the previous day's last range can end after ``t``'s midnight.
    day = t.astimezone(cal.zone).date() - _ONE_DAY
    closed_run = 0
    while closed_run <= _MAX_CLOSED_RUN_DAYS:
        intervals = _day_intervals(cal, day)
        for start, end in intervals:
            if end > t:
                yield max(start, t), end
        closed_run = 0 if intervals else closed_run + 1
        day += _ONE_DAY


def _as_utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()}; the SLA core needs aware datetimes")
    return t.astimezone(UTC)
