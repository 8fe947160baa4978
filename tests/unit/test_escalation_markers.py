from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.escalation.markers import DEFAULT_MARKERS, find_marker


@pytest.mark.parametrize(
    ("subject", "cleaned"),
    [
        ("Re: [HD-000123] [ESCALATE] printer on fire", "Re: [HD-000123] printer on fire"),
        ("[ESCALATE] printer on fire", "printer on fire"),
        ("[escalate] printer on fire", "printer on fire"),
        ("[Escalation] printer on fire", "printer on fire"),
        ("ESCALATION: printer on fire", "printer on fire"),
        ("escalate: printer on fire", "printer on fire"),
        ("URGENT ESCALATION printer on fire", "printer on fire"),
        ("urgent escalation - printer on fire", "printer on fire"),
        ("URGENT ESCALATION: printer on fire", "printer on fire"),
        ("Re: ESCALATION: printer on fire", "Re: printer on fire"),
        ("RE: Fwd: [HD-000123] Escalate: printer on fire", "RE: Fwd: [HD-000123] printer on fire"),
        ("Re[2]: AW: [HD-000123] ESCALATION: printer", "Re[2]: AW: [HD-000123] printer"),
        ("[External] Re: [HD-000123] escalation: printer", "[External] Re: [HD-000123] printer"),
        ("ESCALATION: Re: [HD-000123] printer", "Re: [HD-000123] printer"),
        ("Re: [HD-000123] printer on fire [ESCALATE]", "Re: [HD-000123] printer on fire"),
        ("Re: printer on fire - URGENT ESCALATION", "Re: printer on fire"),
        ("Re: printer [ESCALATE] on fire", "Re: printer on fire"),
        ("Re: [HD-000123][ESCALATE]printer", "Re: [HD-000123] printer"),
        ("  Re:   [ESCALATE]   printer\t on  fire ", "Re: printer on fire"),
        ("Re: URGENT\n ESCALATION printer", "Re: printer"),  # a folded header
        ("[ESCALATE] [ESCALATION] printer", "printer"),
        ("Re: [ESCALATE] Re: [ESCALATE] printer", "Re: Re: printer"),
        ("[ESCALATE]", ""),
        ("Escalate:", ""),
    ],
)
def test_default_markers_are_found_and_removed(subject: str, cleaned: str) -> None:
    assert find_marker(subject) == (True, cleaned)


@pytest.mark.parametrize(
    "subject",
    [
        "Re: [HD-000123] printer on fire",
        "Escalated: printer on fire",
        "Re: de-escalate: printer",
        "Re: de-escalation: printer",
        "DE-ESCALATION: printer",
        "Escalation policy question",
        "[ESCALATED] printer",
        "[ESCALATE printer",
        "URGENT ESCALATIONS printer",
        "NONURGENT ESCALATION printer",
        "URGENT ESCALATION-procedure review",
        "Re: non-urgent escalation procedure",
        # Colon markers are labels: they count only at the head of a subject.
        "Question about escalation: who do I call?",
        "Re: [HD-000123] printer, escalate: please",
        "",
    ],
)
def test_lookalikes_are_not_markers(subject: str) -> None:
    assert find_marker(subject) == (False, subject)


def test_subject_without_a_marker_is_returned_untouched() -> None:
    subject = "  Re:   printer\ton fire  "
    assert find_marker(subject) == (False, subject)


def test_markers_are_configurable() -> None:
    markers = ("[P1]", "Hotfix:", "call me now")
    assert find_marker("Re: [HD-000123] [p1] outage", markers) == (True, "Re: [HD-000123] outage")
    assert find_marker("HOTFIX: outage", markers) == (True, "outage")
    assert find_marker("outage, please call me now", markers) == (True, "outage, please")
    assert find_marker("outage, please call me nowish", markers) == (
        False,
        "outage, please call me nowish",
    )
    assert find_marker("[ESCALATE] outage", markers) == (False, "[ESCALATE] outage")


def test_the_longer_of_two_overlapping_markers_is_removed_whole() -> None:
    markers = ("ESCALATE", "ESCALATE NOW")
    assert find_marker("ESCALATE NOW printer", markers) == (True, "printer")
    assert find_marker("printer ESCALATE NOW", markers) == (True, "printer")


def test_a_marker_inside_another_is_removed_with_it() -> None:
    markers = ("[ESCALATE]", "ESCALATE")
    assert find_marker("printer [ESCALATE] now", markers) == (True, "printer now")
    assert find_marker("printer ESCALATE now", markers) == (True, "printer now")


def test_blank_marker_is_rejected() -> None:
    with pytest.raises(ValueError, match="blank"):
        find_marker("printer", ["[ESCALATE]", "  "])


# Subjects built from words that cannot form a marker or a separator: no
# brackets, no colons, no "urgent", and starting with a letter or digit.
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
plain_words = (
    st.tuples(st.sampled_from(_ALNUM), st.text(alphabet=_ALNUM + "-,.!?", max_size=10))
    .map("".join)
    .filter(lambda word: word.rstrip("-,.!?") != "urgent")
)
plain_subjects = st.lists(plain_words, max_size=8).map(" ".join)
heads = st.lists(st.sampled_from(["Re:", "RE:", "Fwd:", "FW:", "AW:", "[HD-000123]"]), max_size=3)


# A default marker with the case of each letter flipped or not.
any_case_markers = st.sampled_from(DEFAULT_MARKERS).flatmap(
    lambda marker: st.lists(st.booleans(), min_size=len(marker), max_size=len(marker)).map(
        lambda flips: "".join(
            c.swapcase() if flip else c for c, flip in zip(marker, flips, strict=True)
        )
    )
)


@given(heads, any_case_markers, plain_subjects)
def test_marker_after_any_head_is_found_in_any_case(
    head: list[str], marker: str, rest: str
) -> None:
    subject = " ".join([*head, marker, rest])
    assert find_marker(subject) == (True, " ".join([*head, rest]).strip())


@given(heads, st.sampled_from([m for m in DEFAULT_MARKERS if not m.endswith(":")]), plain_subjects)
def test_bracket_and_phrase_markers_are_found_at_the_end(
    head: list[str], marker: str, rest: str
) -> None:
    subject = " ".join([*head, rest, marker])
    assert find_marker(subject) == (True, " ".join(" ".join([*head, rest]).split()))


@given(heads, plain_subjects)
def test_subjects_without_markers_are_left_alone(head: list[str], rest: str) -> None:
    subject = " ".join([*head, rest])
    assert find_marker(subject) == (False, subject)


ascii_subjects = st.text(alphabet=st.characters(min_codepoint=9, max_codepoint=126))


@given(ascii_subjects)
def test_found_means_a_marker_was_there_and_the_rest_is_tidy(subject: str) -> None:
    found, cleaned = find_marker(subject)
    if not found:
        assert cleaned == subject
        return
    squashed = " ".join(subject.split()).casefold()
    assert any(" ".join(m.split()).casefold() in squashed for m in DEFAULT_MARKERS)
    assert cleaned == " ".join(cleaned.split())
    assert len(cleaned) < len(subject)
