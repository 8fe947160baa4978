"""One object that wires settings, database, clock, templates and policy."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from helpdesk.clock import Clock, SystemClock
from helpdesk.db import make_engine
from helpdesk.errors import ConfigError
from helpdesk.escalation.markers import check_marker
from helpdesk.escalation.rota import Manager, WorkingHours
from helpdesk.settings import (
    CATEGORY_NAMES,
    PRIORITY_NAMES,
    WEEKDAYS,
    CategorySettings,
    CustomerSettings,
    ManagerSettings,
    PrioritySettings,
    Settings,
    parse_header_rule,
)
from helpdesk.sla.calendar import BusinessCalendar, OpenRange, WeeklyHours
from helpdesk.sla.classify import (
    DEFAULT_CATEGORY_RULES,
    DEFAULT_PRIORITY_RULES,
    Category,
    CategoryRule,
    CategoryRules,
    HeaderRule,
    KeywordRule,
    PriorityRules,
)
from helpdesk.sla.policy import Priority, SlaPolicy, default_policy
from helpdesk.templates import SHARED_NAMES, Templates


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock
    templates: Templates

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> App:
        settings = with_secret(settings)
        build_domain(settings)
        return cls(
            settings=settings,
            engine=make_engine(settings.database),
            clock=clock or SystemClock(),
            templates=Templates(dict(settings.templates)),
        )

    @cached_property
    def policy(self) -> SlaPolicy:
        return build_policy(self.settings)

    @cached_property
    def priority_rules(self) -> PriorityRules:
        return build_priority_rules(self.settings.priority)

    @cached_property
    def category_rules(self) -> CategoryRules:
        return build_category_rules(self.settings.category)

    @cached_property
    def managers(self) -> tuple[Manager, ...]:
        return build_managers(self.settings)

    @cached_property
    def own_addresses(self) -> frozenset[str]:
        h = self.settings.helpdesk
        own = {h.support_address, h.escalation_address, h.team_address, h.effective_note_address}
        return frozenset(a.lower() for a in own if a)

    def is_own_address(self, addr: str) -> bool:
        """Our addresses, including signed ``support+TOKEN@`` variants."""
        addr = addr.lower()
        if addr in self.own_addresses:
            return True
        local, _, domain = addr.rpartition("@")
        base = local.split("+", 1)[0]
        return f"{base}@{domain}" in self.own_addresses

    def customer_for(self, addr: str) -> CustomerSettings | None:
        """The configured customer an address belongs to: by address, then domain."""
        addr = addr.lower()
        domain = addr.rpartition("@")[2]
        for customer in self.settings.customers:
            if addr in (a.lower() for a in customer.addresses):
                return customer
        for customer in self.settings.customers:
            if domain in (d.lower().lstrip("@") for d in customer.domains):
                return customer
        return None

    def dispose(self) -> None:
        self.engine.dispose()


def with_secret(settings: Settings) -> Settings:
    """The token secret: configured, or for the embedded SQLite setup made once
    and kept beside the database. Daemons sharing PostgreSQL must agree on it,
    so there it has to be configured."""
    if settings.helpdesk.secret:
        return settings
    _require_secret(settings)
    db_path = Path(settings.database.url.split("///", 1)[1])
    secret_file = db_path.with_name(db_path.name + ".secret")
    if not secret_file.exists():
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    secret = secret_file.read_text().strip()
    return replace(settings, helpdesk=replace(settings.helpdesk, secret=secret))


def _require_secret(settings: Settings) -> None:
    """Raise unless the secret is configured or may be made beside SQLite."""
    if settings.helpdesk.secret:
        return
    if not settings.database.is_sqlite or ":memory:" in settings.database.url:
        raise ConfigError("helpdesk.secret", "is required with PostgreSQL; set "
                          "HELPDESK_HELPDESK__SECRET to a long random string")


def check(settings: Settings) -> None:
    """What :meth:`App.create` would refuse, found without starting anything:
    no file is written, no database is opened. Templates are compiled, so a
    syntax error names its purpose now rather than quarantining mail later."""
    _require_secret(settings)
    build_domain(settings)
    Templates(dict(settings.templates)).compile_all(SHARED_NAMES)


def build_domain(settings: Settings) -> None:
    """Build what the settings describe (the business calendar, the managers'
    hours, the escalation markers) once, so that a value the settings'
    own checks let through but the domain refuses is a ConfigError naming
    its key at start-up, not a ValueError quarantining every mail later."""
    try:
        build_policy(settings)
    except ValueError as exc:
        # The zone and the bank holidays are checked with the settings:
        # what is left for the calendar to refuse is the opening hours.
        raise ConfigError("sla.hours", str(exc)) from None
    for i, manager in enumerate(settings.escalation.managers):
        try:
            build_manager(manager)
        except ValueError as exc:
            raise ConfigError(f"escalation.managers[{i}]", str(exc)) from None
    for i, marker in enumerate(settings.escalation.markers):
        try:
            check_marker(marker)
        except ValueError as exc:
            raise ConfigError(f"escalation.markers[{i}]", str(exc)) from None


def build_managers(settings: Settings) -> tuple[Manager, ...]:
    return tuple(build_manager(m) for m in settings.escalation.managers)


def build_manager(m: ManagerSettings) -> Manager:
    return Manager(
        name=m.name,
        address=m.address,
        region=m.region,
        timezone=m.timezone,
        hours=WorkingHours(
            weekdays=frozenset(WEEKDAYS.index(d) for d in m.days),
            start=m.start,
            end=m.end,
        ),
    )


def build_priority_rules(p: PrioritySettings) -> PriorityRules:
    """``[priority]`` as classification rules; a phrase list left out keeps
    the built-in phrases of that priority."""
    default = DEFAULT_PRIORITY_RULES
    keywords = tuple(
        KeywordRule(phrase, Priority(name))
        for name in PRIORITY_NAMES
        for phrase in _phrases(getattr(p, name), default.keywords, Priority(name)))
    headers = default.headers
    if p.headers is not None:
        parsed = (parse_header_rule(text, f"priority.headers[{i}]")
                  for i, text in enumerate(p.headers))
        headers = tuple(HeaderRule(name, value, Priority(priority))
                        for name, value, priority in parsed)
    return PriorityRules(
        headers=headers, header_ceiling=Priority(p.header_ceiling.lower()),
        keywords=keywords, fallback=Priority(p.fallback.lower()),
        body_scan_chars=p.body_scan_chars,
        negations=default.negations if p.negations is None else p.negations,
        workarounds=default.workarounds if p.workarounds is None else p.workarounds,
    )


def build_category_rules(c: CategorySettings) -> CategoryRules:
    """``[category]`` as classification rules, as :func:`build_priority_rules`."""
    default = DEFAULT_CATEGORY_RULES
    keywords = tuple(
        CategoryRule(phrase, Category(name))
        for name in CATEGORY_NAMES
        for phrase in _phrases(getattr(c, name), default.keywords, Category(name)))
    return CategoryRules(markers=default.markers, keywords=keywords,
                         fallback=default.fallback, body_scan_chars=c.body_scan_chars)


def _phrases(configured: tuple[str, ...] | None,
             built_in: tuple[KeywordRule, ...] | tuple[CategoryRule, ...],
             meaning: Priority | Category) -> tuple[str, ...]:
    """The configured phrases for ``meaning``, or the built-in ones."""
    if configured is not None:
        return configured
    return tuple(rule.phrase for rule in built_in
                 if (rule.priority if isinstance(rule, KeywordRule) else rule.category) is meaning)


def build_policy(settings: Settings) -> SlaPolicy:
    """The SLA policy from ``[sla]``: the table's targets on the configured calendar."""
    sla = settings.sla
    closures = frozenset(date.fromisoformat(d) for d in sla.closures)
    country, _, subdiv = sla.bank_holidays.partition("-")
    by_day = dict(sla.hours)
    weekly: WeeklyHours = tuple(
        tuple(OpenRange(r.start, r.end) for r in by_day.get(day, ())) for day in WEEKDAYS
    )
    calendar = BusinessCalendar(
        timezone=sla.timezone,
        weekly=weekly,
        closed_dates=closures,
        holiday_country=country or None,
        holiday_subdiv=subdiv or None,
    )
    return replace(default_policy(), business_calendar=calendar, warning_share=sla.warning_share)
