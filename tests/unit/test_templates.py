"""Templates: defaults, overrides by path with their html sibling, and each
file read once per daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpdesk.errors import ConfigError
from helpdesk.templates import Templates


def test_an_override_and_its_html_sibling_are_used(tmp_path: Path) -> None:
    text = tmp_path / "confirmation.txt.j2"
    text.write_text("Ticket {{ reference }}\n", encoding="utf-8")
    (tmp_path / "confirmation.html.j2").write_text("<p>{{ reference }}</p>", encoding="utf-8")
    rendered = Templates({"confirmation": str(text)}).render("confirmation",
                                                             {"reference": "HD-<1>"})
    assert rendered.text == "Ticket HD-<1>\n"
    assert rendered.html == "<p>HD-&lt;1&gt;</p>"  # html is escaped, text is not


def test_an_override_without_html_sends_text_only(tmp_path: Path) -> None:
    text = tmp_path / "staff.txt.j2"
    text.write_text("New: {{ subject }}", encoding="utf-8")
    rendered = Templates({"staff_new_ticket": str(text)}).render("staff_new_ticket",
                                                                 {"subject": "Printer"})
    assert (rendered.text, rendered.html) == ("New: Printer", "")


def test_each_template_is_read_once(tmp_path: Path) -> None:
    # Compiled at first use and kept: rendering a mail no longer stats or
    # recompiles its files, so an edit takes effect when the daemon restarts.
    text = tmp_path / "confirmation.txt.j2"
    text.write_text("first {{ n }}", encoding="utf-8")
    templates = Templates({"confirmation": str(text)})
    assert templates.render("confirmation", {"n": 1}).text == "first 1"
    text.write_text("second {{ n }}", encoding="utf-8")
    assert templates.render("confirmation", {"n": 2}).text == "first 2"
    assert Templates({"confirmation": str(text)}).render("confirmation", {"n": 3}).text == (
        "second 3")


def test_a_missing_override_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Templates({"confirmation": str(tmp_path / "nowhere.txt.j2")})
    assert "templates.confirmation" in str(caught.value)
