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

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

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
)


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
        text = self._render(self._text_env, purpose, "txt", context)
        html = self._render(self._html_env, purpose, "html", context, optional=True)
        return Rendered(text=text, html=html)

    def _render(
        self,
        env: Environment,
        purpose: str,
        ext: str,
        context: Mapping[str, Any],
        optional: bool = False,
    ) -> str:
        override = self._overrides.get(purpose)
        if override and ext == "txt":
            source = Path(override).read_text(encoding="utf-8")
            return env.from_string(source).render(**context)
        if override and ext == "html":
            html_path = Path(override.replace(".txt.", ".html."))
            if html_path != Path(override) and html_path.is_file():
                return env.from_string(html_path.read_text(encoding="utf-8")).render(**context)
            return ""
        name = f"{purpose}.{ext}.j2"
        if optional and not (self._dir / name).is_file():
            return ""
        return env.get_template(name).render(**context)
