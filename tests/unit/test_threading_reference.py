from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.threading.reference import (
    SUBJECT_KEY_MAX,
    base_subject,
    find_subject_references,
    format_reference,
    parse_reference,
    split_reference,
    strip_reply_prefixes,
    subject_key,
    tag_subject,
)

prefixes = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,5}", fullmatch=True)
numbers = st.integers(min_value=0, max_value=10**12 - 1)
# Subjects made of words that cannot be read as references or prefixes.
plain_words = st.lists(
    st.from_regex(r"[a-z]{3,8}|[a-z]{2,6}[!?.,]", fullmatch=True).filter(
        lambda w: w.rstrip("!?.,") not in {"re", "aw", "sv", "fw", "fwd", "tr", "rv", "wg"}
    ),
    min_size=1,
    max_size=6,
)
REPLY_PREFIXES = [
    "Re: ", "RE: ", "re:", "Aw: ", "AW: ", "SV: ", "Sv: ", "VS: ", "Fwd: ", "FW: ", "Fw: ",
    "WG: ", "TR: ", "RV: ", "Antw: ", "Odp: ", "PD: ", "R: ", "RIF: ", "Res: ", "ENC: ",
    "VB: ", "YNT: ", "回复：", "回复: ", "答复: ", "转发: ", "Re[2]: ", "Re(3): ", "Re^2: ",
    "RE : ", "ΑΠ: ", "Отв: ",
]  # fmt: skip


@pytest.mark.parametrize(
    ("prefix", "number", "expected"),
    [
        ("HD", 1, "HD-000001"),
        ("HD", 123, "HD-000123"),
        ("HD", 999_999, "HD-999999"),
        ("HD", 1_000_000, "HD-1000000"),
        ("hd", 42, "HD-000042"),
        ("T2", 7, "T2-000007"),
    ],
)
def test_format_reference_pads_to_six_digits_and_widens(
    prefix: str, number: int, expected: str
) -> None:
    assert format_reference(prefix, number) == expected


@pytest.mark.parametrize(("prefix", "number"), [("", 1), ("H-D", 1), ("HD ", 1), ("HD", -1)])
def test_format_reference_rejects_bad_input(prefix: str, number: int) -> None:
    with pytest.raises(ValueError):
        format_reference(prefix, number)


def test_format_reference_rejects_numbers_too_wide_to_store() -> None:
    with pytest.raises(ValueError):
        format_reference("HD", 10**12)


@given(prefixes, numbers)
def test_parse_reference_reads_back_every_formatted_reference(prefix: str, number: int) -> None:
    reference = format_reference(prefix, number)
    assert parse_reference(reference, prefix) == number
    assert parse_reference(reference.lower(), prefix) == number
    assert parse_reference(f" [{reference}] ", prefix) == number
    assert parse_reference(reference.replace("-", ""), prefix) == number
    assert split_reference(reference) == (prefix.upper(), number)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HD-000123", 123),
        ("hd-123", 123),
        ("[HD 123]", 123),
        ("[hd123]", 123),
        ("HD 000123", 123),
        ("HD000123", 123),
        ("HD 123", None),  # no dash, no brackets, too short: "HD 720" is a screen
        ("HD123", None),
        ("HD-000123x", None),
        ("XHD-000123", None),
        ("HD-000123 printer", None),
        ("AB-000123", None),
        ("HD-", None),
        ("HD-1234567890123", None),  # thirteen digits is not a ticket number
    ],
)
def test_parse_reference_accepts_one_reference_in_a_client_spelling(
    text: str, expected: int | None
) -> None:
    assert parse_reference(text, "HD") == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[HD-000123] Printer on fire", ["HD-000123"]),
        ("RE: AW: SV: Fwd: [HD-000123] Printer", ["HD-000123"]),
        ("Re: HD-000123 Printer", ["HD-000123"]),  # brackets dropped
        ("re: [hd-000123] printer", ["HD-000123"]),  # case changed
        ("Printer [HD 000123]", ["HD-000123"]),
        ("Printer HD000123", ["HD-000123"]),
        ("Re: ticket hd-123, still broken", ["HD-000123"]),
        ("关于HD-000123的问题", ["HD-000123"]),  # CJK has no spaces between words
        ("[HD-000001] dup of HD-000002 and [hd-1]", ["HD-000001", "HD-000002"]),
        ("HD-000123 - printer", ["HD-000123"]),
        ("Ticket HD-000123.", ["HD-000123"]),
        ("XHD-000123", []),
        ("HD-000123b", []),
        ("AB-HD-000123", []),
        ("HD-000123-2", []),
        ("Screens: HD 720p, HD 1080, HD1080", []),
        ("HD-DVD drive", []),
        ("Order 000123", []),
        ("", []),
    ],
)
def test_find_subject_references(subject: str, expected: list[str]) -> None:
    assert find_subject_references(subject, "HD") == expected


def test_find_subject_references_uses_the_configured_prefix() -> None:
    assert find_subject_references("[SUP-000009] and [HD-000001]", "SUP") == ["SUP-000009"]


@pytest.mark.parametrize("prefix", REPLY_PREFIXES)
def test_strip_reply_prefixes_removes_each_client_prefix(prefix: str) -> None:
    assert strip_reply_prefixes(prefix + "Printer on fire") == "Printer on fire"


@given(st.lists(st.sampled_from(REPLY_PREFIXES), max_size=6), plain_words)
def test_strip_reply_prefixes_removes_any_chain_of_them(chain: list[str], words: list[str]) -> None:
    subject = " ".join(words)
    assert strip_reply_prefixes("".join(chain) + subject) == subject


@pytest.mark.parametrize(
    "subject",
    ["Reply: about the invoice", "Regarding: x", "Re-order of items", "Ref: 12", "Iris: hello"],
)
def test_strip_reply_prefixes_leaves_words_that_merely_look_alike(subject: str) -> None:
    assert strip_reply_prefixes(subject) == subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Printer on fire", "[HD-000123] Printer on fire"),
        ("Re: [HD-000123] Printer on fire", "[HD-000123] Printer on fire"),
        ("RE: AW: [HD-000123] Re: Printer [hd-000123]", "[HD-000123] Printer"),
        ("AW: HD-000123: Printer", "[HD-000123] Printer"),
        ("Re: [HD 123] Printer", "[HD-000123] Printer"),
        ("[HD-000099] Printer", "[HD-000123] [HD-000099] Printer"),
        ("HD-000099 Printer", "[HD-000123] HD-000099 Printer"),
        ("", "[HD-000123]"),
        ("Re:", "[HD-000123]"),
    ],
)
def test_tag_subject(subject: str, expected: str) -> None:
    assert tag_subject(subject, "HD-000123") == expected
    assert tag_subject(subject, "HD-000123", reply=True) == "Re: " + expected


@given(plain_words, st.lists(st.sampled_from(REPLY_PREFIXES), max_size=3), numbers)
def test_tag_subject_never_doubles_the_tag(words: list[str], chain: list[str], number: int) -> None:
    reference = format_reference("HD", number)
    tagged = tag_subject("".join(chain) + " ".join(words), reference)
    replied = tag_subject(tagged, reference, reply=True)
    assert tag_subject(tagged, reference) == tagged
    # A client answering our reply, and us answering that, changes nothing.
    assert tag_subject("AW: " + replied, reference, reply=True) == replied
    assert len(re.findall(re.escape(f"[{reference}]"), replied)) == 1
    assert find_subject_references(replied, "HD") == [reference]


def test_tag_subject_rejects_a_non_canonical_reference() -> None:
    with pytest.raises(ValueError):
        tag_subject("x", "HD-123")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        # RFC 5256 §2.1 steps: leaders, blobs, trailers, [fwd: ...] wrappers.
        ("Re: foo", "foo"),
        ("RE:  Re: re:foo", "foo"),
        ("Fwd: Fw: foo", "foo"),
        ("Re [2]: foo", "foo"),
        ("[fedora-devel] Re: foo", "foo"),
        ("Re: [fedora-devel] foo", "foo"),
        ("[a] [b] foo", "foo"),
        ("foo (fwd)", "foo"),
        ("foo (FWD) (fwd)  ", "foo"),
        ("[Fwd: Re: foo]", "foo"),
        ("Re: [Fwd: foo (fwd)]", "foo"),
        ("[HD-000123]", "[HD-000123]"),  # a blob alone is the subject
        ("\tRe:\tfoo  bar", "foo bar"),
        ("AW: foo", "AW: foo"),  # RFC 5256 knows only re/fw/fwd
    ],
)
def test_base_subject_follows_rfc_5256(subject: str, expected: str) -> None:
    assert base_subject(subject) == expected


def rfc_5256_taken_literally(subject: str) -> str:
    """RFC 5256 §2.1 step by step, one blob per round, slow but plain."""
    blob = r"\[[^\[\]]*\][ \t]*"
    leader = re.compile(rf"(?:(?:{blob})*(?:re|fwd?)[ \t]*(?:{blob})?:|[ \t])", re.I)
    text = re.sub(r"\s+", " ", subject)
    while True:
        while re.search(r"(\(fwd\)|[ \t])$", text, re.I):
            text = re.sub(r"(\(fwd\)|[ \t])$", "", text, flags=re.I)
        while True:
            before = text
            while (m := leader.match(text)) and m.end():
                text = text[m.end() :]
            b = re.match(blob, text)
            if b and text[b.end() :].strip():
                text = text[b.end() :]
            if text == before:
                break
        if text.lower().startswith("[fwd:") and text.endswith("]"):
            text = text[5:-1]
            continue
        return text


subject_pieces = st.sampled_from(
    ["Re:", "re", "RE :", "Fwd:", "fw:", "Re [x]:", "[a]", "[b c]", " ", "\t", "(fwd)", "(FWD)",
     "[fwd:", "]", "[", ":", "x", "foo"]
)  # fmt: skip


@given(st.lists(subject_pieces, max_size=12).map("".join))
def test_base_subject_equals_the_rfc_steps_taken_literally(subject: str) -> None:
    assert base_subject(subject) == rfc_5256_taken_literally(subject)


@pytest.mark.parametrize(
    "subject",
    [
        "Drucker kaputt",
        "AW: Drucker kaputt",
        "RE: AW: [HD-000123] Drucker  kaputt",
        "[support] Fwd: DRUCKER KAPUTT (fwd)",
        "ＤＲＵＣＫＥＲ　kaputt",  # full-width letters and space
        "回复：Drucker kaputt",
    ],
)
def test_subject_key_meets_across_client_mangling(subject: str) -> None:
    assert subject_key(subject) == "drucker kaputt"


def test_subject_key_keeps_different_topics_apart() -> None:
    assert subject_key("Re: Printer on fire") != subject_key("Re: Printer offline")


@given(st.text(max_size=600))
def test_subject_key_fits_the_column_and_is_stable(subject: str) -> None:
    key = subject_key(subject)
    assert len(key) <= SUBJECT_KEY_MAX
    assert key == key.strip()
    if len(key) < SUBJECT_KEY_MAX:
        assert subject_key(key) == key
