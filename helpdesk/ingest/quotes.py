"""Reply stripping: what the author of a reply wrote, apart from history and signature.

Mail clients append the message being answered to a reply, in one of a few
shapes: a quote header ("On … wrote:", in the client's language) followed by
``>``-quoted lines (RFC 3676 §4.5), an Outlook-style block of header fields
("From: … Sent: … To: … Subject:") followed by the old body unquoted, or a
banner such as "-----Original Message-----". Below the new text there may be a
signature, introduced by the RFC 3676 §4.3 delimiter "-- " or written by a
mobile client ("Sent from my iPhone").

The approach follows the discourse ``email_reply_trimmer`` gem: each line is
classified on its own (empty, quote, quote header, forward banner, header
field, rule line, signature delimiter, mobile signature, text), a few context
passes repair what a single line cannot show (quote headers wrapped over
several lines, header fields only counting in a block, code fences), and one
walk over the classified lines decides where the history starts.

Everything is linear in the size of the body: a regex only ever sees a
bounded piece of text (a line of limited length, a few wrapped lines joined,
or the first characters of a line), and the walk looks at each line a bounded
number of times.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ReplyText:
    """A reply body cut in three: what the author wrote, the history, the signature.

    The parts are not a partition of the body: rule lines and signature
    delimiters belong to none of them, and the quote header that introduces an
    inline quote goes to ``quoted`` while the quote itself stays in
    ``new_text`` as context for the answers around it.
    """

    new_text: str
    quoted: str
    signature: str


def extract_new_text(text: str) -> str:
    """Just what the author of the reply wrote; see :func:`split_reply`."""
    return split_reply(text).new_text


def split_reply(text: str) -> ReplyText:
    """Separate the new text of a decoded plain-text reply from its history and signature."""
    lines = _split_lines(text)
    kinds = _classify(lines)
    parts = _assign_parts(lines, kinds)
    return ReplyText(
        new_text=_join(lines, parts, "new"),
        quoted=_join(lines, parts, "quoted"),
        signature=_join(lines, parts, "signature"),
    )


# What a line is. Plain strings rather than an Enum: the kinds are compared
# for every line, and mypy's strict equality still rejects a misspelt one.
_Kind = Literal[
    "empty",
    "text",
    "quote",  # "> …", and Supercite's "JD> …"
    "attribution",  # "On … wrote:" and its translations, maybe wrapped
    "forward",  # "-----Original Message-----", "Begin forwarded message:"
    "header",  # a line of an embedded "From:/Sent:/To:/Subject:" block
    "rule",  # a line of rule characters only: "_____", "-----", "***"
    "sig-delimiter",  # "-- ", RFC 3676 §4.3
    "mobile-signature",  # "Sent from my iPhone" and friends
]
# Where a line ends up; "dropped" is for rules and delimiters.
_Part = Literal["new", "quoted", "signature", "dropped"]

# Lines that start an embedded earlier message.
_MARKERS: tuple[_Kind, ...] = ("attribution", "forward", "header")
# Lines after which nothing more is the author's new text.
_ENDS: tuple[_Kind, ...] = (*_MARKERS, "rule", "sig-delimiter")

# Longer lines are never quote headers, banners, header fields or mobile
# signatures; capping what reaches the regexes keeps every match cheap.
_MAX_ATTRIBUTION = 400
_MAX_SHORT_LINE = 200
_FIELD_PREFIX = 60
# A quote header wrapped by the client spans at most this many lines: Gmail
# breaks "On <date>, <name> <\n<address>> wrote:" in two, HTML conversion can
# add an empty line and split the address out (five lines in the worst case).
_MAX_WRAPPED_LINES = 5
# Fewer lines of text than this below a quote read as a sign-off or a footer
# added under the history, not as an inline answer to the quote.
_MIN_INLINE_ANSWER = 3
# Below a rule other than the RFC 3676 "-- ", at most this many lines are a
# signature; more are the author's text. Netiquette (RFC 1855 §2.1.1) asks for
# four; name, role, company, address and phone often take a few more.
_MAX_SIGNATURE_LINES = 6

# Characters HTML conversion leaves in otherwise empty lines.
_INVISIBLE = " \t\f\v\xa0\u200b\u200c\u200d\u2060\ufeff"


def _split_lines(text: str) -> list[str]:
    # RFC 5322 §2.3 says CRLF; bare CR comes from old Mac clients.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_blank(line: str) -> bool:
    return not line.strip(_INVISIBLE)


# --- quoting -----------------------------------------------------------------

# RFC 3676 §4.5 quoting is a leading ">"; Supercite (Emacs) cites with the
# author's initials instead ("JD> …"). Only upper-case initials count, so
# shell prompts pasted into a reply ("mysql> …", "irb> …") stay text.
_QUOTE_RE = re.compile(r"[ \t]*(?:[A-Z]{1,3})?>")
_QUOTE_PREFIX_RE = re.compile(r"(?:[ \t]*(?:[A-Z]{1,3})?>)+[ \t]?")


def _unquote(line: str) -> str:
    return _QUOTE_PREFIX_RE.sub("", line, count=1)


# --- quote headers -------------------------------------------------------------

# The verb that ends a quote header, per language.
_WORD_VERBS = (
    "wrote", "writes",  # English
    "a écrit", "a ecrit", "écrit",  # French
    "schrieb", "geschrieben",  # German
    "escribió", "escribio",  # Spanish
    "escreveu",  # Portuguese
    "ha scritto", "scrisse",  # Italian
    "schreef", "geschreven",  # Dutch
    "skrev",  # Danish, Norwegian, Swedish
    "kirjoitti",  # Finnish
    "napisał(a)", "napisała", "napisał", "pisze",  # Polish
    "napsal(a)", "napsala", "napsal",  # Czech, Slovak
    "написал(а)", "написала", "написал", "пишет",  # Russian
    "написав", "пише",  # Ukrainian
    "yazdı",  # Turkish
    "írta",  # Hungarian
    "έγραψε",  # Greek
)  # fmt: skip
# Scripts without spaces glue the verb to the name, so no word boundary.
_CJK_VERBS = ("写道", "寫道", "書きました", "작성")


def _alternation(words: Sequence[str]) -> str:
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


_VERB = rf"(?:(?<!\w)(?:{_alternation(_WORD_VERBS)})|(?:{_alternation(_CJK_VERBS)}))"
_VERB_RE = re.compile(rf"{_VERB}(?!\w)", re.IGNORECASE)
_VERB_AT_END_RE = re.compile(rf"{_VERB}\s*[:：]$", re.IGNORECASE)
_VERB_AT_END_BARE_RE = re.compile(rf"{_VERB}$", re.IGNORECASE)
# The verb ends the header, so only the last characters need searching.
_VERB_TAIL = 40

_ADDRESS_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ADDRESS_AT_END_RE = re.compile(r"<\s*(?:mailto:)?[^<>\s]+@[^<>\s]+\s*>+\s*[:：]?$")
_YEAR_RE = re.compile(r"(?<!\d)(?:19|20)\d\d(?!\d)")
_TIME_RE = re.compile(r"(?<!\d)\d{1,2}:\d\d(?!\d)")
# "2013/7/20 …", "20 окт. 2016 г. …", "вт, 5 янв. …", "søn. 30. apr. …".
_DATE_LED_RE = re.compile(r"(?:[^\W\d]{1,15}\.?,?\s+){0,2}\d{1,4}[\s./年-]")
# Gmail in several locales: "2016-03-03 17:21 GMT+01:00 Some One"; converting
# HTML to text can drop the "<address>:" that normally follows the name.
_GMAIL_ISO_RE = re.compile(r"\d{4}-\d\d-\d\d \d{1,2}:\d\d GMT[+-]\d{1,2}:?\d\d [^<>@:]{1,80}")
_DIGIT_RE = re.compile(r"\d")
# Words that open a quote header ("On <date>, …", "Le <date>, …", "W dniu …").
_LEAD_IN_WORDS = frozenset(
    {"on", "at", "in", "le", "am", "el", "il", "op", "em", "den", "dne", "dnia", "w", "dňa"}
    | {"på", "vào", "在"}
)


def _attribution_text(line: str) -> str:
    # Some clients frame the header ("---- On … wrote ----") or bold it
    # ("**On … wrote:**" once HTML is converted to Markdown).
    return line.strip(_INVISIBLE).strip("-*_ \t")


def _is_attribution(text: str, framed: bool = False) -> bool:
    """Whether ``text`` (one line, or wrapped lines joined) is a quote header.

    A header names the earlier message by its date or its author's address,
    so a line like "As Bob wrote:" in a reply is not taken for one.
    """
    if not text or len(text) > _MAX_ATTRIBUTION:
        return False
    # Every shape below ends in a colon, an address or a framed verb, or opens
    # with a date: most lines are turned away before any regex runs.
    if not (text[-1] in ":：>" or framed or text[0].isdigit()):
        return False
    # An address closed but not opened on this line is the tail of a header
    # wrapped by the client; it belongs to the line above.
    if text.count(">") > text.count("<"):
        return False
    has_address = "@" in text and _ADDRESS_RE.search(text) is not None
    tail = max(0, len(text) - _VERB_TAIL)
    if _VERB_AT_END_RE.search(text, tail) or (framed and _VERB_AT_END_BARE_RE.search(text, tail)):
        return has_address or _YEAR_RE.search(text) is not None or bool(_TIME_RE.search(text))
    # "Am <date> schrieb <name> <address>:", "<name> <address> schrieb am <date>:".
    if text.endswith((":", "：")) and has_address and _VERB_RE.search(text):
        return True
    # "2013/7/20 <name> <address>", "2015-10-18 0:17 GMT+03:00 <name> <address>:".
    if _DATE_LED_RE.match(text) and _YEAR_RE.search(text) and _ADDRESS_AT_END_RE.search(text):
        return True
    return _GMAIL_ISO_RE.fullmatch(text) is not None


def _could_open_attribution(text: str) -> bool:
    """Whether a quote header wrapped over several lines may start with ``text``."""
    if len(text) > _MAX_ATTRIBUTION:
        return False
    # "<name> <address> schrieb am <date, wrapped>".
    if "@" in text and _VERB_RE.search(text):
        return True
    # Otherwise a date comes early: "On <date>, …", "Le <date>, …", "<date> <name> <".
    if _DIGIT_RE.search(text, 0, 60) is None:
        return False
    return text.split(None, 1)[0].casefold() in _LEAD_IN_WORDS or bool(_DATE_LED_RE.match(text))


def _header_piece(line: str, quoted: bool) -> str:
    return _attribution_text(_unquote(line) if quoted else line)


def _is_framed(line: str) -> bool:
    return line.rstrip(_INVISIBLE).endswith("-")


def _attribution_end(lines: Sequence[str], first: int, quoted: bool) -> int | None:
    """The index after a quote header starting at ``first``, if one does.

    A header the client wrapped is joined back line by line, up to
    ``_MAX_WRAPPED_LINES``, and the shortest join that reads as a header wins,
    so text above a header is never swallowed into it.
    """
    head = _header_piece(lines[first], quoted)
    if _is_attribution(head, _is_framed(lines[first])):
        return first + 1
    if not head or not _could_open_attribution(head):
        return None
    joined = head
    previous_blank = False
    for i in range(first + 1, min(first + _MAX_WRAPPED_LINES, len(lines))):
        line = lines[i]
        if quoted and not _QUOTE_RE.match(line):
            return None
        piece = _header_piece(line, quoted)
        if not piece:
            if previous_blank:
                return None
            previous_blank = True
            continue
        previous_blank = False
        if _is_attribution(piece, _is_framed(line)):
            return None  # a header of its own, not the end of this one
        # A wrapped address keeps its ">" at the start of the next line.
        joined = f"{joined} {piece.lstrip('> ')}"
        if _is_attribution(joined):
            return i + 1
    return None


# --- forwarded-message banners -------------------------------------------------

# "-----Original Message-----", "---------- Forwarded message ---------",
# "-----Ursprüngliche Nachricht-----", "------------------ 原始邮件 ------------------".
_BANNER_RE = re.compile(r"[\s*]*-{2,}\s*([^-\s][^-]{0,60}?)\s*-{2,}[\s*]*")
_BANNER_WORDS_RE = re.compile(
    r"original|forward|message|nachricht|weitergeleitet|mensaje|mensagem|messaggio|bericht"
    r"|meddelande|melding|viesti|zpráva|wiadomość|сообщение|邮件|郵件|メッセージ",
    re.IGNORECASE,
)
# Apple Mail and its translations.
_FORWARD_LINE_RE = re.compile(
    r"[\s*]*(?:begin forwarded message|début du message réexpédié"
    r"|anfang der weitergeleiteten nachricht|inizio messaggio inoltrato"
    r"|comienzo del mensaje reenviado|início da mensagem reencaminhada"
    r"|begin doorgestuurd bericht|vidarebefordrat meddelande)\s*[:：][\s*]*",
    re.IGNORECASE,
)


def _is_forward_banner(line: str) -> bool:
    if len(line) > _MAX_SHORT_LINE:
        return False
    if line.rstrip(" \t*")[-1:] in (":", "：") and _FORWARD_LINE_RE.fullmatch(line):
        return True
    banner = _BANNER_RE.fullmatch(line) if "--" in line else None
    return banner is not None and _BANNER_WORDS_RE.search(banner.group(1)) is not None


# --- embedded header blocks ------------------------------------------------------

# Field names as Outlook, Gmail, Apple Mail and Thunderbird print them above a
# quoted or forwarded message, in the languages they ship in.
_FIELD_NAMES = (
    "from", "sent", "date", "to", "cc", "bcc", "subject", "reply-to",  # English
    "von", "gesendet", "datum", "an", "kopie", "betreff", "antwort an",  # German
    "de", "envoyé", "à", "a", "objet", "expéditeur", "destinataire", "répondre à",  # French
    "enviado", "enviado el", "enviado em", "enviada em", "fecha", "para",  # Spanish, Portuguese
    "asunto", "assunto", "data", "responder a",
    "da", "inviato", "oggetto", "risposta", "rispondi a",  # Italian
    "van", "verzonden", "aan", "onderwerp",  # Dutch
    "från", "skickat", "till", "ämne", "kopia",  # Swedish
    "fra", "sendt", "dato", "til", "emne", "kopi",  # Danish, Norwegian
    "od", "wysłano", "do", "temat", "dw", "odesláno", "komu", "předmět",  # Polish, Czech
    "от", "отправлено", "дата", "кому", "тема", "копия", "від", "надіслано",  # Russian, Ukrainian
    "lähettäjä", "lähetetty", "vastaanottaja", "aihe",  # Finnish
    "kimden", "gönderildi", "kime", "konu", "tarih",  # Turkish
    "发件人", "发送时间", "收件人", "抄送", "主题",  # Chinese (simplified)
    "寄件者", "傳送時間", "收件者", "副本", "主旨",  # Chinese (traditional)
    "差出人", "送信日時", "宛先", "件名",  # Japanese
)  # fmt: skip
_FIELD_NAME_SET = frozenset(_FIELD_NAMES)
_FIELD_COLON_RE = re.compile("[:：]")
# A block needs this many different fields: two could be a "Q:/A:" exchange or
# a "To:/From:" note in the text, three are a copied message header.
_MIN_FIELDS = 3
# Lines allowed between two fields: a wrapped long subject, or the empty line
# HTML conversion puts between paragraphs.
_MAX_FIELD_GAP = 2


def _field_name(line: str) -> str | None:
    """The header field a line starts with ("From: …" gives "from"), if any."""
    colon = _FIELD_COLON_RE.search(line, 0, _FIELD_PREFIX)
    if colon is None:
        return None
    # "*From:*" and "**From:**" are what HTML-to-text conversion makes of bold labels.
    name = " ".join(line[: colon.start()].strip(" \t*").split()).casefold()
    return name if name in _FIELD_NAME_SET else None


# --- rules and signatures ---------------------------------------------------------

_RULE_CHARS = frozenset("-_=+~#*—–")
# Two characters are more often an emptied "**bold**" or "__underline__" left
# by HTML conversion than a rule someone drew.
_MIN_RULE = 3
# A lone em dash opens GitHub's notification footer; a lone U+1427 is where
# Gmail add-ons (Streak) put their tracking image, at the end of the new text.
_LONE_RULES = frozenset({"—", "ᐧ"})

_MARKDOWN_LINK_RE = re.compile(r"\[([^\[\]\n]{0,200})\]\([^()\s]{0,500}\)")
_URL_RE = re.compile(r"<?https?://[^\s>]*>?")
_MOBILE_RE = re.compile(
    r"""
    (?:sent|envoyé|enviado|inviato|verzonden|verstuurd|gesendet|sendt|skickat|wysłane
       |odesláno|отправлено|надіслано|lähetetty)
      \s+(?:from|with|via|by|using|on|depuis|de|desde|do|dal|da|met|vanaf|von|mit|fra
           |från|med|z|ze|с|з)\s.{1,80}
    | (?:get|download)\s+outlook\s+for\s+\S.{0,30}
    | (?:von|vom)\s+mein\w*\s+\S.{0,40}\s+gesendet\.?
    | diese\s+nachricht\s+wurde\s+(?:von|mit)\s.{1,80}\s+gesendet\.?
    | \w+\s+from\s+(?:my\s+)?mobile(?:\s+device)?
    | from\s+my\s+(?:iphone|ipad|ipod|android|mobile|phone|cell|samsung|galaxy|blackberry
                   |tablet|smartphone)\b.{0,30}
    | 從我的\s*\S.{0,20}傳送 | 发自我的\s*\S.{0,20} | 来自我的\s*\S.{0,20} | \S.{0,20}から送信
    """,
    re.IGNORECASE | re.VERBOSE,
)


# The words the signatures above open with; checking the first word turns
# ordinary lines away before the link clean-up and the regex.
_MOBILE_FIRST_WORDS = frozenset(
    {"sent", "envoyé", "enviado", "inviato", "verzonden", "verstuurd", "gesendet", "sendt"}
    | {"skickat", "wysłane", "odesláno", "отправлено", "надіслано", "lähetetty"}
    | {"get", "download", "von", "vom", "diese", "from"}
)


def _could_be_mobile_signature(line: str) -> bool:
    words = line.lstrip(" \t([<*").split(None, 2)
    if not words:
        return False
    if words[0].casefold() in _MOBILE_FIRST_WORDS:
        return True
    if len(words) > 1 and words[1].casefold() == "from":  # "<name> from mobile"
        return True
    return "我的" in line or "から送信" in line


def _is_mobile_signature(line: str) -> bool:
    if len(line) > _MAX_SHORT_LINE or not _could_be_mobile_signature(line):
        return False
    plain = _URL_RE.sub("", _MARKDOWN_LINK_RE.sub(r"\1", line))
    # "<<sent by galaxy>>", "(Sent from mobile device)".
    plain = " ".join(plain.split()).strip("()<>*_[] ")
    return _MOBILE_RE.fullmatch(plain) is not None


# --- classification ------------------------------------------------------------------


def _classify_line(line: str) -> _Kind:
    """What one line is, judged on its own."""
    stripped = line.strip(_INVISIBLE)
    if not stripped:
        return "empty"
    if ">" in stripped[:4] and _QUOTE_RE.match(line):
        return "quote"
    # RFC 3676 §4.3 says "-- "; many clients and editors drop the space.
    if stripped == "--":
        return "sig-delimiter"
    if stripped in _LONE_RULES or (
        len(stripped) >= _MIN_RULE and stripped[0] in _RULE_CHARS and set(stripped) <= _RULE_CHARS
    ):
        return "rule"
    if _is_forward_banner(line):
        return "forward"
    if _is_mobile_signature(line):
        return "mobile-signature"
    return "text"


def _classify(lines: Sequence[str]) -> list[_Kind]:
    kinds = [_classify_line(line) for line in lines]
    _unmark_code_blocks(lines, kinds)
    _mark_attributions(lines, kinds)
    _mark_header_blocks(lines, kinds)
    return kinds


def _unmark_code_blocks(lines: Sequence[str], kinds: list[_Kind]) -> None:
    # Inside a fenced code block "#" and "----" are code, not rules. Only a
    # fence that is closed counts: a stray ``` must not shield the history.
    fences = [
        i for i, line in enumerate(lines) if "```" in line and line.lstrip().startswith("```")
    ]
    for opening, closing in zip(fences[::2], fences[1::2], strict=False):
        for i in range(opening, closing + 1):
            if kinds[i] != "empty":
                kinds[i] = "text"


def _mark_attributions(lines: Sequence[str], kinds: list[_Kind]) -> None:
    """Mark unquoted quote headers, all the lines of a wrapped one included."""
    i = 0
    while i < len(lines):
        line = lines[i]
        # Every quote header names a date or an address, and so does the first
        # line of a wrapped one: lines with neither are not looked at further.
        if (
            kinds[i] == "text"
            and len(line) <= _MAX_ATTRIBUTION
            and ("@" in line or _DIGIT_RE.search(line))
        ):
            end = _attribution_end(lines, i, quoted=False)
            if end is not None:
                for j in range(i, end):
                    kinds[j] = "attribution"
                i = end
                continue
        i += 1


def _mark_header_blocks(lines: Sequence[str], kinds: list[_Kind]) -> None:
    """Mark runs of header fields that name at least ``_MIN_FIELDS`` different fields."""
    fields = [
        _field_name(line) if kind == "text" else None
        for line, kind in zip(lines, kinds, strict=True)
    ]
    i = 0
    while i < len(lines):
        if fields[i] is None:
            i += 1
            continue
        names = {fields[i]}
        last = i
        j = i + 1
        while j < len(lines) and j - last <= _MAX_FIELD_GAP + 1:
            if fields[j] is not None:
                names.add(fields[j])
                last = j
            elif kinds[j] not in ("text", "empty"):
                break
            j += 1
        if len(names) >= _MIN_FIELDS:
            for k in range(i, last + 1):
                kinds[k] = "header"
        i = last + 1


# --- deciding where the history starts ---------------------------------------------


def _skip(kinds: Sequence[_Kind], start: int, skipped: tuple[_Kind, ...]) -> int:
    i = start
    while i < len(kinds) and kinds[i] in skipped:
        i += 1
    return i


_EMPTY_ONLY: tuple[_Kind, ...] = ("empty",)
_QUOTE_BLOCK: tuple[_Kind, ...] = ("quote", "empty")


def _quote_block_end(kinds: Sequence[_Kind], start: int) -> int | None:
    """The end of the quote block after ``start`` (empty lines skipped), if one follows."""
    i = _skip(kinds, start, _EMPTY_ONLY)
    if i >= len(kinds) or kinds[i] != "quote":
        return None
    return _skip(kinds, i, _QUOTE_BLOCK)


def _is_inline_answer(kinds: Sequence[_Kind], after_quote: int) -> bool:
    """Whether the author goes on writing below a quote, rather than signing off."""
    count = 0
    i = after_quote
    while i < len(kinds) and kinds[i] not in _ENDS:
        if kinds[i] == "text":
            count += 1
            if count >= _MIN_INLINE_ANSWER:
                return True
        i += 1
    return False


def _quoted_attribution_end(lines: Sequence[str], kinds: Sequence[_Kind], i: int) -> int | None:
    """The end of a quote header inside the quote block starting at ``i``, if any.

    Apple Mail and many webmails put "On … wrote:" inside the quote itself.
    """
    if i > 0 and kinds[i - 1] == "quote":
        return None
    first = i
    while first < len(lines) and kinds[first] == "quote" and _is_blank(_unquote(lines[first])):
        first += 1
    if first >= len(lines) or kinds[first] != "quote":
        return None
    return _attribution_end(lines, first, quoted=True)


def _assign_parts(lines: Sequence[str], kinds: Sequence[_Kind]) -> list[_Part]:
    parts: list[_Part] = ["new"] * len(lines)

    def assign(start: int, end: int, part: _Part) -> None:
        for k in range(start, end):
            parts[k] = part

    has_text = False
    i = 0
    while i < len(lines):
        kind = kinds[i]
        if kind in _MARKERS:
            end = _skip(kinds, i, (kind,))
            if not has_text:
                # Nothing new above: a bottom-posted reply or a forward without
                # comment. The header goes, and so does the quote below it; an
                # unquoted body below it is all the text there is.
                assign(i, end, "quoted")
                quote_end = _quote_block_end(kinds, end)
                if quote_end is not None:
                    assign(end, quote_end, "quoted")
                    end = quote_end
                i = end
                continue
            quote_end = _quote_block_end(kinds, end)
            if (
                kind == "attribution"
                and quote_end is not None
                and _is_inline_answer(kinds, quote_end)
            ):
                # Text above and below the quote: an inline answer. The quote
                # stays as the context of the answers; its header does not.
                assign(i, end, "quoted")
                i = end
                continue
            assign(i, len(lines), "quoted")
            break
        if kind == "quote":
            header_end = _quoted_attribution_end(lines, kinds, i)
            if header_end is not None:
                quote_end = _skip(kinds, i, _QUOTE_BLOCK)
                if not has_text:
                    assign(i, quote_end, "quoted")
                    i = quote_end
                    continue
                if _is_inline_answer(kinds, quote_end):
                    assign(i, header_end, "quoted")
                    i = header_end
                    continue
                assign(i, len(lines), "quoted")
                break
        if kind in ("rule", "sig-delimiter"):
            following = _skip(kinds, i + 1, _EMPTY_ONLY)
            above_history = following < len(lines) and kinds[following] in (*_MARKERS, "quote")
            if not has_text and above_history:
                # A rule above the history with nothing new before it, like the
                # one Outlook draws above its header block, signs nothing.
                parts[i] = "dropped"
                i += 1
                continue
            if kind == "sig-delimiter" or (has_text and _is_short_tail(kinds, i + 1)):
                _assign_tail(kinds, i, parts)
                break
            # A rule with nothing above it, or with more below it than a
            # signature holds, divides the text: a heading's underline, the
            # sections of a web form. The rules and empty lines that follow
            # would get the same answer, so they are passed over together.
            i = _skip(kinds, i, ("rule", "empty"))
            continue
        if kind == "text":
            has_text = True
        i += 1

    _trim_trailing(kinds, parts)
    return parts


def _is_short_tail(kinds: Sequence[_Kind], start: int) -> bool:
    """Whether what follows a rule, up to the history, is short enough to be a signature."""
    count = 0
    i = start
    while i < len(kinds) and kinds[i] not in (*_MARKERS, "quote"):
        if kinds[i] not in ("empty", "rule"):
            count += 1
            if count > _MAX_SIGNATURE_LINES:
                return False
        i += 1
    return True


def _assign_tail(kinds: Sequence[_Kind], start: int, parts: list[_Part]) -> None:
    """Everything from a rule or signature delimiter on: signature, then history."""
    history = start + 1
    while history < len(kinds) and kinds[history] not in (*_MARKERS, "quote"):
        history += 1
    # A rule right above the history (Outlook draws one) signs nothing.
    signed = any(
        kinds[k] not in ("empty", "rule", "sig-delimiter") for k in range(start + 1, history)
    )
    for k in range(start, len(kinds)):
        if kinds[k] in ("rule", "sig-delimiter") and k < history:
            parts[k] = "dropped"
        elif k < history and signed:
            parts[k] = "signature"
        else:
            parts[k] = "quoted"


def _trim_trailing(kinds: Sequence[_Kind], parts: list[_Part]) -> None:
    """Move mobile signatures and a quote ending the new text out of it.

    A quote is only history when the author wrote something else: a reply
    that is nothing but a quote is kept as it is.
    """
    kept = [k for k, part in enumerate(parts) if part == "new"]
    has_text = any(kinds[k] == "text" for k in kept)
    while kept:
        last = kept[-1]
        kind = kinds[last]
        if kind == "empty":
            kept.pop()
        elif kind == "mobile-signature":
            parts[last] = "signature"
            kept.pop()
        elif kind == "quote" and has_text:
            parts[last] = "quoted"
            kept.pop()
        else:
            break


def _join(lines: Sequence[str], parts: Sequence[_Part], part: _Part) -> str:
    selected = [line for line, p in zip(lines, parts, strict=True) if p is part]
    start = 0
    while start < len(selected) and _is_blank(selected[start]):
        start += 1
    # Leading empty lines go, the indentation of the first line stays: it
    # can be the start of a code block.
    return "\n".join(selected[start:]).rstrip()
