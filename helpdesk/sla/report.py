"""SLA figures for a set of tickets at one instant, and their plain-table form. Pure code.

Each ticket's two clocks are replayed with :func:`compute_sla` from its
history, exactly as the SLA pass does, and a breach whose mail went out
counts as one whatever the replay at today's priority finds, so the report
and the warning and breach mails never disagree. The tickets table alone would not do: once a
target is met or paused its deadline column is cleared, so whether it was met
on time is only known by replaying.

For each target (first response, resolution) a ticket counts as at most one of:

* **met** - the clock stopped (first response: a public staff reply;
  resolution: resolved or closed) and no deadline was overrun;
* **breached** - a deadline was overrun: a late reply or resolution, or a
  running clock past its deadline at ``now``. A breach in an earlier cycle
  of a reopened ticket still counts;
* **at risk** - the clock is running, not breached, and the warning point
  (the policy's ``warning_share`` of the target, when the warning mail goes)
  has passed. A paused clock (pending: waiting on the client) is not at risk,
  since it cannot run out while paused.

A ticket in none of them is on track, or, for the first response, was
resolved before anyone needed to answer it.

Medians are SLA clock time, the measure the targets are set in: open time on
the ticket's own calendar (office hours, or 24x7 for some plans), without the
time spent pending. First response over the tickets that got one (on time or
late); resolution over the tickets whose clock is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from helpdesk.sla.deadlines import (
    ClockState,
    Phase,
    SlaState,
    Target,
    TicketClock,
    compute_sla,
    is_breached,
)
from helpdesk.sla.policy import Plan, Priority, SlaPolicy

# Most urgent first, as an operator reads the table.
PRIORITY_ORDER = (Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW)
PLAN_ORDER = (Plan.STANDARD, Plan.ENHANCED, Plan.ENTERPRISE)
TOTAL = "all"


class Standing(StrEnum):
    MET = "met"
    BREACHED = "breached"
    AT_RISK = "at_risk"
    ON_TRACK = "on_track"
    NOT_NEEDED = "not_needed"  # first response only: resolved before anyone had to answer


@dataclass(frozen=True)
class TargetResult:
    """One ticket's standing on one target; ``took`` is the SLA clock time it
    took, for the median, when there is one to count."""

    standing: Standing
    took: timedelta | None = None


@dataclass(frozen=True)
class TicketResult:
    priority: Priority
    plan: Plan
    first_response: TargetResult
    resolution: TargetResult


@dataclass(frozen=True)
class TargetFigures:
    met: int = 0
    breached: int = 0
    at_risk: int = 0
    median: timedelta | None = None


@dataclass(frozen=True)
class GroupFigures:
    group: str  # a priority, a plan, or "all"
    tickets: int
    first_response: TargetFigures
    resolution: TargetFigures


@dataclass(frozen=True)
class SlaReport:
    now: datetime
    since: datetime | None
    by_priority: tuple[GroupFigures, ...]  # every priority, most urgent first
    by_plan: tuple[GroupFigures, ...]  # every plan
    total: GroupFigures
    skipped: tuple[str, ...] = ()  # references of tickets whose stored data makes no sense


def judge_ticket(ticket: TicketClock, policy: SlaPolicy, now: datetime,
                 breaches_told: frozenset[Target] = frozenset()) -> TicketResult:
    """Where one ticket stands on both targets at ``now``.

    ``breaches_told``: the targets whose breach mail went out. A breach told
    stays a breach, though the clocks, replayed at a priority lowered since,
    would now find the target met: the report must not unsay the mail.
    """
    state = compute_sla(ticket, policy)
    first = _first_response(state, now)
    resolution = _resolution(state.resolution, now)
    if Target.FIRST_RESPONSE in breaches_told:
        first = TargetResult(Standing.BREACHED, first.took)
    if Target.RESOLUTION in breaches_told:
        resolution = TargetResult(Standing.BREACHED, resolution.took)
    return TicketResult(priority=ticket.priority, plan=ticket.plan,
                        first_response=first, resolution=resolution)


def _first_response(state: SlaState, now: datetime) -> TargetResult:
    clock = state.first_response
    answered = state.first_response_met_at is not None
    took = clock.elapsed if answered else None
    if is_breached(clock, now):
        return TargetResult(Standing.BREACHED, took)
    if clock.phase is Phase.STOPPED:
        # Stopped without an answer: resolved (or closed) before it was due.
        return TargetResult(Standing.MET if answered else Standing.NOT_NEEDED, took)
    return TargetResult(_running_standing(clock, now))


def _resolution(clock: ClockState, now: datetime) -> TargetResult:
    took = clock.elapsed if clock.phase is Phase.STOPPED else None
    if is_breached(clock, now):
        return TargetResult(Standing.BREACHED, took)
    if clock.phase is Phase.STOPPED:
        return TargetResult(Standing.MET, took)
    return TargetResult(_running_standing(clock, now))


def _running_standing(clock: ClockState, now: datetime) -> Standing:
    if clock.phase is Phase.RUNNING and clock.warning_at is not None and clock.warning_at <= now:
        return Standing.AT_RISK
    return Standing.ON_TRACK


def build_report(
    tickets: Iterable[TicketClock],
    now: datetime,
    policy: SlaPolicy,
    *,
    since: datetime | None = None,
    skipped: Sequence[str] = (),
    breaches_told: Sequence[frozenset[Target]] = (),
) -> SlaReport:
    """Figures per priority, per plan and in total for ``tickets`` at ``now``.

    ``since`` is only recorded for display: choosing the tickets (those opened
    since then) is the caller's query. ``breaches_told`` goes with
    ``tickets``, one set for each (see :func:`judge_ticket`).
    """
    if now.utcoffset() is None or (since is not None and since.utcoffset() is None):
        raise ValueError("build_report needs aware datetimes")
    told = list(breaches_told)
    results = [judge_ticket(t, policy, now, told[i] if i < len(told) else frozenset())
               for i, t in enumerate(tickets)]
    return SlaReport(
        now=now,
        since=since,
        by_priority=tuple(
            _figures(p.value, [r for r in results if r.priority is p]) for p in PRIORITY_ORDER
        ),
        by_plan=tuple(_figures(p.value, [r for r in results if r.plan is p]) for p in PLAN_ORDER),
        total=_figures(TOTAL, results),
        skipped=tuple(skipped),
    )


def _figures(group: str, results: Sequence[TicketResult]) -> GroupFigures:
    return GroupFigures(
        group=group,
        tickets=len(results),
        first_response=_target_figures([r.first_response for r in results]),
        resolution=_target_figures([r.resolution for r in results]),
    )


def _target_figures(results: Sequence[TargetResult]) -> TargetFigures:
    def count(standing: Standing) -> int:
        return sum(1 for r in results if r.standing is standing)

    return TargetFigures(
        met=count(Standing.MET),
        breached=count(Standing.BREACHED),
        at_risk=count(Standing.AT_RISK),
        median=median([r.took for r in results if r.took is not None]),
    )


def median(values: Sequence[timedelta]) -> timedelta | None:
    """The middle value; the mean of the two middle ones for an even count."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


# -- output -----------------------------------------------------------------------------


def report_json(report: SlaReport) -> dict[str, Any]:
    """The report as JSON-ready data; medians in seconds. Scripts read this: keep it stable."""
    return {
        "now": report.now.astimezone(UTC).isoformat(),
        "since": report.since.astimezone(UTC).isoformat() if report.since else None,
        "by_priority": [_group_json(g) for g in report.by_priority],
        "by_plan": [_group_json(g) for g in report.by_plan],
        "total": _group_json(report.total),
        "skipped": list(report.skipped),
    }


def _group_json(group: GroupFigures) -> dict[str, Any]:
    return {
        "group": group.group,
        "tickets": group.tickets,
        "first_response": _target_json(group.first_response),
        "resolution": _target_json(group.resolution),
    }


def _target_json(figures: TargetFigures) -> dict[str, Any]:
    return {
        "met": figures.met,
        "breached": figures.breached,
        "at_risk": figures.at_risk,
        "median_seconds": figures.median.total_seconds() if figures.median is not None else None,
    }


_Column = tuple[str, Callable[[GroupFigures], str]]
_COLUMNS: tuple[_Column, ...] = (
    ("tickets", lambda g: str(g.tickets)),
    ("met", lambda g: str(g.first_response.met)),
    ("breached", lambda g: str(g.first_response.breached)),
    ("at risk", lambda g: str(g.first_response.at_risk)),
    ("median", lambda g: format_duration(g.first_response.median)),
    ("met", lambda g: str(g.resolution.met)),
    ("breached", lambda g: str(g.resolution.breached)),
    ("at risk", lambda g: str(g.resolution.at_risk)),
    ("median", lambda g: format_duration(g.resolution.median)),
)
# The two targets' columns (as indices into _COLUMNS, end excluded), for the
# line above the header.
_SPANS = (("first response", 1, 5), ("resolution", 5, 9))
_GAP = "  "


def render_table(report: SlaReport, tz: str = "UTC") -> str:
    """A plain-text table: priorities, then plans, then the total; times in ``tz``."""
    zone = ZoneInfo(tz)
    now = report.now.astimezone(zone)
    title = f"SLA report at {now:%Y-%m-%d %H:%M} {now.tzname()}"
    if report.since is not None:
        since = report.since.astimezone(zone)
        title += f", tickets opened since {since:%Y-%m-%d %H:%M} {since.tzname()}"
    sections = [
        [[label if i == 0 else "", g.group, *(cell(g) for _, cell in _COLUMNS)]
         for i, g in enumerate(groups)]
        for label, groups in (("priority", report.by_priority), ("plan", report.by_plan))
    ]
    sections.append([["", report.total.group, *(cell(report.total) for _, cell in _COLUMNS)]])
    header = ["", "", *(name for name, _ in _COLUMNS)]
    rows = [header, *(row for section in sections for row in section)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Names to the left, figures to the right, as numbers line up.
        padded = (c.ljust(w) if i < 2 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return _GAP.join(padded).rstrip()

    # Where each column starts, to centre the target names over their columns.
    starts = [sum(widths[:i]) + len(_GAP) * i for i in range(len(widths) + 1)]
    spans = ""
    for name, first, last in _SPANS:
        left, right = starts[first + 2], starts[last + 2] - len(_GAP)
        spans = spans.ljust(left) + f" {name} ".center(right - left, "-")
    lines = [title, "", spans, line(header)]
    for section in sections:
        lines += ["", *(line(row) for row in section)]
    lines += [
        "",
        "at risk: past the warning point, not yet past the deadline.",
        "median: SLA clock time (open hours on the ticket's calendar, pending time excluded).",
    ]
    if report.skipped:
        lines.append(f"Skipped (priority or plan unknown): {', '.join(report.skipped)}")
    return "\n".join(lines) + "\n"


def format_duration(value: timedelta | None) -> str:
    """``45m``, ``3h 05m``, ``27h 30m``: hours, not days, because a day of SLA
    clock time is ambiguous (8.5 office hours, or 24)."""
    if value is None:
        return "-"
    minutes = round(value.total_seconds() / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"
