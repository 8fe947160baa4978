"""The service-level policy: priorities, plans, targets and which clock each runs on.

Every number here is a default; the shell builds an ``SlaPolicy`` from the
configuration and passes it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from types import MappingProxyType

from helpdesk.sla.calendar import BusinessCalendar, always_open, uk_business_calendar


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


_LEAST_TO_MOST_URGENT = (Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL)


def urgency(priority: Priority) -> int:
    """0 for low up to 3 for critical, for comparing priorities."""
    return _LEAST_TO_MOST_URGENT.index(priority)


def raise_priority(priority: Priority, steps: int = 1) -> Priority:
    """``steps`` levels more urgent, stopping at critical."""
    if steps < 0:
        raise ValueError("raise_priority only raises; steps must be >= 0")
    top = len(_LEAST_TO_MOST_URGENT) - 1
    return _LEAST_TO_MOST_URGENT[min(urgency(priority) + steps, top)]


def cap_priority(priority: Priority, ceiling: Priority) -> Priority:
    """``priority``, but no more urgent than ``ceiling``."""
    return priority if urgency(priority) <= urgency(ceiling) else ceiling


def most_urgent(first: Priority, *others: Priority) -> Priority:
    return max((first, *others), key=urgency)


class Plan(StrEnum):
    STANDARD = "standard"
    ENHANCED = "enhanced"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class Duration:
    """A target length: either clock time or a number of business days.

    Both are measured on the clock the target runs on: one hour on a
    business-hours clock is one open hour, and one business day is that
    calendar's ``day_length`` (8.5 hours in the office, 24 hours on 24x7).
    """

    clock: timedelta = timedelta(0)
    business_days: float = 0.0

    def __post_init__(self) -> None:
        if self.clock < timedelta(0) or self.business_days < 0:
            raise ValueError("a target cannot be negative")
        if (self.clock > timedelta(0)) == (self.business_days > 0):
            raise ValueError("a target is either clock time or business days, and not zero")

    @classmethod
    def hours(cls, hours: float) -> Duration:
        return cls(clock=timedelta(hours=hours))

    @classmethod
    def minutes(cls, minutes: float) -> Duration:
        return cls(clock=timedelta(minutes=minutes))

    @classmethod
    def days(cls, business_days: float) -> Duration:
        return cls(business_days=business_days)


def resolve_duration(duration: Duration, cal: BusinessCalendar) -> timedelta:
    """The open time ``duration`` stands for on ``cal``."""
    if duration.business_days:
        return cal.day_length * duration.business_days
    return duration.clock


@dataclass(frozen=True)
class Targets:
    first_response: Duration
    resolution: Duration


DEFAULT_TARGETS: Mapping[Priority, Targets] = MappingProxyType(
    {
        Priority.CRITICAL: Targets(Duration.hours(1), Duration.hours(4)),
        Priority.HIGH: Targets(Duration.hours(4), Duration.days(1)),
        Priority.MEDIUM: Targets(Duration.days(1), Duration.days(3)),
        Priority.LOW: Targets(Duration.days(2), Duration.days(5)),
    }
)

DEFAULT_ROUND_THE_CLOCK: Mapping[Plan, frozenset[Priority]] = MappingProxyType(
    {
        Plan.STANDARD: frozenset(),
        Plan.ENHANCED: frozenset({Priority.CRITICAL, Priority.HIGH}),
        Plan.ENTERPRISE: frozenset(Priority),
    }
)


@dataclass(frozen=True)
class SlaPolicy:
    """Targets per priority, and per plan which priorities run on the 24x7 clock.

    ``warning_share`` is the share of a target after which a warning is due.
    """

    business_calendar: BusinessCalendar = field(default_factory=uk_business_calendar)
    targets: Mapping[Priority, Targets] = field(default_factory=lambda: DEFAULT_TARGETS)
    round_the_clock: Mapping[Plan, frozenset[Priority]] = field(
        default_factory=lambda: DEFAULT_ROUND_THE_CLOCK
    )
    round_the_clock_calendar: BusinessCalendar = field(default_factory=always_open)
    warning_share: float = 0.75

    def __post_init__(self) -> None:
        missing = [p.value for p in Priority if p not in self.targets]
        if missing:
            raise ValueError(f"no SLA targets for priority {', '.join(missing)}")
        if not 0 < self.warning_share <= 1:
            raise ValueError("warning_share must be in (0, 1]")
        # Read-only copies, so a caller's dict mutated later cannot change a
        # policy that is already in use.
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))
        object.__setattr__(self, "round_the_clock", MappingProxyType(dict(self.round_the_clock)))


def default_policy(extra_closures: Iterable[date] = ()) -> SlaPolicy:
    """The published policy table, with extra office closures from the config."""
    return SlaPolicy(business_calendar=uk_business_calendar(extra_closures))


def calendar_for(policy: SlaPolicy, plan: Plan, priority: Priority) -> BusinessCalendar:
    """The clock a ticket's targets run on; a plan missing from the policy gets office hours."""
    if priority in policy.round_the_clock.get(plan, frozenset()):
        return policy.round_the_clock_calendar
    return policy.business_calendar
