"""``[priority]`` and ``[category]``: the classification rules a team sets in
its config, and the built-in ones it keeps by leaving keys out."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpdesk.app import build_category_rules, build_priority_rules
from helpdesk.errors import ConfigError
from helpdesk.settings import Settings, load_settings
from helpdesk.sla.classify import (
    DEFAULT_CATEGORY_RULES,
    DEFAULT_PRIORITY_RULES,
    Category,
    HeaderRule,
    PrioritySource,
    classify_mail,
)
from helpdesk.sla.policy import Priority


def _settings(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "h.toml"
    path.write_text(text)
    return load_settings(path, env or {})


def test_without_the_sections_the_built_in_rules_apply(tmp_path: Path) -> None:
    s = _settings(tmp_path, "")
    assert build_priority_rules(s.priority) == DEFAULT_PRIORITY_RULES
    assert build_category_rules(s.category) == DEFAULT_CATEGORY_RULES


def test_a_team_sets_its_own_phrases_headers_and_fallback(tmp_path: Path) -> None:
    s = _settings(tmp_path, """
[priority]
critical = ["payroll down", "payroll is down"]
low = []
headers = ["X-Priority: 1 = critical", "Importance: high = high"]
header_ceiling = "Critical"
fallback = "LOW"

[category]
bug = ["glitch"]
""")
    priority, category = build_priority_rules(s.priority), build_category_rules(s.category)
    decide = lambda subject, body="", headers=(): classify_mail(  # noqa: E731
        subject, body, headers, priority, category)
    assert decide("Payroll is down").priority is Priority.CRITICAL
    # Its own list replaced the built-in critical phrases; the high ones stay.
    assert decide("Outage in EU region")[:2] == (Priority.LOW, PrioritySource.DEFAULT)
    assert decide("Users cannot log in").priority is Priority.HIGH
    assert decide("A quick question")[:2] == (Priority.LOW, PrioritySource.DEFAULT)
    assert decide("Printer", "", [("X-Priority", "1 (Highest)")])[:2] == (
        Priority.CRITICAL, PrioritySource.HEADER)
    assert decide("Report glitch").category is Category.BUG
    assert decide("Export crashes").category is Category.OTHER  # "crash" was a built-in bug word
    assert decide("Invoice wrong").category is Category.BILLING  # billing kept its phrases
    assert priority.headers == (HeaderRule("X-Priority", "1", Priority.CRITICAL),
                                HeaderRule("Importance", "high", Priority.HIGH))


def test_phrases_can_come_from_the_environment(tmp_path: Path) -> None:
    s = _settings(tmp_path, "", {"HELPDESK_PRIORITY__CRITICAL": '["reactor leak"]'})
    decided = classify_mail("Reactor  leak", "", (), build_priority_rules(s.priority))
    assert decided.priority is Priority.CRITICAL


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[priority]\nheaders = ["X-Priority 1 high"]\n', "priority.headers[0]", "not like"),
        ('[priority]\nheaders = ["X-Priority: 1 = urgent"]\n', "priority.headers[0]",
         "not one of critical"),
        ('[priority]\nheader_ceiling = "p0"\n', "priority.header_ceiling", "one of critical"),
        ('[priority]\nfallback = "normal"\n', "priority.fallback", "one of critical"),
        ('[priority]\nhigh = ["ok", "  "]\n', "priority.high[1]", "match every mail"),
        ('[priority]\ncritical = "outage"\nbody_scan_chars = -1\n', "priority.body_scan_chars",
         "at least 0"),
        ('[priority]\nurgent = ["x"]\n', "priority.urgent", "unknown key"),
        ('[category]\nbug = [1]\n', "category.bug", "list of strings"),
        ('[category]\nbilling = [""]\n', "category.billing[0]", "match every mail"),
    ],
)
def test_bad_rules_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_the_example_config_shows_the_built_in_phrases() -> None:
    """The example documents every key with its default: its commented-out
    lists, uncommented, must build exactly the built-in rules."""
    import re
    import tomllib

    example = Path(__file__).resolve().parents[2] / "config" / "helpdesk.example.toml"
    text = example.read_text(encoding="utf-8")
    sections = re.findall(r"^\[(priority|category)\]\n(.*?)(?=^\[)", text, re.M | re.S)
    assert [name for name, _ in sections] == ["priority", "category"]
    shown = {}
    for name, body in sections:
        lines = [re.sub(r"^# ?", "", line) for line in body.splitlines()
                 if re.match(r"#\s?([a-z_]+ = |\s+\")", line)]
        shown[name] = tomllib.loads("\n".join(lines))
    s = load_settings(None, {})
    from dataclasses import replace

    priority = replace(s.priority, **{k: tuple(v) for k, v in shown["priority"].items()})
    category = replace(s.category, **{k: tuple(v) for k, v in shown["category"].items()})
    assert set(shown["priority"]) == {"critical", "high", "medium", "low", "headers",
                                      "negations", "workarounds"}
    assert set(shown["category"]) == {"billing", "change_request", "bug", "question"}
    assert build_priority_rules(priority) == DEFAULT_PRIORITY_RULES
    assert build_category_rules(category) == DEFAULT_CATEGORY_RULES


def test_negations_and_workarounds_come_from_the_config(tmp_path: Path) -> None:
    s = _settings(tmp_path, '[priority]\nnegations = ["kein", "keine"]\nworkarounds = []\n')
    rules = build_priority_rules(s.priority)
    assert classify_mail("x", "Keine data loss.", (), rules).priority is Priority.MEDIUM
    assert classify_mail("x", "No data loss.", (), rules).priority is Priority.CRITICAL
    assert classify_mail("x", "Cannot log in; workaround: VPN.", (), rules).priority is (
        Priority.HIGH)
