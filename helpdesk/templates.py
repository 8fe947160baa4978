"""Jinja2 rendering of outbound mail bodies, one template pair per purpose.

Defaults live in ``config/templates/<purpose>.txt.j2`` (and an optional
``.html.j2``); ``[templates] <purpose> = "path/to/file.txt.j2"`` overrides
one. Rendering is pure: data in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    meta,
    select_autoescape,
)

from helpdesk.errors import ConfigError

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "config" / "templates"
PURPOSES = (
    "confirmation",
    "staff_new_ticket",
    "staff_client_reply",
    "reply_relay",
    "sla_warning",
    "sla_breach",
    "sla_breach_client",
    "escalation_ack",
    "escalation_notice",
    "escalation_briefing",
    "escalation_reminder",
    "bounce_notice",
    "command_error",
    "quarantine_notice",
)


# What every mail about a ticket is given (helpdesk.notify.base_context;
# a test holds the two equal); a notice about no ticket has the name alone.
TICKET_NAMES = frozenset({
    "helpdesk_name", "support_address", "escalation_address", "reference", "subject",
    "priority", "priority_source", "category", "plan", "status", "requester",
    "requester_name", "assignee", "first_response_due", "resolution_due", "mentions",
    "linked_to",
})
TEAM_NOTICES = frozenset({"quarantine_notice"})
SHARED_NAMES = {p: frozenset({"helpdesk_name"}) if p in TEAM_NOTICES else TICKET_NAMES
                for p in PURPOSES}


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str


class Templates:
    def __init__(self, overrides: Mapping[str, str], directory: Path = DEFAULT_DIR) -> None:
        for purpose, path in overrides.items():
            if purpose not in PURPOSES:
                raise ConfigError(f"templates.{purpose}", f"unknown purpose; one of {PURPOSES}")
            if not Path(path).is_file():
                raise ConfigError(f"templates.{purpose}", f"file {path!r} does not exist")
        if not directory.is_dir():
            raise ConfigError("templates", f"default template folder {directory} is missing")
        self._overrides = dict(overrides)
        self._dir = directory
        self._compiled: dict[tuple[str, str], Template | None] = {}
        self._text_env = Environment(
            loader=FileSystemLoader([str(directory)]),
            undefined=StrictUndefined,
            autoescape=False,  # plain text: escaping would corrupt it
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._html_env = Environment(
            loader=FileSystemLoader([str(directory)]),
            undefined=StrictUndefined,
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, purpose: str, context: Mapping[str, Any]) -> Rendered:
        text = self._template(purpose, "txt")
        html = self._template(purpose, "html")
        return Rendered(text=text.render(**context) if text else "",
                        html=html.render(**context) if html else "")

    def compile_all(self, shared: Mapping[str, frozenset[str]] | None = None) -> None:
        """Load and compile every purpose's templates; a syntax error or a
        file that cannot be read as UTF-8 is a ConfigError naming the
        purpose. (An include is only looked up when a mail is rendered.)

        ``shared``: for a purpose, the names its mail is always given beside
        those its built-in template uses. A replacement template naming any
        other is refused now: rendered strictly, it would fail every mail of
        its purpose, and those mails' ingest with them."""
        for purpose in PURPOSES:
            for ext in ("txt", "html"):
                try:
                    self._template(purpose, ext)
                except (TemplateError, OSError, UnicodeDecodeError) as exc:
                    where = f"templates.{purpose}" if purpose in self._overrides else "templates"
                    raise ConfigError(where, f"{purpose}.{ext}: {exc}") from None
            if shared is not None and purpose in self._overrides:
                known = shared.get(purpose, frozenset()) | self._names(purpose, built_in=True)
                unknown = sorted(self._names(purpose, built_in=False) - known)
                if unknown:
                    raise ConfigError(f"templates.{purpose}",
                                      f"names {', '.join(unknown)}, which a {purpose} mail "
                                      f"is not given; it may use {', '.join(sorted(known))}")

    def _names(self, purpose: str, *, built_in: bool) -> frozenset[str]:
        """The names the templates of ``purpose`` take from their context."""
        names: set[str] = set()
        for ext in ("txt", "html"):
            env = self._text_env if ext == "txt" else self._html_env
            if built_in or purpose not in self._overrides:
                path = self._dir / f"{purpose}.{ext}.j2"
            else:
                override = Path(self._overrides[purpose])
                path = override if ext == "txt" else Path(str(override).replace(".txt.", ".html."))
                if ext == "html" and path == override:
                    continue
            if path.is_file():
                parsed = env.parse(path.read_text(encoding="utf-8"))
                names |= meta.find_undeclared_variables(parsed) - set(env.globals)
        return frozenset(names)

    def _template(self, purpose: str, ext: str) -> Template | None:
        """The compiled template, or None for an html part that does not exist.

        Loaded and compiled once: the files are read at the first mail of each
        purpose, not stat()ed and recompiled for every mail. Restart the
        daemon after editing a template."""
        key = (purpose, ext)
        if key not in self._compiled:
            self._compiled[key] = self._load(purpose, ext)
        return self._compiled[key]

    def _load(self, purpose: str, ext: str) -> Template | None:
        env = self._text_env if ext == "txt" else self._html_env
        override = self._overrides.get(purpose)
        if override:
            path = Path(override) if ext == "txt" else Path(override.replace(".txt.", ".html."))
            if ext == "html" and (path == Path(override) or not path.is_file()):
                return None
            return env.from_string(path.read_text(encoding="utf-8"))
        name = f"{purpose}.{ext}.j2"
        if ext == "html" and not (self._dir / name).is_file():
            return None
        return env.get_template(name)
