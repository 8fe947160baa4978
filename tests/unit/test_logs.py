from __future__ import annotations

import json
import logging

import pytest

from helpdesk.logs import _Formatter, log


def test_fields_named_like_record_attributes_do_not_break_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("helpdesk.test")
    with caplog.at_level(logging.INFO, logger="helpdesk.test"):
        log(logger, logging.INFO, "event", name="x", message="y", ticket="HD-000001")
    record = caplog.records[-1]
    assert record.getMessage() == "event"
    assert vars(record)["field_name"] == "x" and vars(record)["field_message"] == "y"
    assert vars(record)["ticket"] == "HD-000001"


def test_json_and_kv_lines_carry_the_fields() -> None:
    record = logging.LogRecord("helpdesk.x", logging.INFO, __file__, 1, "mail sent", None, None)
    record.message_id = "abc@x"
    record.ticket = "HD-000002"
    line = json.loads(_Formatter("json").format(record))
    assert line["event"] == "mail sent" and line["message_id"] == "abc@x"
    kv = _Formatter("kv").format(record)
    assert 'event="mail sent"' in kv and "ticket=HD-000002" in kv
