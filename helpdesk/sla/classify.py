"""Priority and category of a new ticket, from its first mail.

Priority evidence, strongest first: a marker the sender put in the subject,
then the mail's priority headers and keywords in the text. Headers may only
raise a ticket so far (High by default) because some mail clients mark every
message important; keywords come from the policy table's "Meaning" column.

Keyword rules are phrases, not regular expressions: configuration cannot
introduce a pattern with catastrophic backtracking, and every pattern built
here is a flat alternation of escaped literals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from helpdesk.sla.policy import Priority, cap_priority, urgency


class PrioritySource(StrEnum):
    SUBJECT = "subject"
    HEADER = "header"
    KEYWORD = "keyword"
    DEFAULT = "default"


class Category(StrEnum):
    BUG = "bug"
    QUESTION = "question"
    CHANGE_REQUEST = "change_request"
    BILLING = "billing"
    OTHER = "other"


@dataclass(frozen=True)
class HeaderRule:
    """``header: value`` (both case-insensitive) means ``priority``.

    Only the value's first word is compared, so "X-Priority: 1 (Highest)"
    matches the value "1".
    """

    header: str
    value: str
    priority: Priority


@dataclass(frozen=True)
class KeywordRule:
    """A phrase anywhere in the subject or body (whole words, any spacing)."""

    phrase: str
    priority: Priority


@dataclass(frozen=True)
class CategoryRule:
    """A phrase (or, among markers, the text inside ``[...]``) meaning ``category``."""

    phrase: str
    category: Category


def _keywords(priority: Priority, *phrases: str) -> tuple[KeywordRule, ...]:
    return tuple(KeywordRule(p, priority) for p in phrases)


def _categories(category: Category, *phrases: str) -> tuple[CategoryRule, ...]:
    return tuple(CategoryRule(p, category) for p in phrases)


DEFAULT_HEADER_RULES = (
    HeaderRule("Importance", "high", Priority.HIGH),
    HeaderRule("X-Priority", "1", Priority.HIGH),
    HeaderRule("X-Priority", "2", Priority.HIGH),
    # RFC 2156 section 5.3.6 values: normal, urgent, non-urgent.
    HeaderRule("Priority", "urgent", Priority.HIGH),
)

DEFAULT_PRIORITY_KEYWORDS = (
    *_keywords(
        Priority.CRITICAL,
        "production down", "production is down", "system down", "system is down",
        "outage", "data loss", "lost data", "security breach", "data breach",
    ),
    *_keywords(
        Priority.HIGH,
        "major feature unavailable", "significant business impact",
        "cannot log in", "can't log in", "cannot login", "can't login",
        "unable to log in", "unable to login",
    ),
    *_keywords(
        Priority.LOW,
        "question", "quick question", "how do i", "how can i", "how do we",
        "general query", "general question",
    ),
)  # fmt: skip

# A keyword right after one of these words, in the same clause, is not
# evidence: "no data loss", "there isn't an outage", "without a workaround".
DEFAULT_NEGATIONS = (
    "no", "not", "without", "never", "nor", "zero", "isn't", "aren't", "wasn't", "weren't",
    "don't", "doesn't", "didn't", "hasn't", "haven't", "hadn't", "won't",
)  # fmt: skip
# The policy table's Medium is "non-critical issue, workaround available": a
# High keyword with a workaround mentioned (and not denied) gives Medium.
DEFAULT_WORKAROUNDS = ("workaround", "work around", "work-around")
# Words before a keyword that a negation may stand in: two catch "no data
# loss" and "isn't an outage" but not "no idea why production is down".
NEGATION_REACH = 2
# After a workaround, what says there is none: "Workaround: none".
_NO_WORKAROUND = frozenset({"none", "no", "not", "n/a", "nothing", "unknown"})

DEFAULT_CATEGORY_MARKERS = (
    *_categories(Category.BUG, "bug", "defect"),
    *_categories(Category.QUESTION, "question", "query"),
    *_categories(Category.BILLING, "billing", "invoice"),
    *_categories(Category.CHANGE_REQUEST, "change", "change request", "feature request", "feature"),
    *_categories(Category.OTHER, "other"),
)

# In order: the first category whose phrase occurs wins, the subject before the
# body, so the more specific billing and change wording beats a bare "error".
DEFAULT_CATEGORY_KEYWORDS = (
    *_categories(
        Category.BILLING,
        "invoice", "billing", "payment", "refund", "receipt", "charged", "subscription",
    ),
    *_categories(
        Category.CHANGE_REQUEST,
        "feature request", "change request", "enhancement", "please add", "could you add",
        "would like to request",
    ),
    *_categories(
        Category.BUG,
        "bug", "error", "crash", "crashes", "crashed", "broken", "not working",
        "doesn't work", "does not work", "exception", "stack trace", "fails", "failed",
    ),
    *_categories(
        Category.QUESTION,
        "question", "how do i", "how can i", "how to", "is it possible", "can you explain",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class PriorityRules:
    headers: tuple[HeaderRule, ...] = DEFAULT_HEADER_RULES
    header_ceiling: Priority = Priority.HIGH
    keywords: tuple[KeywordRule, ...] = DEFAULT_PRIORITY_KEYWORDS
    fallback: Priority = Priority.MEDIUM
    # Only the top of the body is read: signatures and legal footers further
    # down talk about "data loss" and "security breach" in every mail.
    body_scan_chars: int = 4000
    negations: tuple[str, ...] = DEFAULT_NEGATIONS
    workarounds: tuple[str, ...] = DEFAULT_WORKAROUNDS


@dataclass(frozen=True)
class CategoryRules:
    markers: tuple[CategoryRule, ...] = DEFAULT_CATEGORY_MARKERS
    keywords: tuple[CategoryRule, ...] = DEFAULT_CATEGORY_KEYWORDS
    fallback: Category = Category.OTHER
    body_scan_chars: int = 4000


DEFAULT_PRIORITY_RULES = PriorityRules()
DEFAULT_CATEGORY_RULES = CategoryRules()


class PriorityDecision(NamedTuple):
    priority: Priority
    source: PrioritySource
    subject: str


class CategoryDecision(NamedTuple):
    category: Category
    subject: str


class Classification(NamedTuple):
    priority: Priority
    priority_source: PrioritySource
    category: Category
    subject: str


_PRIORITY_MARKER = re.compile(r"\[[ \t]*(critical|high|medium|low|p[1-4])[ \t]*\]:?", re.IGNORECASE)
_MARKER_PRIORITY = {
    "critical": Priority.CRITICAL,
    "p1": Priority.CRITICAL,
    "high": Priority.HIGH,
    "p2": Priority.HIGH,
    "medium": Priority.MEDIUM,
    "p3": Priority.MEDIUM,
    "low": Priority.LOW,
    "p4": Priority.LOW,
}


def classify_priority(
    subject: str,
    body: str,
    headers: Iterable[tuple[str, str]],
    rules: PriorityRules = DEFAULT_PRIORITY_RULES,
) -> PriorityDecision:
    """Priority of a new ticket, where it came from, and the subject without markers.

    Several subject markers: the most urgent wins (all are removed). Otherwise
    the header and keyword evidence are weighed together and the more urgent
    wins, so "Importance: high" can raise a routine question to High but can
    never pull "production down" below Critical; on a tie the header is named.
    """
    markers = [_MARKER_PRIORITY[m.group(1).lower()] for m in _PRIORITY_MARKER.finditer(subject)]
    if markers:
        cleaned = _tidy(_PRIORITY_MARKER.sub(" ", subject))
        return PriorityDecision(max(markers, key=urgency), PrioritySource.SUBJECT, cleaned)

    from_header = _header_priority(headers, rules)
    text = f"{subject}\n{body[: rules.body_scan_chars]}"
    from_keywords = _keyword_priority(text, rules)
    if from_keywords is Priority.HIGH and _affirmed_in(text, rules.workarounds,
                                                       _denials(rules.negations)):
        from_keywords = Priority.MEDIUM
    if from_header is not None and (
        from_keywords is None or urgency(from_header) >= urgency(from_keywords)
    ):
        return PriorityDecision(from_header, PrioritySource.HEADER, subject)
    if from_keywords is not None:
        return PriorityDecision(from_keywords, PrioritySource.KEYWORD, subject)
    return PriorityDecision(rules.fallback, PrioritySource.DEFAULT, subject)


def classify_category(
    subject: str, body: str, rules: CategoryRules = DEFAULT_CATEGORY_RULES
) -> CategoryDecision:
    """Category from a ``[Bug]``-style subject marker, else keywords (subject first)."""
    marker_pattern, by_marker = _marker_pattern(rules.markers)
    if marker_pattern is not None:
        match = marker_pattern.search(subject)
        if match is not None:
            category = by_marker[_normal_phrase(match.group(1))]
            return CategoryDecision(category, _tidy(marker_pattern.sub(" ", subject)))
    patterns = _category_patterns(rules.keywords)
    for text in (subject, body[: rules.body_scan_chars]):
        for category, pattern in patterns:
            if pattern.search(text):
                return CategoryDecision(category, subject)
    return CategoryDecision(rules.fallback, subject)


def classify_mail(
    subject: str,
    body: str,
    headers: Iterable[tuple[str, str]],
    priority_rules: PriorityRules = DEFAULT_PRIORITY_RULES,
    category_rules: CategoryRules = DEFAULT_CATEGORY_RULES,
) -> Classification:
    """Both decisions, with every recognised marker removed from the subject."""
    priority = classify_priority(subject, body, headers, priority_rules)
    category = classify_category(priority.subject, body, category_rules)
    return Classification(priority.priority, priority.source, category.category, category.subject)


def _header_priority(headers: Iterable[tuple[str, str]], rules: PriorityRules) -> Priority | None:
    wanted = {(r.header.lower(), r.value.lower()): r.priority for r in rules.headers}
    found: Priority | None = None
    for name, value in headers:
        words = value.split(maxsplit=1)
        if not words:
            continue
        priority = wanted.get((name.strip().lower(), words[0].lower()))
        if priority is not None and (found is None or urgency(priority) > urgency(found)):
            found = priority
    return None if found is None else cap_priority(found, rules.header_ceiling)


def _keyword_priority(text: str, rules: PriorityRules) -> Priority | None:
    """The most urgent priority with a phrase in ``text`` that is not negated."""
    negations = _denials(rules.negations)
    for priority, pattern in _priority_patterns(rules.keywords):
        if any(_affirmed(text, m.start(), negations) for m in pattern.finditer(text)):
            return priority
    return None


@functools.lru_cache(maxsize=16)
def _denials(negations: tuple[str, ...]) -> frozenset[str]:
    """The negation words as compared, made once per rule set."""
    return frozenset(_normal_phrase(n) for n in negations)


def _affirmed_in(text: str, phrases: tuple[str, ...], negations: frozenset[str]) -> bool:
    """Whether one of ``phrases`` occurs in ``text`` without a negation before it."""
    if not phrases:
        return False
    return any(_affirmed(text, m.start(), negations) and _stated(text, m.end())
               for m in _cached_phrases_pattern(tuple(phrases)).finditer(text))


def _stated(text: str, end: int) -> bool:
    """Whether what follows a mention leaves it standing: not a question
    ("is there a workaround?") and not "none" ("Workaround: none")."""
    after = text[end:end + 80]
    clause = _CLAUSE_END.search(after)
    if clause is not None and clause.group() == "?":
        return False
    words = _normal_phrase(after.lstrip(" \t:-\u2013\u2014=")).split()[:1]
    return not (words and _EDGES.sub("", words[0]) in _NO_WORKAROUND)


# Where a clause ends: punctuation, dashes between words, and "but".
_CLAUSE_END = re.compile(r"[.,;:!?()\n]|\s[-\u2013\u2014]+\s|(?<!\w)but(?!\w)", re.IGNORECASE)
_EDGES = re.compile(r"^\W+|\W+$")


def _affirmed(text: str, start: int, negations: frozenset[str]) -> bool:
    """No negation among the few words before ``start`` in its clause.

    The look back is bounded (a few words, a few dozen characters), so
    checking every match keeps classification linear in the text."""
    before = text[max(0, start - 80):start]
    clause_start = max((m.end() for m in _CLAUSE_END.finditer(before)), default=0)
    words = [_EDGES.sub("", word) for word in _normal_phrase(before[clause_start:]).split()]
    if start > 80 and clause_start == 0:
        words = words[1:]  # the window may have cut the first one in half
    return not any(word in negations for word in words[-NEGATION_REACH:])


@functools.lru_cache(maxsize=16)
def _cached_phrases_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return _phrases_pattern(phrases)


@functools.lru_cache(maxsize=16)
def _priority_patterns(
    rules: tuple[KeywordRule, ...],
) -> tuple[tuple[Priority, re.Pattern[str]], ...]:
    """One pattern per priority, most urgent first, compiled once per rule set."""
    grouped: dict[Priority, list[str]] = {}
    for rule in rules:
        grouped.setdefault(rule.priority, []).append(rule.phrase)
    ordered = sorted(grouped.items(), key=lambda item: urgency(item[0]), reverse=True)
    return tuple((priority, _phrases_pattern(phrases)) for priority, phrases in ordered)


@functools.lru_cache(maxsize=16)
def _category_patterns(
    rules: tuple[CategoryRule, ...],
) -> tuple[tuple[Category, re.Pattern[str]], ...]:
    """One pattern per category, in the order categories first appear in ``rules``."""
    grouped: dict[Category, list[str]] = {}
    for rule in rules:
        grouped.setdefault(rule.category, []).append(rule.phrase)
    return tuple((category, _phrases_pattern(phrases)) for category, phrases in grouped.items())


@functools.lru_cache(maxsize=16)
def _marker_pattern(
    rules: tuple[CategoryRule, ...],
) -> tuple[re.Pattern[str] | None, Mapping[str, Category]]:
    by_marker = MappingProxyType({_normal_phrase(r.phrase): r.category for r in rules})
    if not by_marker:
        return None, by_marker
    # Longest first, so "[Change Request]" is not read as a "[Change" marker.
    alternatives = "|".join(_phrase_regex(p) for p in sorted(by_marker, key=len, reverse=True))
    pattern = re.compile(rf"\[[ \t]*({alternatives})[ \t]*\]:?", re.IGNORECASE)
    return pattern, by_marker


def _phrases_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(_phrase_regex(p) for p in phrases)
    # Lookarounds rather than \b, so a phrase may begin or end with punctuation.
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _phrase_regex(phrase: str) -> str:
    words = phrase.split()
    if not words:
        raise ValueError("an empty classification phrase would match every mail")
    # Typographic apostrophes are what most mail clients send for "can't".
    escaped = (re.escape(w).replace("'", "['’]") for w in words)
    return r"\s+".join(escaped)


def _normal_phrase(text: str) -> str:
    return " ".join(text.lower().replace("’", "'").split())


def _tidy(subject: str) -> str:
    return " ".join(subject.split())
