"""How a deadline reads in a confirmation mail."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

# Spelled out rather than strftime("%A"), whose names follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def format_deadline(due: datetime, now: datetime, tz: str) -> str:
    """ "by 14:30 GMT today", or "by Monday 30 November, 09:30 GMT" on another day.

    Days are compared in ``tz``; the year is added only when it differs from
    ``now``'s, and the zone abbreviation (GMT/BST) is the one in force at ``due``.
    """
    return f"by {format_moment(due, now, tz)}"


def format_moment(at: datetime, now: datetime, tz: str) -> str:
    """ "14:30 GMT today", or "Monday 30 November, 09:30 GMT" on another day
    (before or after ``now``), as :func:`format_deadline` without the "by"."""
    if at.utcoffset() is None or now.utcoffset() is None:
        # astimezone() would silently read the machine's local zone.
        raise ValueError("format_deadline needs aware datetimes")
    zone = ZoneInfo(tz)
    local_at = at.astimezone(zone)
    local_now = now.astimezone(zone)
    clock = f"{local_at:%H:%M} {local_at.tzname()}"
    if local_at.date() == local_now.date():
        return f"{clock} today"
    day = f"{_WEEKDAYS[local_at.weekday()]} {local_at.day} {_MONTHS[local_at.month - 1]}"
    if local_at.year != local_now.year:
        day += f" {local_at.year}"
    return f"{day}, {clock}"
