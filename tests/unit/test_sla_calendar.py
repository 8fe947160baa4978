"""Business-time arithmetic: worked examples, DST, holidays, and properties.

The oracle at the bottom re-derives "is the office open" straight from local
wall-clock time and the ``holidays`` package, in quarter-hour steps, so the
interval walk in ``helpdesk.sla.calendar`` is checked against something that
shares none of its code.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpdesk.sla.calendar import (
    ALL_DAY,
    BusinessCalendar,
    OpenRange,
    add_business_time,
    always_open,
    business_time_between,
    is_closed_day,
    is_open,
    next_open,
    uk_business_calendar,
    week_of,
)

LONDON = ZoneInfo("Europe/London")
UK = uk_business_calendar()
QUARTER = timedelta(minutes=15)
MICRO = timedelta(microseconds=1)
PROPERTY = settings(database=None, deadline=None, max_examples=200)
# Random calendars can be open a quarter of an hour a week: fewer, costlier cases.
ARBITRARY = settings(database=None, deadline=None, max_examples=100)


def london(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A London wall-clock time as the UTC instant the API deals in."""
    return datetime(year, month, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


def hours(h: float) -> timedelta:
    return timedelta(hours=h)


# --- worked examples -------------------------------------------------------


def test_one_hour_from_friday_1645_before_spring_change_lands_on_monday_in_bst() -> None:
    # Clocks go forward on Sunday 30 March 2025: Friday closes at 17:30 GMT,
    # Monday opens at 09:00 BST, which is 08:00 UTC.
    due = add_business_time(UK, london(2025, 3, 28, 16, 45), hours(1))
    assert due == london(2025, 3, 31, 9, 15)
    assert due == datetime(2025, 3, 31, 8, 15, tzinfo=UTC)


def test_one_hour_from_friday_1645_before_autumn_change_lands_on_monday_in_gmt() -> None:
    # Clocks go back on Sunday 26 October 2025.
    due = add_business_time(UK, london(2025, 10, 24, 16, 45), hours(1))
    assert due == london(2025, 10, 27, 9, 15)
    assert due == datetime(2025, 10, 27, 9, 15, tzinfo=UTC)


def test_business_time_over_a_dst_weekend_counts_only_office_hours() -> None:
    friday = london(2025, 3, 28, 16, 45)
    monday = london(2025, 3, 31, 9, 15)
    assert business_time_between(UK, friday, monday) == hours(1)
    # 64.5 hours of wall time passed, one of them lost to the clock change.
    assert monday - friday == hours(63.5)


def test_easter_bank_holidays_are_skipped() -> None:
    # Good Friday 18 April and Easter Monday 21 April 2025.
    due = add_business_time(UK, london(2025, 4, 17, 16, 0), hours(4))
    assert due == london(2025, 4, 22, 11, 30)


def test_christmas_and_boxing_day_are_skipped() -> None:
    due = add_business_time(UK, london(2025, 12, 24, 17, 0), hours(1))
    assert due == london(2025, 12, 29, 9, 30)


def test_substitute_bank_holiday_is_skipped() -> None:
    # Boxing Day 2020 fell on a Saturday; Monday 28 December was the substitute.
    due = add_business_time(UK, london(2020, 12, 24, 17, 0), hours(1))
    assert due == london(2020, 12, 29, 9, 30)


def test_extra_closures_from_config_are_skipped() -> None:
    cal = uk_business_calendar([date(2025, 6, 3)])
    due = add_business_time(cal, london(2025, 6, 2, 17, 0), hours(1))
    assert due == london(2025, 6, 4, 9, 30)
    assert add_business_time(UK, london(2025, 6, 2, 17, 0), hours(1)) == london(2025, 6, 3, 9, 30)


def test_holidays_are_found_for_any_year_not_a_precomputed_range() -> None:
    assert is_closed_day(UK, date(2087, 12, 25))
    assert not is_closed_day(UK, date(2087, 12, 24))
    assert not is_open(UK, london(2087, 12, 25, 12, 0))


def test_a_full_day_from_opening_ends_at_closing_not_next_morning() -> None:
    monday = london(2025, 6, 2, 9, 0)
    assert add_business_time(UK, monday, UK.day_length) == london(2025, 6, 2, 17, 30)


def test_five_business_days_is_a_calendar_week_without_holidays() -> None:
    start = london(2025, 6, 4, 11, 0)
    assert add_business_time(UK, start, UK.day_length * 5) == london(2025, 6, 11, 11, 0)


def test_start_in_closed_time_counts_from_next_opening() -> None:
    saturday = london(2025, 6, 7, 12, 0)
    assert add_business_time(UK, saturday, hours(2)) == london(2025, 6, 9, 11, 0)


def test_zero_duration_is_the_start_even_when_closed() -> None:
    saturday = london(2025, 6, 7, 12, 0)
    assert add_business_time(UK, saturday, timedelta(0)) == saturday


def test_several_ranges_per_day_skip_the_gap_between_them() -> None:
    lunch_break = BusinessCalendar(
        timezone="Europe/London",
        weekly=week_of((OpenRange(time(9), time(12, 30)), OpenRange(time(13, 30), time(17, 30)))),
    )
    assert add_business_time(lunch_break, london(2025, 6, 2, 11, 0), hours(4)) == london(
        2025, 6, 2, 16, 0
    )
    assert not is_open(lunch_break, london(2025, 6, 2, 13, 0))
    assert lunch_break.day_length == hours(7.5)


def test_opening_boundaries_are_half_open() -> None:
    assert is_open(UK, london(2025, 6, 2, 9, 0))
    assert is_open(UK, london(2025, 6, 2, 17, 30) - MICRO)
    assert not is_open(UK, london(2025, 6, 2, 17, 30))
    assert not is_open(UK, london(2025, 6, 2, 9, 0) - MICRO)
    assert not is_open(UK, london(2025, 6, 7, 12, 0))  # Saturday


def test_next_open_is_the_instant_itself_when_open_else_next_opening() -> None:
    open_now = london(2025, 6, 2, 10, 0)
    assert next_open(UK, open_now) == open_now
    assert next_open(UK, london(2025, 6, 6, 17, 30)) == london(2025, 6, 9, 9, 0)
    assert next_open(UK, london(2025, 4, 17, 18, 0)) == london(2025, 4, 22, 9, 0)


def test_business_time_between_is_antisymmetric() -> None:
    a, b = london(2025, 6, 6, 16, 0), london(2025, 6, 9, 10, 0)
    assert business_time_between(UK, a, b) == hours(2.5)
    assert business_time_between(UK, b, a) == -hours(2.5)


def test_day_length_of_the_default_and_24x7_calendars() -> None:
    assert UK.day_length == hours(8.5)
    assert always_open().day_length == hours(24)


def test_results_are_utc_whatever_zone_the_input_uses() -> None:
    start = datetime(2025, 6, 2, 10, 0, tzinfo=LONDON)
    due = add_business_time(UK, start, hours(1))
    assert due.utcoffset() == timedelta(0)
    assert due == datetime(2025, 6, 2, 11, 0, tzinfo=LONDON)


def test_24x7_calendar_ignores_weekends_holidays_and_dst() -> None:
    cal = always_open()
    christmas_day = datetime(2025, 12, 25, 3, 0, tzinfo=UTC)
    assert add_business_time(cal, christmas_day, hours(4)) == christmas_day + hours(4)
    spring_change = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
    assert add_business_time(cal, spring_change, hours(2)) == datetime(
        2025, 3, 30, 2, 30, tzinfo=UTC
    )


def test_london_full_days_count_23_and_25_hours_on_dst_sundays() -> None:
    # Full days in London, kept off the always-open shortcut by a closure long
    # ago, so the day-by-day walk itself has to get the short and long days right.
    cal = BusinessCalendar(
        timezone="Europe/London",
        weekly=week_of((ALL_DAY,), range(7)),
        closed_dates=frozenset({date(1990, 1, 1)}),
    )
    assert not cal.is_always_open
    spring = business_time_between(cal, london(2025, 3, 30, 0, 0), london(2025, 3, 31, 0, 0))
    autumn = business_time_between(cal, london(2025, 10, 26, 0, 0), london(2025, 10, 27, 0, 0))
    assert (spring, autumn) == (hours(23), hours(25))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: OpenRange(time(17), time(9)), "ends before it starts"),
        (
            lambda: BusinessCalendar(
                "Europe/London",
                week_of((OpenRange(time(9), time(13)), OpenRange(time(12), time(17)))),
            ),
            "not overlap",
        ),
        (lambda: BusinessCalendar("Europe/London", ((),) * 7), "open at some time"),
        (lambda: BusinessCalendar("Mars/Olympus_Mons", week_of((ALL_DAY,))), "time zone"),
        (lambda: BusinessCalendar("UTC", ((ALL_DAY,),) * 6), "seven days"),
        (lambda: BusinessCalendar("UTC", week_of((ALL_DAY,)), holiday_country="XX"), "country"),
        (
            lambda: BusinessCalendar(
                "UTC", week_of((ALL_DAY,)), holiday_country="GB", holiday_subdiv="XYZ"
            ),
            "subdivision",
        ),
    ],
)
def test_invalid_calendars_are_rejected(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_naive_datetimes_and_negative_durations_are_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        add_business_time(UK, datetime(2025, 6, 2, 9, 0), hours(1))
    with pytest.raises(ValueError, match="negative"):
        add_business_time(UK, london(2025, 6, 2, 9, 0), -hours(1))


def test_a_calendar_closed_on_every_open_day_reports_it_never_opens() -> None:
    start = date(2025, 1, 1)
    shut = uk_business_calendar(start + timedelta(days=n) for n in range(800))
    with pytest.raises(ValueError, match="never opens"):
        add_business_time(shut, london(2025, 1, 1, 9, 0), hours(1))


def test_adding_a_year_of_business_time_walks_days_not_minutes() -> None:
    # 250 business days; a minute-by-minute walk would take ~500k steps.
    start = london(2025, 1, 2, 9, 0)
    due = add_business_time(UK, start, UK.day_length * 250)
    assert business_time_between(UK, start, due) == UK.day_length * 250
    assert date(2025, 12, 15) < due.date() < date(2026, 1, 15)


# --- properties on the UK calendar ------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2045, 12, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=hours(8.5 * 12))
positive_durations = st.timedeltas(min_value=MICRO, max_value=hours(8.5 * 12))


@PROPERTY
@given(start=instants, duration=positive_durations)
def test_deadline_is_never_in_closed_time(start: datetime, duration: timedelta) -> None:
    due = add_business_time(UK, start, duration)
    # Open just before the deadline: inside a range, or exactly at its end.
    assert is_open(UK, due - MICRO)
    local = (due - MICRO).astimezone(LONDON)
    assert local.weekday() < 5
    assert local.date() not in _bank_holidays(local.year)


@PROPERTY
@given(start=instants, a=durations, b=durations)
def test_more_time_never_gives_an_earlier_deadline(
    start: datetime, a: timedelta, b: timedelta
) -> None:
    shorter, longer = sorted((a, b))
    assert add_business_time(UK, start, shorter) <= add_business_time(UK, start, longer)


@PROPERTY
@given(start=instants, duration=durations)
def test_time_between_start_and_deadline_is_the_duration(
    start: datetime, duration: timedelta
) -> None:
    assert business_time_between(UK, start, add_business_time(UK, start, duration)) == duration


@PROPERTY
@given(start=instants, duration=durations)
def test_24x7_deadline_is_start_plus_duration(start: datetime, duration: timedelta) -> None:
    cal = always_open()
    assert add_business_time(cal, start, duration) == start + duration
    assert business_time_between(cal, start, start + duration) == duration
    assert is_open(cal, start)


def _dst_changes() -> list[datetime]:
    """Local midnights of the London clock-change Sundays, 2000-2040."""
    sundays = []
    for year, month in itertools.product(range(2000, 2041), (3, 10)):
        last = date(year, month, 31)
        sundays.append(datetime.combine(last - timedelta(days=(last.weekday() + 1) % 7), time()))
    return sundays


near_dst_change = st.builds(
    lambda sunday, offset: (sunday + offset).replace(tzinfo=LONDON).astimezone(UTC),
    st.sampled_from(_dst_changes()),
    st.timedeltas(min_value=-timedelta(days=4), max_value=timedelta(days=2)),
)


@functools.cache
def _bank_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year))


def _oracle_open(t: datetime) -> bool:
    local = t.astimezone(LONDON)
    bank = _bank_holidays(local.year)
    return (
        local.weekday() < 5 and local.date() not in bank and time(9) <= local.time() < time(17, 30)
    )


def _oracle_add(start: datetime, quarters: int) -> datetime:
    t = start
    while quarters:
        if _oracle_open(t):
            quarters -= 1
        t += QUARTER
    return t


@PROPERTY
@given(
    start=st.one_of(near_dst_change, instants).map(
        lambda t: t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
    ),
    quarters=st.integers(min_value=1, max_value=4 * 26),
)
def test_deadlines_agree_with_a_wall_clock_oracle(start: datetime, quarters: int) -> None:
    # Every boundary of the UK calendar is on a quarter hour in UTC and in
    # London time, so a quarter-hour walk is exact.
    assert add_business_time(UK, start, QUARTER * quarters) == _oracle_add(start, quarters)


@PROPERTY
@given(start=near_dst_change, duration=positive_durations)
def test_deadlines_across_dst_changes_are_in_open_time(
    start: datetime, duration: timedelta
) -> None:
    due = add_business_time(UK, start, duration)
    assert _oracle_open(due - MICRO)
    assert business_time_between(UK, start, due) == duration


# --- properties on arbitrary calendars --------------------------------------

ZONES = (
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Havana",  # clocks change at midnight
    "Asia/Kolkata",
    "UTC",
)


def _quarter(n: int) -> time:
    return time(0) if n == 96 else time(n // 4, n % 4 * 15)


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    week = []
    for _ in range(7):
        points = sorted(draw(st.sets(st.integers(min_value=0, max_value=96), max_size=6)))
        pairs = zip(points[::2], points[1::2], strict=False)
        week.append(tuple(OpenRange(_quarter(a), _quarter(b)) for a, b in pairs))
    assume(any(week))
    closed = draw(st.frozensets(st.dates(date(2019, 1, 1), date(2031, 12, 31)), max_size=20))
    with_bank_holidays = draw(st.booleans())
    return BusinessCalendar(
        timezone=draw(st.sampled_from(ZONES)),
        weekly=tuple(week),
        closed_dates=closed,
        holiday_country="GB" if with_bank_holidays else None,
        holiday_subdiv="ENG" if with_bank_holidays else None,
    )


recent = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@ARBITRARY
@given(cal=calendars(), start=recent, duration=st.timedeltas(timedelta(0), hours(30)))
def test_any_calendar_round_trips_and_ends_in_open_time(
    cal: BusinessCalendar, start: datetime, duration: timedelta
) -> None:
    due = add_business_time(cal, start, duration)
    assert due >= start
    assert business_time_between(cal, start, due) == duration
    if duration:
        assert is_open(cal, due - MICRO)


within_weeks = st.timedeltas(timedelta(0), timedelta(weeks=6))


@ARBITRARY
@given(cal=calendars(), a=recent, gaps=st.tuples(within_weeks, within_weeks))
def test_any_calendar_counts_no_more_than_wall_time_and_adds_up(
    cal: BusinessCalendar, a: datetime, gaps: tuple[timedelta, timedelta]
) -> None:
    b = a + gaps[0]
    c = b + gaps[1]
    ab, bc = business_time_between(cal, a, b), business_time_between(cal, b, c)
    assert timedelta(0) <= ab <= b - a
    assert business_time_between(cal, a, c) == ab + bc


@ARBITRARY
@given(cal=calendars(), t=recent)
def test_next_open_is_open_and_nothing_is_open_before_it(
    cal: BusinessCalendar, t: datetime
) -> None:
    opening = next_open(cal, t)
    assert opening >= t
    assert is_open(cal, opening)
    assert business_time_between(cal, t, opening) == timedelta(0)
    assert is_open(cal, t) == (opening == t)
