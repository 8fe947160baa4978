"""Write a helpdesk config for a test, and run the CLI in-process."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from helpdesk.cli import main

STAFF = "alice@staff.example.test"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(
    tmp_path: Path,
    db_url: str | None = None,
    inbound: dict[str, Any] | None = None,
    outbound: dict[str, Any] | None = None,
    helpdesk: dict[str, Any] | None = None,
    extra: str = "",
    auto_upgrade: bool = True,
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "helpdesk": {
            "name": "Example Support",
            "support_address": "support@example.test",
            "escalation_address": "escalations@example.test",
            "team_address": "team@example.test",
            "staff": [STAFF, "@staff.example.test"],
            "secret": "test-secret",
            "trust_staff_from": True,
            **(helpdesk or {}),
        },
        "database": {"url": db_url or f"sqlite:///{tmp_path}/helpdesk.db",
                     "auto_upgrade": auto_upgrade},
        "outbound": outbound or {"kind": "maildir", "path": str(tmp_path / "sent")},
    }
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    lines.append("[[inbound]]")
    src = inbound or {"kind": "maildir", "path": str(tmp_path / "mail")}
    lines += [f"{k} = {_toml(v)}" for k, v in src.items()]
    lines.append(extra)
    path = tmp_path / "helpdesk.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cli(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run ``helpdesk --config CONFIG ARGS`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(config), *args])
    return code, out.getvalue(), err.getvalue()


def cli_json(config: Path, *args: str) -> Any:
    code, out, err = cli(config, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def make_app(config: Path, clock: Any = None) -> Any:
    """An App on ``config`` with its schema in place, for in-process tests."""
    from helpdesk.app import App
    from helpdesk.db import ensure_schema
    from helpdesk.settings import load_settings

    app = App.create(load_settings(config, {}), clock)
    ensure_schema(app.engine, app.settings.database)
    return app


def imap_inbound(account: Any, **over: Any) -> dict[str, Any]:
    return {
        "kind": "imap",
        "host": account.host,
        "port": account.port,
        "security": "none",
        "username": account.user,
        "password": account.password,
        "poll_interval": 60,
        "timeout": 10,
        **over,
    }


def smtp_outbound(server: Any, **over: Any) -> dict[str, Any]:
    return {"kind": "smtp", "host": "127.0.0.1", "port": server.port, "security": "none",
            "backoff_base": 0.05, "backoff_max": 0.2, "poll_interval": 0.1, **over}
