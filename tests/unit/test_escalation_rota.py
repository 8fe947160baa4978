"""Follow-the-sun rota, checked against the managers' own wall clocks.

The week sweeps step through UTC every 30 minutes and compare every answer
with an oracle that only converts the instant to each manager's local time
and reads the clock, never the code under test. All three default zones have
whole-hour offsets, so every shift boundary falls on the 30-minute grid and
the oracle's "first grid point on duty" is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.escalation.rota import (
    Choice,
    Manager,
    WorkingHours,
    choose_manager,
    coverage_deadline,
    is_on_duty,
    next_manager_after,
    next_on_duty_start,
)

SYDNEY = Manager("Ava Lim", "ava@example.com", "APAC", "Australia/Sydney")
NEW_YORK = Manager("Ben Ortiz", "ben@example.com", "AMER", "America/New_York")
LONDON = Manager("Cara Hughes", "cara@example.com", "EMEA", "Europe/London")
TEAM = (SYDNEY, NEW_YORK, LONDON)
REGIONS: tuple[str | None, ...] = (None, "APAC", "AMER", "EMEA")

STEP = timedelta(minutes=30)
SWEEP = timedelta(days=8)  # a full week, from Saturday 00:00 UTC to the Sunday after
LOOKAHEAD = timedelta(days=6)  # room for next starts and deadlines past the sweep's end

# Saturdays starting the swept weeks: a northern winter week (Sydney on
# daylight time), a northern summer week (London and New York on daylight
# time), and one week around each of the six 2024 DST changes, so that a
# shift moves in UTC in the middle of a sweep.
WEEKS = {
    "winter": date(2024, 1, 13),
    "summer": date(2024, 7, 13),
    "us-spring-forward": date(2024, 3, 9),
    "uk-spring-forward": date(2024, 3, 30),
    "sydney-falls-back": date(2024, 4, 6),
    "sydney-springs-forward": date(2024, 10, 5),
    "uk-falls-back": date(2024, 10, 26),
    "us-falls-back": date(2024, 11, 2),
}
week_ids = pytest.mark.parametrize("saturday", list(WEEKS.values()), ids=list(WEEKS))


def locally_on_duty(manager: Manager, instant: datetime) -> bool:
    local = instant.astimezone(ZoneInfo(manager.timezone))
    hours = manager.hours
    return local.weekday() in hours.weekdays and hours.start <= local.time() < hours.end


@dataclass(frozen=True)
class Oracle:
    """The on-duty table for a swept week plus lookahead, from wall clocks only."""

    grid: tuple[datetime, ...]
    sweep_len: int
    on: dict[str, tuple[bool, ...]]

    @property
    def sweep(self) -> range:
        return range(self.sweep_len)

    def is_on(self, manager: Manager, i: int) -> bool:
        return self.on[manager.address][i]

    def anyone_on(self, i: int) -> bool:
        return any(self.is_on(m, i) for m in TEAM)

    def next_start(self, manager: Manager, i: int) -> datetime:
        return self.grid[next(j for j in range(i, len(self.grid)) if self.is_on(manager, j))]

    def shift_end(self, manager: Manager, i: int) -> datetime:
        return self.grid[next(j for j in range(i, len(self.grid)) if not self.is_on(manager, j))]

    def covered_deadline_index(self, i: int, cells: int) -> int:
        """Grid index once ``cells`` covered half-hours have passed from ``i``."""
        j = i
        while not self.anyone_on(j):
            j += 1
        while cells:
            if self.anyone_on(j):
                cells -= 1
            j += 1
        return j


@cache
def oracle(saturday: date) -> Oracle:
    first = datetime.combine(saturday, time(0), tzinfo=UTC)
    count = (SWEEP + LOOKAHEAD) // STEP
    grid = tuple(first + k * STEP for k in range(count))
    on = {m.address: tuple(locally_on_duty(m, t) for t in grid) for m in TEAM}
    return Oracle(grid=grid, sweep_len=SWEEP // STEP, on=on)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- the week sweeps ----------------------------------------------------------


@week_ids
def test_is_on_duty_matches_each_managers_wall_clock(saturday: date) -> None:
    week = oracle(saturday)
    for i in week.sweep:
        for manager in TEAM:
            assert is_on_duty(manager, week.grid[i]) == week.is_on(manager, i), (
                manager.timezone,
                week.grid[i],
            )


@week_ids
def test_next_on_duty_start_is_the_first_local_shift_start(saturday: date) -> None:
    week = oracle(saturday)
    for i in week.sweep:
        for manager in TEAM:
            expected = week.next_start(manager, i)
            assert next_on_duty_start(manager, week.grid[i]) == expected, (
                manager.timezone,
                week.grid[i],
            )


@week_ids
@pytest.mark.parametrize("region", REGIONS)
def test_chosen_manager_is_on_duty_whenever_anyone_is(saturday: date, region: str | None) -> None:
    week = oracle(saturday)
    for i in week.sweep:
        if not week.anyone_on(i):
            continue
        choice = choose_manager(TEAM, region, week.grid[i])
        assert week.is_on(choice.manager, i), week.grid[i]
        assert choice.on_duty_from == week.grid[i]
        assert choice.reason in ("region_on_duty", "on_duty")


@week_ids
@pytest.mark.parametrize("region", REGIONS)
def test_client_region_is_preferred_when_its_manager_is_on_duty(
    saturday: date, region: str | None
) -> None:
    week = oracle(saturday)
    regional = {m.region: m for m in TEAM}.get(region or "")
    for i in week.sweep:
        choice = choose_manager(TEAM, region, week.grid[i])
        if regional is not None and week.is_on(regional, i):
            assert choice == Choice(regional, "region_on_duty", week.grid[i])
        else:
            assert choice.reason != "region_on_duty", week.grid[i]


@week_ids
@pytest.mark.parametrize("team", [TEAM, TEAM[::-1]], ids=["listed", "reversed"])
def test_without_the_region_on_duty_the_longest_remaining_shift_wins(
    saturday: date, team: tuple[Manager, ...]
) -> None:
    week = oracle(saturday)
    overlaps = 0
    for i in week.sweep:
        on_duty = [m for m in team if week.is_on(m, i)]
        if not on_duty:
            continue
        overlaps += len(on_duty) > 1
        choice = choose_manager(team, None, week.grid[i])
        assert choice.reason == "on_duty"
        longest = max(week.shift_end(m, i) for m in on_duty)
        assert week.shift_end(choice.manager, i) == longest, week.grid[i]
    assert overlaps  # London and New York share some hours every weekday


@week_ids
@pytest.mark.parametrize("region", REGIONS)
def test_out_of_hours_the_next_manager_to_start_is_chosen(
    saturday: date, region: str | None
) -> None:
    week = oracle(saturday)
    out_of_hours = [i for i in week.sweep if not week.anyone_on(i)]
    assert out_of_hours  # the weekend at least
    for i in out_of_hours:
        choice = choose_manager(TEAM, region, week.grid[i])
        earliest = min(week.next_start(m, i) for m in TEAM)
        assert choice.reason == "next_on_duty"
        assert choice.on_duty_from == earliest
        assert week.next_start(choice.manager, i) == earliest


@week_ids
@pytest.mark.parametrize("region", REGIONS)
def test_weekend_escalations_go_to_sydney_from_its_monday_morning(
    saturday: date, region: str | None
) -> None:
    # Sydney is the first of the three zones to reach Monday 09:00.
    monday_nine_sydney = datetime.combine(
        saturday + timedelta(days=2), time(9), tzinfo=ZoneInfo("Australia/Sydney")
    ).astimezone(UTC)
    week = oracle(saturday)
    weekend = [i for i in week.sweep if week.grid[i] < monday_nine_sydney]
    assert len(weekend) >= 44 * 2  # Saturday 00:00 to at least Sunday 20:00 UTC
    for i in weekend:
        assert choose_manager(TEAM, region, week.grid[i]) == Choice(
            SYDNEY, "next_on_duty", monday_nine_sydney
        )
    assert choose_manager(TEAM, region, monday_nine_sydney).manager == SYDNEY


COVERAGE_DURATIONS = tuple(timedelta(minutes=m) for m in (0, 30, 60, 4 * 60, 9 * 60, 40 * 60))


@week_ids
def test_coverage_deadline_counts_covered_time_only(saturday: date) -> None:
    week = oracle(saturday)
    for i in week.sweep:
        start = week.grid[i]
        deadlines = [coverage_deadline(TEAM, start, d) for d in COVERAGE_DURATIONS]
        for duration, deadline in zip(COVERAGE_DURATIONS, deadlines, strict=True):
            expected = week.grid[week.covered_deadline_index(i, duration // STEP)]
            assert deadline == expected, (start, duration)
            # A deadline may fall exactly as a stretch of coverage ends (the
            # last covered minute is its last minute), never inside a gap.
            just_before = deadline - timedelta(minutes=1)
            covered = any(locally_on_duty(m, deadline) for m in TEAM)
            covered_before = any(locally_on_duty(m, just_before) for m in TEAM)
            assert covered or (duration and covered_before), (start, duration, deadline)
        assert start <= deadlines[0]
        assert deadlines == sorted(deadlines)


# --- worked examples ----------------------------------------------------------


@pytest.mark.parametrize(
    ("monday_nine_sydney_utc", "off", "on"),
    [
        # AEDT (UTC+11) in January, AEST (UTC+10) in July.
        (utc(2024, 1, 14, 22), utc(2024, 1, 14, 21, 59), utc(2024, 1, 15, 5, 59)),
        (utc(2024, 7, 14, 23), utc(2024, 7, 14, 22, 59), utc(2024, 7, 15, 6, 59)),
    ],
)
def test_sydney_shift_moves_in_utc_with_its_daylight_saving(
    monday_nine_sydney_utc: datetime, off: datetime, on: datetime
) -> None:
    assert not is_on_duty(SYDNEY, off)
    assert is_on_duty(SYDNEY, monday_nine_sydney_utc)
    assert is_on_duty(SYDNEY, on)
    assert not is_on_duty(SYDNEY, on + timedelta(minutes=1))
    assert next_on_duty_start(SYDNEY, off) == monday_nine_sydney_utc


@pytest.mark.parametrize(
    ("saturday_noon", "due"),
    [
        # Due one hour after Monday 09:00 in Sydney, which is Sunday in UTC.
        (utc(2024, 1, 13, 12), utc(2024, 1, 14, 23)),
        (utc(2024, 7, 13, 12), utc(2024, 7, 15, 0)),
    ],
)
def test_saturday_escalation_is_due_an_hour_into_the_first_monday_shift(
    saturday_noon: datetime, due: datetime
) -> None:
    assert coverage_deadline(TEAM, saturday_noon, timedelta(hours=1)) == due


def test_friday_evening_deadline_carries_over_the_weekend() -> None:
    # New York is on duty until 17:00 EST = 22:00 UTC: 30 minutes are used on
    # Friday and the other 30 after Sydney starts on Sunday 22:00 UTC.
    friday = utc(2024, 1, 19, 21, 30)
    assert coverage_deadline(TEAM, friday, timedelta(hours=1)) == utc(2024, 1, 21, 22, 30)
    assert coverage_deadline(TEAM, friday, timedelta(minutes=30)) == utc(2024, 1, 19, 22)


def test_weekday_gap_between_sydney_and_london_stops_the_clock() -> None:
    # January: Sydney works 22:00-06:00 UTC, London 09:00-17:00 UTC.
    tuesday_0530 = utc(2024, 1, 16, 5, 30)
    assert coverage_deadline(TEAM, tuesday_0530, timedelta(hours=1)) == utc(2024, 1, 16, 9, 30)
    choice = choose_manager(TEAM, "APAC", utc(2024, 1, 16, 7))
    assert choice == Choice(LONDON, "next_on_duty", utc(2024, 1, 16, 9))


def test_round_the_clock_rota_counts_every_hour() -> None:
    every_day = frozenset(range(7))
    day = Manager(
        "Day", "day@example.com", "EMEA", "UTC", WorkingHours(every_day, time(6), time(18))
    )
    # 03:00-15:00 in Tokyo (UTC+9, no DST) is 18:00-06:00 UTC.
    night = Manager(
        "Night",
        "night@example.com",
        "APAC",
        "Asia/Tokyo",
        WorkingHours(every_day, time(3), time(15)),
    )
    start = utc(2024, 1, 13, 12, 34)
    assert coverage_deadline([day, night], start, timedelta(hours=100)) == start + timedelta(
        hours=100
    )


def test_on_a_tie_for_next_start_the_client_region_wins_then_list_order() -> None:
    paris = Manager("Dee", "dee@example.com", "EMEA", "Europe/Paris")
    berlin = Manager("Eli", "eli@example.com", "APAC", "Europe/Berlin")
    saturday = utc(2024, 1, 13, 12)
    monday_nine = utc(2024, 1, 15, 8)  # CET is UTC+1
    assert choose_manager([paris, berlin], "APAC", saturday) == Choice(
        berlin, "next_on_duty", monday_nine
    )
    assert choose_manager([paris, berlin], None, saturday).manager == paris
    assert choose_manager([berlin, paris], None, saturday).manager == berlin


def test_on_a_tie_for_time_remaining_list_order_wins() -> None:
    paris = Manager("Dee", "dee@example.com", "EMEA", "Europe/Paris")
    berlin = Manager("Eli", "eli@example.com", "EMEA", "Europe/Berlin")
    wednesday = utc(2024, 1, 17, 12)
    assert choose_manager([paris, berlin], None, wednesday).manager == paris
    assert choose_manager([berlin, paris], "EMEA", wednesday).manager == berlin


def test_region_comparison_ignores_case() -> None:
    wednesday_noon = utc(2024, 1, 17, 15)  # London and New York both on duty
    assert choose_manager(TEAM, "amer", wednesday_noon) == Choice(
        NEW_YORK, "region_on_duty", wednesday_noon
    )


def test_working_hours_can_be_overridden() -> None:
    # A Sunday-to-Thursday week, 08:00-16:00 in Dubai (UTC+4, no DST).
    dubai = Manager(
        "Fay",
        "fay@example.com",
        "EMEA",
        "Asia/Dubai",
        WorkingHours(weekdays=frozenset({6, 0, 1, 2, 3}), start=time(8), end=time(16)),
    )
    assert is_on_duty(dubai, utc(2024, 1, 14, 4))  # Sunday 08:00 local
    assert not is_on_duty(dubai, utc(2024, 1, 19, 6))  # Friday 10:00 local
    assert not is_on_duty(dubai, utc(2024, 1, 14, 12))  # Sunday 16:00 local
    assert next_on_duty_start(dubai, utc(2024, 1, 18, 12)) == utc(2024, 1, 21, 4)


# --- reminders ----------------------------------------------------------------


def test_reminder_goes_to_another_manager_on_duty() -> None:
    wednesday = utc(2024, 1, 17, 15)  # London until 17:00, New York until 22:00 UTC
    assert next_manager_after(TEAM, NEW_YORK, wednesday) == LONDON
    assert next_manager_after(TEAM, LONDON, wednesday) == NEW_YORK
    assert next_manager_after(TEAM, SYDNEY, wednesday) == NEW_YORK


def test_reminder_goes_to_the_next_other_manager_when_nobody_else_is_on() -> None:
    saturday = utc(2024, 1, 13, 12)
    assert next_manager_after(TEAM, SYDNEY, saturday) == LONDON  # Monday 09:00 UTC
    assert next_manager_after(TEAM, LONDON, saturday) == SYDNEY
    monday_night = utc(2024, 1, 15, 23)  # only Sydney is on duty
    assert next_manager_after(TEAM, SYDNEY, monday_night) == LONDON


def test_reminder_matches_current_manager_by_address() -> None:
    stored = Manager("Ava", "AVA@example.com", "APAC", "UTC")
    assert next_manager_after(TEAM, stored, utc(2024, 1, 13, 12)) == LONDON


def test_reminder_with_a_single_manager_returns_that_manager() -> None:
    assert next_manager_after([LONDON], LONDON, utc(2024, 1, 17, 12)) == LONDON


# --- properties over arbitrary instants and zones -----------------------------

# Zones with half- and quarter-hour offsets and a half-hour DST shift (Lord
# Howe), which the 30-minute sweeps cannot exercise.
ZONES = (
    "Australia/Sydney",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Asia/Kolkata",
    "America/New_York",
    "America/St_Johns",
    "Europe/London",
    "Pacific/Chatham",
    "UTC",
)

instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(second=0, microsecond=0))

# Start and end hours keep clear of 00:00-04:00, where the DST jumps are, so
# that the wall-clock oracle has no nonexistent local times to reason about.
working_hours = st.builds(
    lambda days, start, end: WorkingHours(frozenset(days), time(start), time(end)),
    st.sets(st.integers(0, 6), min_size=1),
    st.integers(5, 12),
    st.integers(13, 23),
)
managers = st.builds(
    lambda i, zone, hours: Manager(f"M{i}", f"m{i}@example.com", "APAC", zone, hours),
    st.integers(0, 10**6),
    st.sampled_from(ZONES),
    working_hours,
)


@given(managers, instants)
def test_is_on_duty_agrees_with_the_wall_clock(manager: Manager, now: datetime) -> None:
    assert is_on_duty(manager, now) == locally_on_duty(manager, now)


@given(managers, instants)
def test_next_on_duty_start_is_the_earliest_shift_start_not_before_now(
    manager: Manager, now: datetime
) -> None:
    start = next_on_duty_start(manager, now)
    assert start.tzinfo == UTC
    assert locally_on_duty(manager, start)
    if locally_on_duty(manager, now):
        assert start == now
        return
    zone = ZoneInfo(manager.timezone)
    local_start = start.astimezone(zone)
    assert local_start.time() == manager.hours.start
    day = now.astimezone(zone).date()
    while day < local_start.date():
        if day.weekday() in manager.hours.weekdays:
            candidate = datetime.combine(day, manager.hours.start, tzinfo=zone)
            assert not now < candidate < start
        day += timedelta(days=1)


def next_off_duty(manager: Manager, now: datetime) -> datetime:
    """When an on-duty manager's shift ends, read off their wall clock."""
    zone = ZoneInfo(manager.timezone)
    return datetime.combine(now.astimezone(zone).date(), manager.hours.end, tzinfo=zone)


teams = st.lists(managers, min_size=1, max_size=4, unique_by=lambda m: m.address)
durations = st.integers(0, 72 * 60).map(lambda m: timedelta(minutes=m))


@given(teams, instants, durations, durations)
def test_coverage_deadline_is_monotone_and_additive(
    team: Sequence[Manager], start: datetime, a: timedelta, b: timedelta
) -> None:
    shorter = coverage_deadline(team, start, min(a, b))
    longer = coverage_deadline(team, start, max(a, b))
    assert start <= shorter <= longer
    first = coverage_deadline(team, start, a)
    if b:
        assert coverage_deadline(team, first, b) == coverage_deadline(team, start, a + b)
    else:
        # Nothing to add starts the clock: a deadline that fell exactly as a
        # shift ended moves to the next covered instant, any other stays.
        again = coverage_deadline(team, first, b)
        assert again == first or (
            again > first and not any(locally_on_duty(m, first) for m in team)
        )


@given(teams, instants, durations)
def test_coverage_deadline_never_lands_in_a_gap(
    team: Sequence[Manager], start: datetime, duration: timedelta
) -> None:
    deadline = coverage_deadline(team, start, duration)
    covered = any(locally_on_duty(m, deadline) for m in team)
    covered_before = any(locally_on_duty(m, deadline - timedelta(minutes=1)) for m in team)
    assert covered or (duration and covered_before)


@given(teams, instants, st.sampled_from(REGIONS))
def test_choice_is_on_duty_iff_anyone_is(
    team: Sequence[Manager], now: datetime, region: str | None
) -> None:
    choice = choose_manager(team, region, now)
    assert choice.manager in team
    if any(locally_on_duty(m, now) for m in team):
        assert locally_on_duty(choice.manager, now)
        assert choice.on_duty_from == now
        if choice.reason == "on_duty":
            ends = {m.address: next_off_duty(m, now) for m in team if locally_on_duty(m, now)}
            assert ends[choice.manager.address] == max(ends.values())
    else:
        assert choice.reason == "next_on_duty"
        assert choice.on_duty_from == min(next_on_duty_start(m, now) for m in team)
        assert locally_on_duty(choice.manager, choice.on_duty_from)


# --- rejected input -----------------------------------------------------------


def test_empty_manager_list_is_rejected() -> None:
    now = utc(2024, 1, 17, 12)
    with pytest.raises(ValueError, match="no incident managers"):
        choose_manager([], "EMEA", now)
    with pytest.raises(ValueError, match="no incident managers"):
        coverage_deadline([], now, timedelta(hours=1))
    with pytest.raises(ValueError, match="no incident managers"):
        next_manager_after([], LONDON, now)


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2024, 1, 17, 12)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_on_duty(LONDON, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        choose_manager(TEAM, None, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        coverage_deadline(TEAM, naive, timedelta(hours=1))


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        coverage_deadline(TEAM, utc(2024, 1, 17, 12), timedelta(minutes=-1))


def test_non_utc_input_gives_utc_output() -> None:
    sydney_saturday = datetime(2024, 1, 13, 23, tzinfo=ZoneInfo("Australia/Sydney"))
    start = next_on_duty_start(SYDNEY, sydney_saturday)
    assert start == utc(2024, 1, 14, 22)
    assert start.tzinfo == UTC


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weekdays": frozenset()}, "at least one working day"),
        ({"weekdays": frozenset({7})}, "0 \\(Monday\\) to 6"),
        ({"start": time(17), "end": time(9)}, "end after it starts"),
        ({"start": time(9), "end": time(9)}, "end after it starts"),
        ({"start": time(9, tzinfo=UTC)}, "wall-clock"),
    ],
)
def test_invalid_working_hours_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkingHours(**kwargs)  # type: ignore[arg-type]


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        Manager("Gus", "gus@example.com", "EMEA", "Europe/Atlantis")
