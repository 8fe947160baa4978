"""Priority and category of a new ticket from its first mail."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.sla.classify import (
    Category,
    CategoryRule,
    CategoryRules,
    HeaderRule,
    KeywordRule,
    PriorityRules,
    PrioritySource,
    classify_category,
    classify_mail,
    classify_priority,
)
from helpdesk.sla.policy import Priority

PROPERTY = settings(database=None, deadline=None, max_examples=200)
NO_HEADERS: tuple[tuple[str, str], ...] = ()


# --- subject markers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "priority", "cleaned"),
    [
        ("[Critical] Payments failing", Priority.CRITICAL, "Payments failing"),
        ("[HIGH] Reports slow", Priority.HIGH, "Reports slow"),
        ("Reports slow [medium]", Priority.MEDIUM, "Reports slow"),
        ("[ Low ] Typo on page", Priority.LOW, "Typo on page"),
        ("[P1] Site unreachable", Priority.CRITICAL, "Site unreachable"),
        ("[p2]: Export broken", Priority.HIGH, "Export broken"),
        ("Re: [P3] Rounding", Priority.MEDIUM, "Re: Rounding"),
        ("[P4] Colour of button", Priority.LOW, "Colour of button"),
    ],
)
def test_subject_marker_sets_priority_and_is_removed(
    subject: str, priority: Priority, cleaned: str
) -> None:
    assert classify_priority(subject, "", NO_HEADERS) == (
        priority,
        PrioritySource.SUBJECT,
        cleaned,
    )


def test_subject_marker_beats_headers_and_keywords() -> None:
    decision = classify_priority(
        "[Low] production down?", "Total outage.", [("Importance", "High")]
    )
    assert decision.priority is Priority.LOW
    assert decision.source is PrioritySource.SUBJECT


def test_several_markers_take_the_most_urgent_and_all_are_removed() -> None:
    decision = classify_priority("[Low] [P2] Invoices missing [medium]", "", NO_HEADERS)
    assert decision == (Priority.HIGH, PrioritySource.SUBJECT, "Invoices missing")


def test_unknown_brackets_are_not_markers() -> None:
    decision = classify_priority("[P5] [Highest] [JIRA-12] Hello", "", NO_HEADERS)
    assert decision == (Priority.MEDIUM, PrioritySource.DEFAULT, "[P5] [Highest] [JIRA-12] Hello")


# --- headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("Importance", "high"),
        ("importance", "High"),
        ("X-Priority", "1 (Highest)"),
        ("X-Priority", "2"),
        ("Priority", "urgent"),
    ],
)
def test_urgent_headers_raise_to_high(header: tuple[str, str]) -> None:
    assert classify_priority("Reports", "", [header]) == (
        Priority.HIGH,
        PrioritySource.HEADER,
        "Reports",
    )


@pytest.mark.parametrize(
    "header",
    [("X-Priority", "3 (Normal)"), ("Importance", "normal"), ("Importance", ""), ("X-Mailer", "1")],
)
def test_ordinary_headers_leave_the_default(header: tuple[str, str]) -> None:
    assert classify_priority("Reports", "", [header]).source is PrioritySource.DEFAULT


def test_headers_are_capped_at_high_by_default() -> None:
    rules = PriorityRules(headers=(HeaderRule("X-Priority", "1", Priority.CRITICAL),))
    decision = classify_priority("Reports", "", [("X-Priority", "1")], rules)
    assert decision.priority is Priority.HIGH


def test_the_header_cap_is_a_parameter() -> None:
    rules = PriorityRules(
        headers=(HeaderRule("X-Priority", "1", Priority.CRITICAL),),
        header_ceiling=Priority.CRITICAL,
    )
    decision = classify_priority("Reports", "", [("X-Priority", "1")], rules)
    assert decision == (Priority.CRITICAL, PrioritySource.HEADER, "Reports")


def test_a_header_never_lowers_a_critical_keyword() -> None:
    decision = classify_priority("Production down", "", [("Importance", "high")])
    assert decision == (Priority.CRITICAL, PrioritySource.KEYWORD, "Production down")


def test_a_header_raises_a_low_keyword() -> None:
    decision = classify_priority("Quick question", "", [("Importance", "high")])
    assert decision == (Priority.HIGH, PrioritySource.HEADER, "Quick question")


# --- keywords -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body", "priority"),
    [
        ("Production down", "", Priority.CRITICAL),
        ("Help", "Our system is down since 9am", Priority.CRITICAL),
        ("Outage in EU region", "", Priority.CRITICAL),
        ("Possible DATA LOSS", "", Priority.CRITICAL),
        ("Security breach", "", Priority.CRITICAL),
        ("Major feature unavailable", "", Priority.HIGH),
        ("Users can’t log in", "", Priority.HIGH),
        ("Users cannot\n  log in", "", Priority.HIGH),
        ("How do I export?", "", Priority.LOW),
        ("General query", "", Priority.LOW),
    ],
)
def test_keywords_from_the_policy_table(subject: str, body: str, priority: Priority) -> None:
    decision = classify_priority(subject, body, NO_HEADERS)
    assert (decision.priority, decision.source) == (priority, PrioritySource.KEYWORD)
    assert decision.subject == subject


def test_the_most_urgent_keyword_wins() -> None:
    decision = classify_priority("A question", "We had data loss overnight.", NO_HEADERS)
    assert decision.priority is Priority.CRITICAL


@pytest.mark.parametrize(
    ("subject", "body", "priority"),
    [
        # A negation just before a keyword, in its clause, takes it back.
        ("Invoice download", "No data loss, just want to know how do I download it.",
         Priority.LOW),
        ("Slow report", "There isn’t an outage; the report is just slow.", Priority.MEDIUM),
        ("Upgrade", "We upgraded without any data loss.", Priority.MEDIUM),
        # ... but not across a clause, nor from further back.
        ("Help", "No, production is down!", Priority.CRITICAL),
        ("Help", "Not sure why, but we had data loss overnight.", Priority.CRITICAL),
        ("Help", "Nothing helps: production is down.", Priority.CRITICAL),
        # A workaround makes a High keyword Medium, as the policy table reads;
        # a denied one does not, and Critical stays Critical.
        ("Login", "Users cannot log in on the web; a workaround is the mobile app.",
         Priority.MEDIUM),
        ("Login", "Users cannot log in and there is no workaround.", Priority.HIGH),
        ("Login", "Users cannot log in, and we found no work-around.", Priority.HIGH),
        ("Data loss", "We had data loss; as a workaround we restored a backup.",
         Priority.CRITICAL),
        # A negation of another word, further back, is not the keyword's.
        ("Help", "We have no idea why production is down.", Priority.CRITICAL),
        ("Help", "Never seen an outage like this.", Priority.CRITICAL),
        # Dashes and "but" end a clause; quotes and emphasis around a word do not hide it.
        ("Help", "No problem - production is down.", Priority.CRITICAL),
        ("Help", "No outage but production is down.", Priority.CRITICAL),
        ("Invoice", "“No” data loss, just a question.", Priority.LOW),
        ("Invoice", "*No* data loss, just a question.", Priority.LOW),
        # A workaround asked about, or said to be none, is no workaround.
        ("Login", "Users cannot log in; is there a workaround?", Priority.HIGH),
        ("Login", "Users cannot log in. Workaround: none.", Priority.HIGH),
        ("Login", "Users cannot log in. Workaround: use the app.", Priority.MEDIUM),
    ],
)
def test_negations_and_workarounds(subject: str, body: str, priority: Priority) -> None:
    assert classify_priority(subject, body, NO_HEADERS).priority is priority


def test_negations_and_workarounds_are_rules() -> None:
    plain = PriorityRules(negations=(), workarounds=())
    assert classify_priority("x", "No data loss here.", NO_HEADERS, plain).priority is (
        Priority.CRITICAL)
    assert classify_priority("x", "Cannot log in; workaround: VPN", NO_HEADERS, plain).priority is (
        Priority.HIGH)
    german = PriorityRules(negations=("kein", "keine"))
    assert classify_priority("x", "Keine data loss.", NO_HEADERS, german).priority is (
        Priority.MEDIUM)


def test_keywords_match_whole_words_only() -> None:
    decision = classify_priority("Questionnaire results", "outages-free? No: breakout.", NO_HEADERS)
    assert decision.source is PrioritySource.DEFAULT


def test_no_evidence_is_medium() -> None:
    assert classify_priority("Rounding in report", "Totals are off by one.", NO_HEADERS) == (
        Priority.MEDIUM,
        PrioritySource.DEFAULT,
        "Rounding in report",
    )


def test_only_the_top_of_the_body_is_read() -> None:
    body = "Totals are off by one.\n" + "x " * 3000 + "\n-- \nDisclaimer: data loss ..."
    assert classify_priority("Rounding", body, NO_HEADERS).source is PrioritySource.DEFAULT
    wide = PriorityRules(body_scan_chars=len(body))
    assert classify_priority("Rounding", body, NO_HEADERS, wide).priority is Priority.CRITICAL


def test_keyword_rules_and_fallback_are_configurable() -> None:
    rules = PriorityRules(
        keywords=(KeywordRule("payroll run", Priority.CRITICAL),), fallback=Priority.LOW
    )
    assert classify_priority("Payroll  run stuck", "", NO_HEADERS, rules).priority is (
        Priority.CRITICAL
    )
    assert classify_priority("Production down", "", NO_HEADERS, rules) == (
        Priority.LOW,
        PrioritySource.DEFAULT,
        "Production down",
    )


def test_regex_characters_in_phrases_are_literal() -> None:
    rules = PriorityRules(keywords=(KeywordRule("c++ (build)", Priority.HIGH),))
    assert classify_priority("c++ (build) broken", "", NO_HEADERS, rules).priority is Priority.HIGH
    assert classify_priority("cc (build) broken", "", NO_HEADERS, rules).priority is (
        Priority.MEDIUM
    )


def test_an_empty_phrase_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        classify_priority(
            "x", "", NO_HEADERS, PriorityRules(keywords=(KeywordRule(" ", Priority.LOW),))
        )


def test_adversarial_input_is_classified_in_linear_time() -> None:
    # Long runs of near-matches: quadratic backtracking over ~120 kB would take
    # minutes; the flat patterns here take a fraction of a second.
    body = ("system " * 10_000) + ("cannot " + " " * 2_000) * 20 + "[" * 10_000
    subject = "[" + " " * 10_000 + "high" + " " * 10_000
    started = time.perf_counter()
    decision = classify_priority(subject, body, NO_HEADERS, PriorityRules(body_scan_chars=10**6))
    classify_category(subject, body, CategoryRules(body_scan_chars=10**6))
    assert time.perf_counter() - started < 2.0
    assert decision.source is PrioritySource.DEFAULT


# --- categories ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "category", "cleaned"),
    [
        ("[Bug] Export crashes", Category.BUG, "Export crashes"),
        ("[question] Exports", Category.QUESTION, "Exports"),
        ("[Billing]: Wrong VAT", Category.BILLING, "Wrong VAT"),
        ("[Change] Add SSO", Category.CHANGE_REQUEST, "Add SSO"),
        ("[Change Request] Add SSO", Category.CHANGE_REQUEST, "Add SSO"),
        ("Add SSO [Feature Request]", Category.CHANGE_REQUEST, "Add SSO"),
    ],
)
def test_category_marker_sets_category_and_is_removed(
    subject: str, category: Category, cleaned: str
) -> None:
    assert classify_category(subject, "error everywhere") == (category, cleaned)


@pytest.mark.parametrize(
    ("subject", "body", "category"),
    [
        ("Export crashes", "", Category.BUG),
        ("Export", "It fails with an exception.", Category.BUG),
        ("How do I export?", "", Category.QUESTION),
        ("Invoice 1234", "", Category.BILLING),
        ("Error on my invoice", "", Category.BILLING),
        ("Feature request: dark mode", "", Category.CHANGE_REQUEST),
        ("Hello", "Please add a CSV export.", Category.CHANGE_REQUEST),
        ("Hello", "Lunch on Friday?", Category.OTHER),
    ],
)
def test_category_keywords(subject: str, body: str, category: Category) -> None:
    assert classify_category(subject, body) == (category, subject)


def test_category_keywords_in_the_subject_beat_the_body() -> None:
    assert classify_category("Question about exports", "We were charged twice").category is (
        Category.QUESTION
    )


def test_category_rules_are_configurable() -> None:
    rules = CategoryRules(
        markers=(CategoryRule("defect", Category.BUG),),
        keywords=(CategoryRule("wrong total", Category.BILLING),),
    )
    assert classify_category("[Defect] Totals", "", rules) == (Category.BUG, "Totals")
    assert classify_category("[Bug] Totals", "", rules) == (Category.OTHER, "[Bug] Totals")
    assert classify_category("Wrong  total", "", rules).category is Category.BILLING


def test_classify_mail_strips_both_markers() -> None:
    decision = classify_mail("[P1] [Bug] Checkout down", "", [("Importance", "high")])
    assert decision == (Priority.CRITICAL, PrioritySource.SUBJECT, Category.BUG, "Checkout down")


# --- properties ---------------------------------------------------------------

MARKERS = {
    "Critical": Priority.CRITICAL,
    "P1": Priority.CRITICAL,
    "High": Priority.HIGH,
    "P2": Priority.HIGH,
    "Medium": Priority.MEDIUM,
    "P3": Priority.MEDIUM,
    "Low": Priority.LOW,
    "P4": Priority.LOW,
}
words = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="[]"), max_size=40)


@PROPERTY
@given(
    before=words,
    after=words,
    marker=st.sampled_from(sorted(MARKERS)),
    upper=st.booleans(),
)
def test_a_marker_anywhere_in_any_subject_decides_and_disappears(
    before: str, after: str, marker: str, upper: bool
) -> None:
    spelled = marker.upper() if upper else marker.lower()
    subject = f"{before} [{spelled}] {after}"
    decision = classify_priority(subject, "production down", [("Importance", "high")])
    assert decision.priority is MARKERS[marker]
    assert decision.source is PrioritySource.SUBJECT
    assert f"[{spelled}]" not in decision.subject
    assert decision.subject == " ".join(f"{before} {after}".split())


@PROPERTY
@given(subject=words, body=words, headers=st.lists(st.tuples(words, words), max_size=3))
def test_classification_is_total_and_keeps_unmarked_subjects(
    subject: str, body: str, headers: list[tuple[str, str]]
) -> None:
    decision = classify_priority(subject, body, headers)
    assert decision.priority in Priority
    assert decision.subject == subject
    assert classify_category(subject, body).subject == subject
