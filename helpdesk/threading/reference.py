"""Ticket references ("HD-000123") and the subject lines that carry them.

A reference is the configured prefix, a dash and the ticket number, zero
padded to six digits and wider when the number needs it. People and mail
clients mangle what we put in subjects, so reading is lenient where intent is
clear and strict where a false match is likely:

* ``[HD-000123]``, ``[hd 123]``, ``[HD000123]``: anything bracketed, since the
  brackets show intent;
* ``HD-000123``, ``hd-123``: a dash is specific enough (clients and lists that
  drop our brackets, people who retype the number);
* ``HD000123``, ``HD 000123``: only with at least six digits, as copied from
  our own padded form, so that "HD 720" or "HD1080" is not read as a ticket.

A reference never matches inside a longer token ("XHD-000123", "HD-000123b").
Only ASCII letters and digits count as token characters, so a reference
embedded in CJK text without spaces is still found.
"""

from __future__ import annotations

import re
import unicodedata

MIN_DIGITS = 6
# Wider than any helpdesk will reach; stops a long digit run becoming a
# number the database cannot hold.
MAX_DIGITS = 12
# Ticket.subject_key is a VARCHAR(255).
SUBJECT_KEY_MAX = 255

_PREFIX_RE = re.compile(r"[A-Za-z0-9]{1,16}")
_CANONICAL_RE = re.compile(r"([A-Za-z0-9]{1,16})-([0-9]{6,12})")

# Reply and forward prefixes that clients put in front of a subject: the
# RFC 5322 §3.6.5 "Re:" plus the translations real clients use (Outlook,
# Thunderbird, Apple Mail, webmail) for German, Nordic, Dutch, French,
# Spanish, Portuguese, Italian, Polish, Czech, Turkish, Greek, Russian,
# Hebrew, Chinese, Japanese and Korean.
_REPLY_WORDS = (
    "re", "aw", "antw", "antwort", "sv", "vs", "odp", "odg", "ynt", "res", "rif", "r",
    "atb", "vá", "ats", "отв", "ответ", "απ", "σχετ", "השב", "回复", "回覆", "答复", "答覆",
    "返信", "회신", "답장",
)  # fmt: skip
_FORWARD_WORDS = (
    "fw", "fwd", "wg", "tr", "rv", "enc", "i", "pd", "doorst", "vl", "vb", "ilt",
    "posr", "továbbítás", "pārs", "пересл", "πρθ", "הועבר", "转发", "轉寄", "轉發",
    "転送", "전달",
)  # fmt: skip
_WORDS = sorted({*_REPLY_WORDS, *_FORWARD_WORDS}, key=len, reverse=True)
# "Re:", "RE :", "Re[2]:", "Re(2):", "Re^2:", full-width "回复：".
_REPLY_PREFIX_RE = re.compile(
    r"\s*(?:" + "|".join(map(re.escape, _WORDS)) + r")"
    r"\s*(?:\[\d{1,3}\]|\(\d{1,3}\)|\^\d{1,3})?\s*[:：]\s*",
    re.IGNORECASE,
)

# RFC 5256 §5 ABNF, literals case-insensitive as everywhere in ABNF.
_BLOB = r"\[[^\[\]]*\][ \t]*"
# Possessive: a blob can never be the start of "re"/"fw", and backtracking
# over a long run of blobs would be quadratic.
_SUBJ_LEADER_RE = re.compile(rf"(?:(?:{_BLOB})*+(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])", re.I)
_SUBJ_BLOB_RE = re.compile(_BLOB)
_SUBJ_BLOBS_RE = re.compile(rf"(?:{_BLOB})++")


def format_reference(prefix: str, number: int) -> str:
    """``format_reference("HD", 123) == "HD-000123"``."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"reference prefix must be 1-16 ASCII letters or digits: {prefix!r}")
    if not 0 <= number < 10**MAX_DIGITS:
        raise ValueError(f"ticket number out of range: {number}")
    return f"{prefix.upper()}-{number:0{MIN_DIGITS}d}"


def parse_reference(text: str, prefix: str) -> int | None:
    """The ticket number when ``text`` is one reference in any accepted form.

    Surrounding whitespace and brackets are allowed; anything else is not.
    """
    stripped = text.strip()
    bracketed = stripped.startswith("[") and stripped.endswith("]")
    inner = stripped[1:-1].strip() if bracketed else stripped
    match = _reference_body_re(prefix).fullmatch(inner)
    if match is None or not _is_acceptable(match, bracketed):
        return None
    return int(match.group("num"))


def split_reference(reference: str) -> tuple[str, int]:
    """The prefix and number of a canonical reference made by :func:`format_reference`."""
    match = _CANONICAL_RE.fullmatch(reference)
    if match is None:
        raise ValueError(f"not a canonical reference: {reference!r}")
    prefix, number = match.group(1).upper(), int(match.group(2))
    if format_reference(prefix, number) != reference.upper():
        raise ValueError(f"not a canonical reference: {reference!r}")
    return prefix, number


def find_subject_references(subject: str, prefix: str) -> list[str]:
    """Every reference in ``subject``, canonical, in order of first appearance."""
    found: list[str] = []
    for match in _finder_re(prefix).finditer(subject):
        bracketed = match.group("open") is not None
        if not _is_acceptable(match, bracketed):
            continue
        reference = format_reference(prefix, int(match.group("num")))
        if reference not in found:
            found.append(reference)
    return found


def strip_reply_prefixes(subject: str) -> str:
    """``subject`` without leading reply/forward prefixes, however many."""
    text = subject
    while True:
        match = _REPLY_PREFIX_RE.match(text)
        if match is None or match.end() == 0:
            return text.strip()
        text = text[match.end() :]


def tag_subject(subject: str, reference: str, *, reply: bool = False) -> str:
    """``[HD-000123] subject``, or ``Re: [HD-000123] subject`` when ``reply``.

    Earlier tags of this reference (bracketed anywhere, or bare at the start)
    and reply prefixes are removed first, so the tag is never doubled and
    "RE: AW: Re:" chains do not grow. Tags of other tickets stay: they are
    the customer's words. "Re:" goes in front of the tag, where RFC 5322
    §3.6.5 puts it; clients test for it there and then do not add another.
    """
    prefix, number = split_reference(reference)
    body = _reference_body(prefix)
    tag_anywhere = re.compile(rf"\[\s*{body}\s*\]", re.IGNORECASE)
    bare_at_start = re.compile(rf"{body}(?![A-Za-z0-9_])[\s:]*", re.IGNORECASE)

    def is_ours(match: re.Match[str]) -> bool:
        return int(match.group("num")) == number

    text = " ".join(subject.split())
    while True:
        before = text
        text = strip_reply_prefixes(text)
        text = tag_anywhere.sub(lambda m: " " if is_ours(m) else m.group(0), text)
        text = " ".join(text.split())
        bare = bare_at_start.match(text)
        if bare is not None and is_ours(bare) and _is_acceptable(bare, bracketed=False):
            text = text[bare.end() :]
        if text == before:
            break
    tagged = f"[{reference.upper()}] {text}".rstrip()
    return f"Re: {tagged}" if reply else tagged


def base_subject(subject: str) -> str:
    """The RFC 5256 §2.1 base subject: what is left when "Re:", "Fwd:",
    "[list]" blobs, "(fwd)" trailers and "[fwd: ...]" wrappers are removed.

    Only the RFC's English "re"/"fw"/"fwd" are known here; :func:`subject_key`
    adds the localised prefixes.
    """
    # Step 1: the value is already RFC 2047 decoded; fold whitespace.
    text = re.sub(r"\s+", " ", subject)
    while True:
        # Step 2, with string tests: a regex searched from the end of a
        # long "(fwd)(fwd)..." run would be quadratic.
        while True:
            if text.endswith((" ", "\t")):
                text = text[:-1]
            elif text[-5:].lower() == "(fwd)":
                text = text[:-5]
            else:
                break
        # Steps 3 to 5. Step 4 takes one blob per round; taking a whole run
        # of blobs at once gives the same result without a quadratic loop:
        # all of them when text follows, else all but the last.
        while True:
            while (leader := _SUBJ_LEADER_RE.match(text)) is not None and leader.end():
                text = text[leader.end() :]
            blobs = _SUBJ_BLOBS_RE.match(text)
            if blobs is None:
                break
            if text[blobs.end() :].strip():
                text = text[blobs.end() :]
                continue
            last = [m.start() for m in _SUBJ_BLOB_RE.finditer(text, 0, blobs.end())][-1]
            text = text[last:]
            break
        # Step 6.
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            continue
        return text


def subject_key(subject: str) -> str:
    """A normalised subject for looking tickets up by topic (Outlook's
    Thread-Topic): the base subject with localised prefixes removed too,
    Unicode-compatibility folded and case-folded, so "AW: [HD-000123] Drucker"
    and "drucker" meet. Empty when nothing meaningful is left."""
    text = unicodedata.normalize("NFKC", subject)
    while True:
        before = text
        text = strip_reply_prefixes(base_subject(text))
        if text == before:
            break
    return " ".join(text.casefold().split())[:SUBJECT_KEY_MAX]


def _reference_body(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"reference prefix must be 1-16 ASCII letters or digits: {prefix!r}")
    return rf"{re.escape(prefix)}(?P<sep>-|[ \t]|)(?P<num>[0-9]{{1,{MAX_DIGITS}}})(?![0-9])"


def _reference_body_re(prefix: str) -> re.Pattern[str]:
    return re.compile(_reference_body(prefix), re.IGNORECASE)


def _finder_re(prefix: str) -> re.Pattern[str]:
    # Either a bracketed reference, or a bare one that is not part of a longer
    # ASCII token. Before a bare reference "-" counts as part of a token
    # ("XY-HD-000123"); after it only "-" followed by a letter or digit does,
    # so "HD-000123 - printer" and "HD-000123-" still match.
    body = _reference_body(prefix)
    return re.compile(
        rf"(?:(?P<open>\[)\s*|(?<![A-Za-z0-9_-])){body}"
        rf"(?(open)\s*\]|(?![A-Za-z0-9_]|-[A-Za-z0-9]))",
        re.IGNORECASE,
    )


def _is_acceptable(match: re.Match[str], bracketed: bool) -> bool:
    if bracketed or match.group("sep") == "-":
        return True
    return len(match.group("num")) >= MIN_DIGITS
