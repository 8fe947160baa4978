"""Typed, frozen settings loaded once from TOML plus the environment.

Precedence: ``--config PATH``, else ``$HELPDESK_CONFIG``, else
``config/helpdesk.toml``. Any key can be overridden with
``HELPDESK_<SECTION>__<KEY>`` (``HELPDESK_INBOUND__PASSWORD`` is the first
inbound source; ``HELPDESK_INBOUND_2__PASSWORD`` the second), which is how
passwords and the token secret are given. Every validation error names the
key and says what is wrong.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from helpdesk.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config/helpdesk.toml")
SECRET_KEYS = frozenset({"password", "secret"})
MASK = "********"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Query parameters of a database URL that carry a secret (libpq's names).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})
_MASK_TOKEN = "HelpdeskMaskedSecret"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# A whole message is held in memory and stored as one value, and a
# PostgreSQL field holds at most 1 GB (manual, Appendix K): well below both.
MAX_MESSAGE_SIZE_LIMIT = 256 * 1024 * 1024
# Fetched beyond max_message_size, so that what is too large is seen whole
# enough to be told apart (and quarantined with its headers).
FETCH_HEADROOM = 1024 * 1024


@dataclass(frozen=True)
class HelpdeskSettings:
    name: str = "Example Support"
    support_address: str = "support@example.test"
    escalation_address: str = "escalations@example.test"
    reference_prefix: str = "HD"
    staff: tuple[str, ...] = ()
    team_address: str = "team@example.test"
    note_address: str = ""  # default: support+note@<support domain>
    billing_address: str = ""
    timezone: str = "Europe/London"
    secret: str = ""  # HMAC key for reply tokens; HELPDESK_HELPDESK__SECRET
    instance: str = ""  # loop-header value; default: the support address
    authserv_id: str = ""  # our receiving MTA's Authentication-Results id
    trust_staff_from: bool = False
    max_message_size: int = 25 * 1024 * 1024
    parse_workers: int = 1  # processes parsing batches beside the storing one; 0: none
    reopen_window_days: int = 30
    close_resolved_after_days: int = 7  # 0: resolved tickets stay resolved
    log_format: str = "kv"  # kv | json
    log_level: str = "INFO"

    @property
    def support_domain(self) -> str:
        return self.support_address.rpartition("@")[2]

    @property
    def effective_note_address(self) -> str:
        if self.note_address:
            return self.note_address
        local, _, domain = self.support_address.rpartition("@")
        return f"{local}+note@{domain}"

    @property
    def loop_value(self) -> str:
        return self.instance or self.support_address


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/helpdesk.db"
    auto_upgrade: bool | None = None  # None: yes for SQLite, no elsewhere
    echo: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def upgrades_itself(self) -> bool:
        return self.is_sqlite if self.auto_upgrade is None else self.auto_upgrade


@dataclass(frozen=True)
class InboundSettings:
    kind: str = "maildir"  # imap | maildir
    name: str = ""
    host: str = "127.0.0.1"
    port: int = 993
    security: str = "tls"  # tls | starttls | none
    username: str = ""
    password: str = ""
    mailbox: str = "INBOX"
    processed_mailbox: str = "Processed"
    quarantine_mailbox: str = "Quarantine"
    acknowledge: str = "move"  # move | seen
    idle: bool = True
    poll_interval: float = 60.0
    batch_size: int = 200
    timeout: float = 30.0
    max_fetch_bytes: int = 0  # 0: helpdesk.max_message_size plus headroom
    ca_file: str = ""  # trust this CA bundle (a private CA) instead of the system's
    path: str = "var/mail"

    @property
    def source_key(self) -> str:
        """A stable identity for idempotency keys (not the display name)."""
        if self.kind == "imap":
            return f"imap:{self.username}@{self.host}:{self.port}/{self.mailbox}"
        return f"maildir:{self.path}"


@dataclass(frozen=True)
class OutboundSettings:
    kind: str = "maildir"  # smtp | maildir
    host: str = "127.0.0.1"
    port: int = 587
    security: str = "starttls"  # tls | starttls | none
    username: str = ""
    password: str = ""
    timeout: float = 30.0
    ca_file: str = ""  # trust this CA bundle (a private CA) instead of the system's
    path: str = "var/sent"
    max_attempts: int = 12
    max_age_hours: float = 48.0
    backoff_base: float = 30.0
    backoff_max: float = 3600.0
    in_flight: int = 10
    poll_interval: float = 2.0
    auto_per_hour: int = 5
    auto_per_day: int = 20
    undeliverable_days: int = 30
    # Files sent on with a mail, at most (bytes, before base64): common relays
    # refuse mail above 10 MB (Postfix's message_size_limit default).
    max_attach_bytes: int = 7_000_000


@dataclass(frozen=True)
class Range:
    start: time
    end: time


@dataclass(frozen=True)
class SlaSettings:
    interval: float = 30.0
    warning_share: float = 0.75
    timezone: str = "Europe/London"
    hours: tuple[tuple[str, tuple[Range, ...]], ...] = tuple(
        (d, (Range(time(9, 0), time(17, 30)),)) for d in WEEKDAYS[:5]
    )
    bank_holidays: str = "GB-ENG"  # country[-subdivision] for `holidays`, or ""
    closures: tuple[str, ...] = ()  # extra closed dates, YYYY-MM-DD
    default_plan: str = "standard"
    breach_notify_client: bool = False
    late_grace_seconds: float = 300.0


@dataclass(frozen=True)
class CustomerSettings:
    name: str
    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    plan: str = "standard"
    region: str = ""
    team_address: str = ""


@dataclass(frozen=True)
class ManagerSettings:
    name: str
    address: str
    region: str
    timezone: str
    days: tuple[str, ...] = WEEKDAYS[:5]
    start: time = time(9, 0)
    end: time = time(17, 0)


@dataclass(frozen=True)
class EscalationSettings:
    markers: tuple[str, ...] = (
        "[ESCALATE]",
        "[ESCALATION]",
        "ESCALATION:",
        "Escalate:",
        "URGENT ESCALATION",
    )
    window_hours: float = 4.0
    raise_priority: bool = True
    review_minutes: float = 60.0
    auto_on_breach: bool = False
    managers: tuple[ManagerSettings, ...] = ()


PRIORITY_NAMES = ("critical", "high", "medium", "low")
# Keyword categories in the order they are tried: the first with a phrase in
# the text wins, so billing and change wording beats a bare "error".
CATEGORY_NAMES = ("billing", "change_request", "bug", "question")


@dataclass(frozen=True)
class PrioritySettings:
    """``[priority]``: how a new ticket's priority is read from its first mail.

    Phrase lists left out (None) keep the built-in ones, from the policy
    table's "Meaning" column (``helpdesk.sla.classify``); a list given
    replaces that priority's phrases. ``headers`` maps a header's first word
    to a priority: ``"X-Priority: 1 = high"``.
    """

    critical: tuple[str, ...] | None = None
    high: tuple[str, ...] | None = None
    medium: tuple[str, ...] | None = None
    low: tuple[str, ...] | None = None
    headers: tuple[str, ...] | None = None
    negations: tuple[str, ...] | None = None
    workarounds: tuple[str, ...] | None = None
    header_ceiling: str = "high"
    fallback: str = "medium"
    body_scan_chars: int = 4000


@dataclass(frozen=True)
class CategorySettings:
    """``[category]``: keyword phrases per category, as ``[priority]`` does."""

    billing: tuple[str, ...] | None = None
    change_request: tuple[str, ...] | None = None
    bug: tuple[str, ...] | None = None
    question: tuple[str, ...] | None = None
    body_scan_chars: int = 4000


@dataclass(frozen=True)
class Settings:
    helpdesk: HelpdeskSettings = field(default_factory=HelpdeskSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    inbound: tuple[InboundSettings, ...] = (InboundSettings(),)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    sla: SlaSettings = field(default_factory=SlaSettings)
    customers: tuple[CustomerSettings, ...] = ()
    escalation: EscalationSettings = field(default_factory=EscalationSettings)
    priority: PrioritySettings = field(default_factory=PrioritySettings)
    category: CategorySettings = field(default_factory=CategorySettings)
    templates: tuple[tuple[str, str], ...] = ()  # purpose -> override path
    source_path: str = ""
    file_secrets: tuple[str, ...] = ()  # keys of secrets written in the file

    def template_override(self, purpose: str) -> str | None:
        return dict(self.templates).get(purpose)


def resolve_config_path(cli_path: str | None, env: Mapping[str, str]) -> Path:
    if cli_path:
        return Path(cli_path)
    if env.get("HELPDESK_CONFIG"):
        return Path(env["HELPDESK_CONFIG"])
    return DEFAULT_CONFIG_PATH


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (None: defaults only), apply env overrides, validate."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {str(path)!r}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"{path} is not valid TOML: {exc}") from None
    in_file = tuple(_secrets_in(data))
    data = apply_env_overrides(data, env)
    settings = build_settings(data)
    if path is not None:
        settings = replace(settings, source_path=str(path), file_secrets=in_file)
    validate(settings)
    return settings


def _secrets_in(data: Mapping[str, Any]) -> list[str]:
    """The dotted keys of the secrets given a value in ``data`` (the file)."""
    found: list[str] = []
    for section, table in data.items():
        tables = table if isinstance(table, list) else [table]
        for i, item in enumerate(tables):
            if not isinstance(item, dict):
                continue
            name = f"{section}[{i}]" if isinstance(table, list) else section
            found.extend(f"{name}.{key}" for key, value in item.items()
                         if key in SECRET_KEYS and value)
    return found


def secret_warnings(settings: Settings) -> list[str]:
    """What to tell the operator about secrets written in the file."""
    return [f"config key {key!r}: a secret is written in {settings.source_path}; give it in "
            f"the environment as HELPDESK_{_env_name(key)} instead"
            for key in settings.file_secrets]


def _env_name(key: str) -> str:
    """``inbound[1].password`` -> ``INBOUND_2__PASSWORD``."""
    section, _, name = key.partition(".")
    base, _, index = section.partition("[")
    number = int(index.rstrip("]") or 0) + 1
    prefix = base.upper() if number == 1 else f"{base.upper()}_{number}"
    return f"{prefix}__{name.upper()}"


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Merge ``HELPDESK_<SECTION>__<KEY>`` variables into the parsed TOML."""
    merged: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in data.items()}
    for var, value in env.items():
        if not var.startswith("HELPDESK_") or "__" not in var:
            continue
        section, _, key = var[len("HELPDESK_") :].partition("__")
        section, key = section.lower(), key.lower()
        if not section or not key:
            continue
        index = 0
        base, _, suffix = section.rpartition("_")
        if base and suffix.isdigit():
            section, index = base, int(suffix) - 1
        # A secret is taken as written: read as TOML, "'p'" would lose its
        # quotes, and a value that reads as a date or a list would be
        # refused with the value shown in the error.
        typed = value if key in SECRET_KEYS else _env_value(value)
        if section in ("inbound", "customers"):
            items = merged.setdefault(section, [{}])
            if not isinstance(items, list):
                raise ConfigError(section, "must be an array of tables ([[...]])")
            while len(items) <= index:
                items.append({})
            items[index] = {**items[index], key: typed}
        else:
            table = merged.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(section, "must be a table")
            merged[section] = {**table, key: typed}
    return merged


def _env_value(value: str) -> Any:
    """Environment strings typed like TOML scalars where they parse as such."""
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def build_settings(data: Mapping[str, Any]) -> Settings:
    known = {"helpdesk", "database", "inbound", "outbound", "sla", "customers", "escalation",
             "priority", "category", "templates"}
    for key in data:
        if key not in known:
            raise ConfigError(key, f"unknown section; expected one of {sorted(known)}")
    inbound_raw = data.get("inbound", [{}])
    if isinstance(inbound_raw, dict):
        inbound_raw = [inbound_raw]
    if not isinstance(inbound_raw, list):
        raise ConfigError("inbound", "must be an array of tables ([[inbound]])")
    escalation_raw = dict(_table(data, "escalation"))
    managers_raw = escalation_raw.pop("managers", [])
    customers_raw = data.get("customers", [])
    if not isinstance(customers_raw, list):
        raise ConfigError("customers", "must be an array of tables ([[customers]])")
    templates = _table(data, "templates")
    for purpose, value in templates.items():
        if not isinstance(value, str):
            raise ConfigError(f"templates.{purpose}", "must be a path string")
    _require_real_addresses(data)
    sla_raw = dict(_table(data, "sla"))
    hours_raw = sla_raw.pop("hours", None)
    sla = _build(SlaSettings, sla_raw, "sla")
    if hours_raw is not None:
        sla = replace(sla, hours=_hours(hours_raw))
    return Settings(
        helpdesk=_build(HelpdeskSettings, _table(data, "helpdesk"), "helpdesk"),
        database=_build(DatabaseSettings, _table(data, "database"), "database"),
        inbound=tuple(
            _build(InboundSettings, item, f"inbound[{i}]") for i, item in enumerate(inbound_raw)
        ),
        outbound=_build(OutboundSettings, _table(data, "outbound"), "outbound"),
        sla=sla,
        customers=tuple(
            _build(CustomerSettings, item, f"customers[{i}]")
            for i, item in enumerate(customers_raw)
        ),
        escalation=replace(
            _build(EscalationSettings, escalation_raw, "escalation"),
            managers=tuple(
                _build(ManagerSettings, m, f"escalation.managers[{i}]")
                for i, m in enumerate(_list(managers_raw, "escalation.managers"))
            ),
        ),
        priority=_build(PrioritySettings, _table(data, "priority"), "priority"),
        category=_build(CategorySettings, _table(data, "category"), "category"),
        templates=tuple(sorted((str(k), str(v)) for k, v in templates.items())),
    )


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, "must be an array of tables")
    return value


def _hours(value: Any) -> tuple[tuple[str, tuple[Range, ...]], ...]:
    if not isinstance(value, dict):
        raise ConfigError("sla.hours", 'must be a table like { mon = ["09:00-17:30"] }')
    out = []
    for day, ranges in value.items():
        if day not in WEEKDAYS:
            raise ConfigError(f"sla.hours.{day}", f"unknown weekday; use one of {WEEKDAYS}")
        if not isinstance(ranges, list):
            raise ConfigError(f"sla.hours.{day}", 'must be a list like ["09:00-17:30"]')
        parsed = []
        for text in ranges:
            start, sep, end = str(text).partition("-")
            if not sep:
                raise ConfigError(f"sla.hours.{day}", f"{text!r} is not HH:MM-HH:MM")
            a = _time(start.strip(), f"sla.hours.{day}")
            b = _time(end.strip(), f"sla.hours.{day}")
            if b <= a and b != time(0, 0):
                raise ConfigError(f"sla.hours.{day}", f"range {text!r} ends before it starts")
            parsed.append(Range(a, b))
        out.append((day, tuple(parsed)))
    return tuple(out)


def _time(value: Any, key: str) -> time:
    if isinstance(value, time):
        return value
    try:
        hh, mm = str(value).split(":")
        if hh == "24" and mm == "00":
            return time(0, 0)
        return time(int(hh), int(mm))
    except ValueError:
        raise ConfigError(key, f"{value!r} is not a time HH:MM") from None


def _build(cls: type[Any], raw: Mapping[str, Any], section: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(section, "must be a table")
    by_name = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = "from_" if key == "from" else key
        if name not in by_name:
            raise ConfigError(f"{section}.{key}", f"unknown key; valid keys: {sorted(by_name)}")
        kwargs[name] = _coerce(value, by_name[name].type, f"{section}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = str(exc).rpartition(":")[2].strip() or str(exc)
        raise ConfigError(section, f"missing required key(s): {missing}") from None


# The defaults of these keys are placeholders under example.test, a name
# reserved never to resolve (RFC 2606 §2). They let the embedded default run
# with mail written to a folder; mail sent by SMTP from them would be
# undeliverable, and replies to it could never come back.
ADDRESSES_SMTP_NEEDS = ("support_address", "team_address")


def _require_real_addresses(data: Mapping[str, Any]) -> None:
    """Refuse SMTP outbound while the addresses mail is sent from and to
    are still the placeholders."""
    if _table(data, "outbound").get("kind", OutboundSettings.kind) != "smtp":
        return
    given = _table(data, "helpdesk")
    for key in ADDRESSES_SMTP_NEEDS:
        if key not in given:
            default = getattr(HelpdeskSettings, key)
            raise ConfigError(f"helpdesk.{key}",
                              f"is required when outbound.kind is 'smtp' (the default "
                              f"{default} is a placeholder that no mail reaches)")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    if key.rpartition(".")[2] in SECRET_KEYS:
        if isinstance(value, str):
            return value
        # Never the value itself: it is someone's password.
        raise ConfigError(key, f"must be a string, not a {type(value).__name__}")
    kind = str(annotation)
    if kind == "bool" or kind == "bool | None":
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, not {value!r}")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be a whole number, not {value!r}")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"must be a number, not {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"must be a string, not {value!r}")
    if kind == "time":
        return _time(value, key)
    if kind.startswith("tuple[str"):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, f"must be a list of strings, not {value!r}")
    return value


def validate(s: Settings) -> None:
    h = s.helpdesk
    for key in ("support_address", "escalation_address", "team_address"):
        _check_address(getattr(h, key), f"helpdesk.{key}")
    for key in ("note_address", "billing_address"):
        if getattr(h, key):
            _check_address(getattr(h, key), f"helpdesk.{key}")
    if not h.reference_prefix.isalnum() or not h.reference_prefix.isascii():
        raise ConfigError("helpdesk.reference_prefix", "must be ASCII letters and digits only")
    for i, entry in enumerate(h.staff):
        if entry.startswith("@"):
            if "." not in entry[1:]:
                raise ConfigError(f"helpdesk.staff[{i}]", f"{entry!r} is not a domain like @x.y")
        else:
            _check_address(entry, f"helpdesk.staff[{i}]")
    _check_zone(h.timezone, "helpdesk.timezone")
    _check_zone(s.sla.timezone, "sla.timezone")
    if not 0 < h.max_message_size <= MAX_MESSAGE_SIZE_LIMIT:
        raise ConfigError("helpdesk.max_message_size",
                          f"must be between 1 and {MAX_MESSAGE_SIZE_LIMIT} bytes (256 MiB)")
    if not 0 <= h.parse_workers <= 32:
        raise ConfigError("helpdesk.parse_workers", "must be between 0 and 32")
    if h.log_format not in ("kv", "json"):
        raise ConfigError("helpdesk.log_format", "must be 'kv' or 'json'")
    if h.log_level.upper() not in LOG_LEVELS:
        raise ConfigError("helpdesk.log_level", f"must be one of {', '.join(LOG_LEVELS)}")
    _at_least(h.reopen_window_days, 0, "helpdesk.reopen_window_days")
    _at_least(h.close_resolved_after_days, 0, "helpdesk.close_resolved_after_days")
    if not s.database.url.startswith(("sqlite:", "postgresql")):
        raise ConfigError("database.url", "must be a sqlite:/// or postgresql+psycopg:// URL")
    if not s.inbound:
        raise ConfigError("inbound", "at least one [[inbound]] source is needed")
    for i, src in enumerate(s.inbound):
        key = f"inbound[{i}]"
        if src.kind not in ("imap", "maildir"):
            raise ConfigError(f"{key}.kind", "must be 'imap' or 'maildir'")
        if src.kind == "imap":
            if src.security not in ("tls", "starttls", "none"):
                raise ConfigError(f"{key}.security", "must be 'tls', 'starttls' or 'none'")
            if not src.username:
                raise ConfigError(f"{key}.username", "is required for an IMAP source")
            if not 0 < src.port < 65536:
                raise ConfigError(f"{key}.port", "must be between 1 and 65535")
        if src.acknowledge not in ("move", "seen"):
            raise ConfigError(f"{key}.acknowledge", "must be 'move' or 'seen'")
        if src.poll_interval <= 0:
            raise ConfigError(f"{key}.poll_interval", "must be positive")
        _positive(src.timeout, f"{key}.timeout")
        if not 0 <= src.max_fetch_bytes <= MAX_MESSAGE_SIZE_LIMIT + FETCH_HEADROOM:
            raise ConfigError(f"{key}.max_fetch_bytes", "must be between 0 (max_message_size "
                              f"plus 1 MiB) and {MAX_MESSAGE_SIZE_LIMIT + FETCH_HEADROOM} bytes")
        if not 0 < src.batch_size <= 5000:
            raise ConfigError(f"{key}.batch_size", "must be between 1 and 5000")
    o = s.outbound
    if o.kind not in ("smtp", "maildir"):
        raise ConfigError("outbound.kind", "must be 'smtp' or 'maildir'")
    if o.security not in ("tls", "starttls", "none"):
        raise ConfigError("outbound.security", "must be 'tls', 'starttls' or 'none'")
    if o.max_attempts < 1:
        raise ConfigError("outbound.max_attempts", "must be at least 1")
    # Zero or negative waits make the loops that use them spin (a sender
    # polling with a negative timeout never sleeps).
    for name in ("timeout", "poll_interval", "backoff_base", "max_age_hours"):
        _positive(getattr(o, name), f"outbound.{name}")
    if o.backoff_max < o.backoff_base:
        raise ConfigError("outbound.backoff_max", "must be at least outbound.backoff_base")
    _at_least(o.in_flight, 1, "outbound.in_flight")
    for name in ("auto_per_hour", "auto_per_day", "undeliverable_days", "max_attach_bytes"):
        _at_least(getattr(o, name), 0, f"outbound.{name}")
    _positive(s.sla.interval, "sla.interval")
    _at_least(s.sla.late_grace_seconds, 0, "sla.late_grace_seconds")
    _check_classification(s)
    _positive(s.escalation.window_hours, "escalation.window_hours")
    _positive(s.escalation.review_minutes, "escalation.review_minutes")
    if not 0 < s.sla.warning_share < 1:
        raise ConfigError("sla.warning_share", "must be between 0 and 1 (e.g. 0.75)")
    for i, day in enumerate(s.sla.closures):
        try:
            date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"sla.closures[{i}]", f"{day!r} is not a date YYYY-MM-DD") from None
    if s.sla.bank_holidays:
        country, _, subdiv = s.sla.bank_holidays.partition("-")
        try:
            holidays.country_holidays(country, subdiv=subdiv or None, years=2026)
        except (NotImplementedError, KeyError, ValueError) as exc:
            raise ConfigError("sla.bank_holidays", f"{s.sla.bank_holidays!r} is not a known "
                              f"country[-subdivision] ({exc})") from None
    if s.sla.default_plan not in ("standard", "enhanced", "enterprise"):
        raise ConfigError("sla.default_plan", "must be standard, enhanced or enterprise")
    # Mail to our own addresses comes back in and is dropped as our own loop:
    # staff news sent there would reach nobody.
    inbound_addresses = {h.support_address.lower(): "helpdesk.support_address",
                         h.escalation_address.lower(): "helpdesk.escalation_address",
                         h.effective_note_address.lower(): "helpdesk.note_address"}
    same = inbound_addresses.get(h.team_address.lower())
    if same:
        raise ConfigError("helpdesk.team_address", f"is also {same}: staff notices sent "
                          "there would come back as our own mail")
    claimed: dict[str, str] = {}
    for i, c in enumerate(s.customers):
        if c.plan not in ("standard", "enhanced", "enterprise"):
            raise ConfigError(f"customers[{i}].plan", "must be standard, enhanced or enterprise")
        if c.region and c.region not in ("APAC", "AMER", "EMEA"):
            raise ConfigError(f"customers[{i}].region", "must be APAC, AMER or EMEA")
        if c.team_address:
            _check_address(c.team_address, f"customers[{i}].team_address")
            if c.team_address.lower() in inbound_addresses:
                raise ConfigError(f"customers[{i}].team_address",
                                  "is one of the helpdesk's own addresses")
        for j, addr in enumerate(c.addresses):
            _check_address(addr, f"customers[{i}].addresses[{j}]")
        # The first customer claiming a domain or address would win in
        # silence; a mail must have one plan.
        for claim in (*c.addresses, *c.domains):
            name = claim.lower().lstrip("@")
            if name in claimed:
                raise ConfigError(f"customers[{i}]",
                                  f"{claim!r} is claimed by {claimed[name]} too")
            claimed[name] = f"customers[{i}]"
    for i, m in enumerate(s.escalation.managers):
        key = f"escalation.managers[{i}]"
        _check_address(m.address, f"{key}.address")
        _check_zone(m.timezone, f"{key}.timezone")
        if m.region not in ("APAC", "AMER", "EMEA"):
            raise ConfigError(f"{key}.region", "must be APAC, AMER or EMEA")
        for d in m.days:
            if d not in WEEKDAYS:
                raise ConfigError(f"{key}.days", f"{d!r} is not one of {WEEKDAYS}")


def parse_header_rule(text: str, key: str) -> tuple[str, str, str]:
    """``"X-Priority: 1 = high"`` as (header, first word of its value, priority)."""
    rule, eq, priority = text.rpartition("=")
    header, colon, value = rule.partition(":")
    header, value, priority = header.strip(), value.strip(), priority.strip().lower()
    if not (eq and colon and header and value) or len(value.split()) != 1:
        raise ConfigError(key, f"{text!r} is not like \"X-Priority: 1 = high\"")
    if priority not in PRIORITY_NAMES:
        raise ConfigError(key, f"{priority!r} is not one of {', '.join(PRIORITY_NAMES)}")
    return header, value, priority


def _check_phrases(phrases: tuple[str, ...] | None, key: str) -> None:
    for i, phrase in enumerate(phrases or ()):
        if not phrase.split():
            raise ConfigError(f"{key}[{i}]", "is empty: it would match every mail")


def _check_classification(s: Settings) -> None:
    p = s.priority
    for name in (*PRIORITY_NAMES, "negations", "workarounds"):
        _check_phrases(getattr(p, name), f"priority.{name}")
    for i, word in enumerate(p.negations or ()):
        if len(word.split()) != 1:
            raise ConfigError(f"priority.negations[{i}]", f"{word!r} must be one word")
    for i, text in enumerate(p.headers or ()):
        parse_header_rule(text, f"priority.headers[{i}]")
    for name in ("header_ceiling", "fallback"):
        if getattr(p, name).lower() not in PRIORITY_NAMES:
            raise ConfigError(f"priority.{name}", f"must be one of {', '.join(PRIORITY_NAMES)}")
    _at_least(p.body_scan_chars, 0, "priority.body_scan_chars")
    for name in CATEGORY_NAMES:
        _check_phrases(getattr(s.category, name), f"category.{name}")
    _at_least(s.category.body_scan_chars, 0, "category.body_scan_chars")


def _positive(value: float, key: str) -> None:
    if not (value > 0 and math.isfinite(value)):  # NaN and infinity too
        raise ConfigError(key, f"must be a positive number, not {value!r}")


def _at_least(value: float, least: float, key: str) -> None:
    if not (value >= least and math.isfinite(value)):
        raise ConfigError(key, f"must be at least {least}, not {value!r}")


def _check_address(value: str, key: str) -> None:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c in value for c in " \r\n<>,"):
        raise ConfigError(key, f"{value!r} is not an email address")


def _check_zone(value: str, key: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(key, f"{value!r} is not a known time zone (e.g. Europe/London)") from None


def masked(value: Any, key: str = "") -> Any:
    """The value with every secret replaced, for printing."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: masked(getattr(value, f.name), f.name) for f in fields(value)}
    if isinstance(value, tuple):
        return [masked(v, key) for v in value]
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if key in SECRET_KEYS and value:
        return MASK
    if key == "url" and isinstance(value, str):
        return mask_url(value)
    return value


def mask_url(url: str) -> str:
    """Hide the passwords of a database URL: the one in ``user:pass@`` and
    those given as query parameters (``?password=``, ``?sslpassword=``).

    The URL is read as SQLAlchemy reads it (a password may hold ``?`` or
    ``/``); one it cannot read is not shown at all."""
    from sqlalchemy.engine import make_url

    scheme, sep, _ = url.partition("://")
    if not sep:
        return url
    try:
        parsed = make_url(url)
    except Exception:
        return f"{scheme}://{MASK}"
    if "@" in (parsed.host or ""):
        return f"{scheme}://{MASK}"  # an unescaped "@" in a password: show none of it
    # A placeholder that rendering leaves as it is ("*" would be %-escaped).
    if parsed.password is not None:
        parsed = parsed.set(password=_MASK_TOKEN)
    secret = {name: _MASK_TOKEN for name in parsed.query if name.lower() in _SECRET_PARAMS}
    if secret:
        parsed = parsed.update_query_dict(secret)
    return parsed.render_as_string(hide_password=False).replace(_MASK_TOKEN, MASK)
