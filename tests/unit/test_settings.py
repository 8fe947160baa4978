from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpdesk.errors import ConfigError
from helpdesk.settings import (
    FETCH_HEADROOM,
    MAX_MESSAGE_SIZE_LIMIT,
    load_settings,
    mask_url,
    masked,
    secret_warnings,
)

GOOD = """
[helpdesk]
support_address = "support@example.test"
team_address = "team@example.test"
staff = ["alice@example.test", "@staff.example.test"]

[database]
url = "postgresql+psycopg://helpdesk:hunter2@db.example.test/helpdesk"

[[inbound]]
kind = "imap"
host = "imap.example.test"
username = "support@example.test"
password = "in-file-secret"

[outbound]
kind = "smtp"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "h.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file_are_the_embedded_setup() -> None:
    s = load_settings(None, {})
    assert s.database.url == "sqlite:///var/helpdesk.db"
    assert s.inbound[0].kind == "maildir" and s.outbound.kind == "maildir"
    assert s.helpdesk.reference_prefix == "HD"
    assert s.database.upgrades_itself


@pytest.mark.parametrize("key", ["support_address", "team_address"])
def test_smtp_outbound_needs_the_real_addresses(tmp_path: Path, key: str) -> None:
    text = GOOD.replace(f"{key} = ", f"# {key} = ")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text), {})
    assert err.value.key == f"helpdesk.{key}"
    assert "smtp" in str(err.value) and "placeholder" in str(err.value)
    # Given in the environment, it counts as given.
    env = {f"HELPDESK_HELPDESK__{key.upper()}": "desk@corp.example.org"}
    assert getattr(load_settings(_write(tmp_path, text), env).helpdesk, key) == (
        "desk@corp.example.org")


def test_mail_written_to_a_folder_may_keep_the_placeholder_addresses(tmp_path: Path) -> None:
    text = "[outbound]\nkind = \"maildir\"\n"
    s = load_settings(_write(tmp_path, text), {})
    assert s.helpdesk.support_address == "support@example.test"
    assert s.helpdesk.team_address == "team@example.test"


def test_env_overrides_any_key_and_types_values(tmp_path: Path) -> None:
    env = {
        "HELPDESK_INBOUND__PASSWORD": "from-env",
        "HELPDESK_INBOUND__PORT": "1993",
        "HELPDESK_HELPDESK__SECRET": "s3cret",
        "HELPDESK_OUTBOUND__AUTO_PER_HOUR": "2",
    }
    s = load_settings(_write(tmp_path, GOOD), env)
    assert s.inbound[0].password == "from-env"
    assert s.inbound[0].port == 1993
    assert s.helpdesk.secret == "s3cret"
    assert s.outbound.auto_per_hour == 2


def test_second_source_is_addressed_by_number(tmp_path: Path) -> None:
    text = GOOD + '\n[[inbound]]\nkind = "maildir"\npath = "var/other"\n'
    s = load_settings(_write(tmp_path, text), {"HELPDESK_INBOUND_2__PATH": "var/x"})
    assert [i.kind for i in s.inbound] == ["imap", "maildir"]
    assert s.inbound[1].path == "var/x"


def test_secrets_are_masked(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, GOOD), {"HELPDESK_HELPDESK__SECRET": "tok"})
    shown = json.dumps(masked(s))
    assert "in-file-secret" not in shown and "hunter2" not in shown and '"tok"' not in shown
    assert "********" in shown
    assert mask_url("postgresql+psycopg://u:p@h/db") == "postgresql+psycopg://u:********@h/db"
    assert mask_url("sqlite:///var/x.db") == "sqlite:///var/x.db"


@pytest.mark.parametrize("value", ["'hunter2'", "1979-05-27T07:32:00Z", "[1234, 5678]",
                                   '"p\\u0041ss"', "42", "true"])
def test_secrets_from_the_environment_are_taken_as_written(tmp_path: Path, value: str) -> None:
    env = {"HELPDESK_HELPDESK__SECRET": value, "HELPDESK_INBOUND__PASSWORD": value,
           "HELPDESK_OUTBOUND__PASSWORD": value}
    s = load_settings(_write(tmp_path, GOOD), env)
    assert s.helpdesk.secret == s.inbound[0].password == s.outbound.password == value


def test_a_secret_of_the_wrong_type_is_refused_without_showing_it(tmp_path: Path) -> None:
    text = GOOD.replace('password = "in-file-secret"', "password = [20261207, 4242]")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text), {})
    assert err.value.key == "inbound[0].password"
    assert "20261207" not in str(err.value) and "list" in str(err.value)


def test_a_secret_written_in_the_file_is_warned_of(tmp_path: Path) -> None:
    text = GOOD + '\n[[inbound]]\nkind = "maildir"\npath = "m"\npassword = "second"\n'
    warned = secret_warnings(load_settings(_write(tmp_path, text), {}))
    assert len(warned) == 2
    assert "'inbound[0].password'" in warned[0] and "HELPDESK_INBOUND__PASSWORD" in warned[0]
    assert "'inbound[1].password'" in warned[1] and "HELPDESK_INBOUND_2__PASSWORD" in warned[1]
    assert all("in-file-secret" not in w and "second" not in w for w in warned)
    # Given in the environment only, there is nothing to say.
    bare = GOOD.replace('password = "in-file-secret"\n', "")
    env = {"HELPDESK_INBOUND__PASSWORD": "x"}
    assert secret_warnings(load_settings(_write(tmp_path, bare), env)) == []


def test_passwords_given_as_url_parameters_are_masked(tmp_path: Path) -> None:
    """libpq takes ``password`` and ``sslpassword`` as query parameters too."""
    url = ("postgresql+psycopg://helpdesk:hunter2@db.example.test/helpdesk"
           "?sslmode=require&Password=QueryS3cret&sslpassword=KeyS3cret&application_name=hd")
    shown = mask_url(url)
    assert "hunter2" not in shown and "QueryS3cret" not in shown and "KeyS3cret" not in shown
    head, _, query = shown.partition("?")
    assert head == "postgresql+psycopg://helpdesk:********@db.example.test/helpdesk"
    assert sorted(query.split("&")) == ["Password=********", "application_name=hd",
                                        "sslmode=require", "sslpassword=********"]
    s = load_settings(_write(tmp_path, GOOD), {"HELPDESK_DATABASE__URL": url})
    assert "QueryS3cret" not in json.dumps(masked(s))


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://helpdesk:pa?ss/word@db.example.test/helpdesk",  # as SQLAlchemy reads it
    "postgresql+psycopg://helpdesk:p@ss@db.example.test/helpdesk",  # an unescaped "@"
    "postgresql+psycopg://helpdesk:p%40ss@db.example.test/helpdesk",
])
def test_passwords_with_url_characters_are_masked_whole(url: str) -> None:
    shown = mask_url(url)
    assert "pa?ss" not in shown and "ss/word" not in shown and "p@ss" not in shown
    assert "p%40ss" not in shown and "ss@db" not in shown and "********" in shown


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[helpdesk]\nsupport_address = "nope"\n', "helpdesk.support_address", "email"),
        ('[helpdesk]\nmax_message_size = "big"\n', "helpdesk.max_message_size", "whole number"),
        ("[helpdesk]\nmax_message_size = 0\n", "helpdesk.max_message_size", "between 1 and"),
        ("[helpdesk]\nmax_message_size = 268435457\n", "helpdesk.max_message_size", "256 MiB"),
        ('[[inbound]]\nkind = "maildir"\npath = "m"\nmax_fetch_bytes = -1\n',
         "inbound[0].max_fetch_bytes", "between 0"),
        ('[[inbound]]\nkind = "maildir"\npath = "m"\nmax_fetch_bytes = 269484033\n',
         "inbound[0].max_fetch_bytes", "269484032 bytes"),
        ("[helpdesk]\nparse_workers = -1\n", "helpdesk.parse_workers", "between 0 and 32"),
        ('[helpdesk]\nstaff = ["@localhost"]\n', "helpdesk.staff[0]", "domain"),
        ('[helpdesk]\ntimezone = "Mars/Olympus"\n', "helpdesk.timezone", "time zone"),
        ('[helpdesk]\ncolour = "blue"\n', "helpdesk.colour", "unknown key"),
        ('[outbound]\nkind = "carrier-pigeon"\n', "outbound.kind", "smtp"),
        ('[[inbound]]\nkind = "imap"\n', "inbound[0].username", "required"),
        ('[sla]\nwarning_share = 1.5\n', "sla.warning_share", "between 0 and 1"),
        ('[sla.hours]\nmon = ["17:00-09:00"]\n', "sla.hours.mon", "ends before"),
        ('[database]\nurl = "mysql://x"\n', "database.url", "sqlite"),
        ("[nonsense]\n", "nonsense", "unknown section"),
        ('[sla]\nclosures = ["2026-13-45"]\n', "sla.closures[0]", "not a date"),
        ('[sla]\nbank_holidays = "XX-NOPE"\n', "sla.bank_holidays", "not a known"),
        ('[[customers]]\nname = "A"\nteam_address = "x"\n', "customers[0].team_address",
         "email address"),
        # Each of these made a loop spin at full CPU, one of them deaf to SIGTERM.
        ("[sla]\ninterval = -5\n", "sla.interval", "positive number"),
        ("[sla]\ninterval = 0\n", "sla.interval", "positive number"),
        ("[outbound]\npoll_interval = -1\n", "outbound.poll_interval", "positive number"),
        ("[outbound]\nbackoff_base = 0\n", "outbound.backoff_base", "positive number"),
        ("[outbound]\nbackoff_base = 60\nbackoff_max = 30\n", "outbound.backoff_max",
         "at least outbound.backoff_base"),
        ("[outbound]\nin_flight = 0\n", "outbound.in_flight", "at least 1"),
        ("[outbound]\nauto_per_day = -1\n", "outbound.auto_per_day", "at least 0"),
        ('[[inbound]]\nkind = "maildir"\npath = "m"\ntimeout = 0\n', "inbound[0].timeout",
         "positive number"),
        ("[escalation]\nreview_minutes = -60\n", "escalation.review_minutes", "positive"),
        ("[helpdesk]\nreopen_window_days = -1\n", "helpdesk.reopen_window_days", "at least 0"),
        ('[helpdesk]\nlog_level = "VERBOSE"\n', "helpdesk.log_level", "one of DEBUG, INFO"),
        ("[sla]\ninterval = inf\n", "sla.interval", "positive number"),
        ("[sla]\nlate_grace_seconds = nan\n", "sla.late_grace_seconds", "at least 0"),
        ('[priority]\nnegations = ["no longer"]\n', "priority.negations[0]", "one word"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), {})
    assert caught.value.key == key
    assert words in str(caught.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[helpdesk\n"), {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", {})


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "helpdesk.example.toml"
    s = load_settings(example, {})
    assert s.helpdesk.support_address == "support@example.test"
    assert dict(s.sla.hours)["mon"][0].start.hour == 9


def test_the_largest_sizes_allowed_are_accepted(tmp_path: Path) -> None:
    text = ("[helpdesk]\nmax_message_size = 268435456\n"
            '[[inbound]]\nkind = "maildir"\npath = "m"\nmax_fetch_bytes = 269484032\n')
    s = load_settings(_write(tmp_path, text), {})
    assert s.helpdesk.max_message_size == MAX_MESSAGE_SIZE_LIMIT
    assert s.inbound[0].max_fetch_bytes == MAX_MESSAGE_SIZE_LIMIT + FETCH_HEADROOM


def test_check_config_warns_of_a_secret_in_the_file(tmp_path: Path) -> None:
    from tests.support.config import cli, write_config

    code, out, err = cli(write_config(tmp_path), "check-config")
    assert code == 0
    assert ("helpdesk: warning: config key 'helpdesk.secret': a secret is written in" in err
            and "HELPDESK_HELPDESK__SECRET" in err and "test-secret" not in err + out)


MANAGER = ('[[escalation.managers]]\nname = "Sam"\naddress = "sam@acme.test"\n'
           'region = "EMEA"\ntimezone = "Europe/London"\n')


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ('[sla.hours]\nmon = ["09:00-12:00", "11:00-17:30"]\n', "sla.hours", "not overlap"),
    ("[sla.hours]\nmon = []\ntue = []\nwed = []\nthu = []\nfri = []\n", "sla.hours",
     "must be open"),
    ('[escalation]\nmarkers = ["[ESCALATE]", " "]\n', "escalation.markers[1]", "blank"),
    (MANAGER + 'start = "22:00"\nend = "06:00"\n', "escalation.managers[0]", "end after"),
    (MANAGER + "days = []\n", "escalation.managers[0]", "working day"),
    ('[helpdesk]\nteam_address = "support@example.test"\n', "helpdesk.team_address",
     "helpdesk.support_address"),
    ('[[customers]]\nname = "A"\ndomains = ["a.test"]\n[[customers]]\nname = "B"\n'
     'domains = ["@A.test"]\n', "customers[1]", "claimed by customers[0]"),
    ('[[customers]]\nname = "A"\naddresses = ["not an address"]\n',
     "customers[0].addresses[0]", ""),
])
def test_settings_the_daemon_would_trip_over_are_refused_with_their_key(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    """Found when the settings are loaded (check-config, every command), not
    by the first mail, which the domain's own refusal would quarantine."""
    from helpdesk.app import check

    with pytest.raises(ConfigError) as err:
        check(load_settings(_write(tmp_path, extra), {}))
    assert err.value.key == key and problem in err.value.problem
