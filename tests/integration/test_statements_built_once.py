"""Storing mail compiles no SQL per message, on SQLite and PostgreSQL.

Compiling a statement costs more than SQLite takes to run it, so the ingest
path builds its statements once (``helpdesk.prepared``, ``helpdesk.rows``)
and SQLAlchemy's own savepoint statements are plain text (``helpdesk.db``).
A statement built per call, or a savepoint named into a new statement each
time, shows here as compilations growing with the number of messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.sql import compiler

from bench import corpus
from helpdesk.ingest.pipeline import Pipeline
from helpdesk.ingest.source import Fetched
from tests.support.config import make_app, write_config


def test_a_warm_pipeline_compiles_nothing_per_message(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(write_config(tmp_path, db_url=db_url, helpdesk={"parse_workers": 0}))
    mails = corpus.generate(700, seed=11, tag="once")
    items = [Fetched("bench", str(i), m.raw, 1, i + 1) for i, m in enumerate(mails)]
    compiled: list[str] = []
    original = compiler.SQLCompiler.__init__

    def counting(self: compiler.SQLCompiler, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        compiled.append(self.string)

    pipeline = Pipeline(app)
    try:
        pipeline.process(items[:400])  # every path of the mix, once
        monkeypatch.setattr(compiler.SQLCompiler, "__init__", counting)
        outcomes = pipeline.process(items[400:])
    finally:
        pipeline.close()
        app.dispose()
    assert {o.status for o in outcomes} <= {"done", "ignored"}
    assert len(outcomes) == 300
    assert compiled == []
