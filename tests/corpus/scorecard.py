"""Figures measured on ../shared/corpora, printed as one table at the end.

Each corpus test records its figure here; ``tests/conftest.py`` prints the
table in pytest's terminal summary, so CI logs always carry the scorecard.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    measure: str
    corpus: str
    value: str
    target: str
    met: bool
    note: str = ""  # why a figure falls short, with the failing samples


FIGURES: list[Figure] = []


def record(measure: str, corpus: str, value: str, target: str, met: bool,
           note: str = "") -> None:
    FIGURES.append(Figure(measure, corpus, value, target, met, note))


def render() -> str:
    if not FIGURES:
        return ""
    rows = [("measure", "corpus", "value", "target", "met")]
    notes = [f for f in FIGURES if f.note]
    rows += [(f.measure, f.corpus, f.value, f.target,
              ("yes" if f.met else "NO") + (f" [{notes.index(f) + 1}]" if f.note else ""))
             for f in FIGURES]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    lines += [f"[{i}] {f.note}" for i, f in enumerate(notes, 1)]
    return "\n".join(lines)
