"""Reply stripping, one rule at a time.

Every body here is written for the test: the shapes are the ones mail
clients produce (Gmail, Outlook, Apple Mail, Thunderbird, mobile apps), the
names and addresses are made up. The corpus test measures the same code on
real replies.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.ingest.quotes import ReplyText, extract_new_text, split_reply

REPLY = "Thanks, the printer works again.\n\nBest,\nMaria"
REPLY_TEXT = "Thanks, the printer works again.\n\nBest,\nMaria"
HISTORY = "> Please restart the spooler and try again.\n>\n> Support team"


def top_posted(header: str) -> str:
    return f"{REPLY}\n\n{header}\n\n{HISTORY}\n"


# --- quote headers ------------------------------------------------------------------

QUOTE_HEADERS = {
    "english": "On Tue, 5 Mar 2024 at 10:12, Support <support@example.com> wrote:",
    "english, no address": "On Tuesday, March 5, 2024, Support Team wrote:",
    "english, 'at'": "At 3/5/2024 10:12 AM, you wrote:",
    "english, address first": "Support Team <support@example.com> wrote:",
    "french": "Le 5 mars 2024 à 10:12, Support <support@example.com> a écrit :",
    "french, no-break space": "Le mar. 5 mars 2024 à 10:12, Support a écrit\xa0:",
    "german": "Am 05.03.2024 um 10:12 schrieb Support <support@example.com>:",
    "german, gmail": "Support <support@example.com> schrieb am Di., 5. März 2024 um 10:12 Uhr:",
    "spanish": "El mar, 5 mar 2024 a las 10:12, Support (<support@example.com>) escribió:",
    "italian": "Il giorno mar 5 mar 2024 alle ore 10:12 Support <support@example.com> ha scritto:",
    "dutch": "Op di 5 mrt. 2024 om 10:12 schreef Support <support@example.com>:",
    "dutch, apple": (
        "Op 5 mrt. 2024 om 10:12 heeft Support <support@example.com> het volgende geschreven:"
    ),
    "portuguese": "Em ter., 5 de mar. de 2024 às 10:12, Support <support@example.com> escreveu:",
    "polish": "W dniu 5.03.2024 o 10:12, Support pisze:",
    "polish, napisał(a)": "Dnia 5 mar 2024 o godz. 10:12 Support <support@example.com> napisał(a):",
    "swedish": "Den 5 mars 2024 kl. 10:12 skrev Support <support@example.com>:",
    "norwegian": "tir. 5. mar. 2024 kl. 10:12 skrev Support <support@example.com>:",
    "russian": "вт, 5 мар. 2024 г. в 10:12, Support <support@example.com>:",
    "russian, verb": "5 марта 2024 г., в 10:12, пользователь Support написал:",
    "ukrainian": "вт, 5 бер. 2024 р. о 10:12 Support <support@example.com> пише:",
    "czech": "Dne 5. 3. 2024 10:12 Support <support@example.com> napsal(a):",
    "finnish": "ti 5. maalisk. 2024 klo 10.12 Support (support@example.com) kirjoitti:",
    "turkish": "5 Mar 2024 Sal, 10:12 tarihinde Support <support@example.com> şunu yazdı:",
    "chinese": "在 2024年3月5日 10:12，Support <support@example.com> 写道：",
    "japanese": "2024年3月5日(火) 10:12 Support <support@example.com>:",
    "japanese, verb": "2024/03/05 10:12、Support <support@example.com> さんは書きました:",
    "gmail iso date": "2024-03-05 10:12 GMT+01:00 Support <support@example.com>:",
    "gmail iso date, address lost": "2024-03-05 10:12 GMT+01:00 Support Team",
    "date then address": "2024/3/5 Support via Helpdesk <support@example.com>",
    "framed": "---- On Tue, 05 Mar 2024 10:12:00 +0100 Support <support@example.com> wrote ----",
    "bold": "**On Tue, 5 Mar 2024 at 10:12, Support <support@example.com> wrote:**",
}


@pytest.mark.parametrize("header", QUOTE_HEADERS.values(), ids=QUOTE_HEADERS.keys())
def test_cuts_at_a_quote_header(header: str) -> None:
    result = split_reply(top_posted(header))
    assert result.new_text == REPLY_TEXT
    assert result.quoted.startswith(header)
    assert "restart the spooler" in result.quoted


@pytest.mark.parametrize("header", QUOTE_HEADERS.values(), ids=QUOTE_HEADERS.keys())
def test_cuts_at_a_quote_header_followed_by_unquoted_history(header: str) -> None:
    # Outlook on phones and some webmails append the old message unquoted.
    body = f"{REPLY}\n\n{header}\n\nPlease restart the spooler.\n\nSupport team\n"
    assert extract_new_text(body) == REPLY_TEXT


WRAPPED_HEADERS = {
    "gmail, address on the next line": (
        "On Tue, Mar 5, 2024 at 10:12 AM, Support via Helpdesk <\nsupport@example.com> wrote:"
    ),
    "gmail, verb on the next line": (
        "On Tue, Mar 5, 2024 at 10:12 AM, Support <support@example.com>\nwrote:"
    ),
    "french, three lines": 'Le 5 mars 2024 10:12, "Support"\n<support@example.com>\na écrit :',
    "dutch, two lines": (
        'Op 5 mrt. 2024 10:12 schreef "Support" <support@example.com> het\nvolgende geschreven:'
    ),
    "german gmail, date wrapped": (
        "Support <support@example.com> schrieb am Di., 5.\nMärz 2024 um 10:12 Uhr:"
    ),
    "german, closing bracket wrapped": (
        'Am 05.03.2024 10:12 schrieb "Support" <support@example.com\n>:'
    ),
    "russian, address wrapped": (
        '5 мар. 2024 г. 10:12 пользователь "Support" <\nsupport@example.com> написал:'
    ),
    "html conversion, blank line inside": (
        "On Tue, 5 Mar 2024 at 10:12 Support\n\n<\nmailto:Support <support@example.com>\n> wrote:"
    ),
}


@pytest.mark.parametrize("header", WRAPPED_HEADERS.values(), ids=WRAPPED_HEADERS.keys())
def test_joins_a_quote_header_wrapped_over_several_lines(header: str) -> None:
    result = split_reply(top_posted(header))
    assert result.new_text == REPLY_TEXT
    assert result.quoted.startswith(header.splitlines()[0])


def test_wrapped_header_does_not_swallow_the_line_above() -> None:
    body = (
        "Le problème est revenu le 4 mars 2024.\n"
        "Support <support@example.com> a écrit :\n"
        "> Avez-vous redémarré ?\n"
    )
    assert extract_new_text(body) == "Le problème est revenu le 4 mars 2024."


NOT_HEADERS = {
    "no date nor address": "As Bob wrote:",
    "lead-in without date": "On Monday I wrote this:",
    "date but no verb": "On 5 March 2024 we migrated the server.",
    "verb inside the sentence": "In 2024 Bob wrote a script that still runs here.",
    "verb not at the end": "am 09.09.2017 um 21:42 sssssss",
    "address but no verb": "Please write to support@example.com about it:",
}


@pytest.mark.parametrize("line", NOT_HEADERS.values(), ids=NOT_HEADERS.keys())
def test_keeps_lines_that_only_look_like_quote_headers(line: str) -> None:
    body = f"Hello,\n\n{line}\nThe second line of my message.\n\nRegards"
    assert extract_new_text(body) == body


# --- quoting -----------------------------------------------------------------------


def test_top_posting_drops_the_quote_below() -> None:
    result = split_reply(f"{REPLY}\n\n{HISTORY}\n")
    assert result.new_text == REPLY_TEXT
    assert result.quoted == HISTORY


def test_bottom_posting_drops_the_header_and_the_quote_above() -> None:
    header = QUOTE_HEADERS["english"]
    result = split_reply(f"{header}\n{HISTORY}\n\n{REPLY}\n")
    assert result.new_text == REPLY_TEXT
    assert result.quoted == f"{header}\n{HISTORY}"


def test_bottom_posting_with_the_header_inside_the_quote() -> None:
    # Apple Mail and many webmails quote the header along with the message.
    body = f"> {QUOTE_HEADERS['english']}\n>\n{HISTORY}\n\n{REPLY}\n"
    assert extract_new_text(body) == REPLY_TEXT


def test_top_posting_with_the_header_inside_the_quote() -> None:
    body = f"{REPLY}\n\n> {QUOTE_HEADERS['dutch, apple']}\n>\n{HISTORY}\n"
    assert extract_new_text(body) == REPLY_TEXT


def test_keeps_a_quote_the_author_selected_to_answer() -> None:
    body = "> Which model is the printer?\n\nIt is the LaserJet 4000 on the second floor."
    assert extract_new_text(body) == body


def test_keeps_a_body_that_is_only_a_quote() -> None:
    body = "> Which model is the printer?"
    assert extract_new_text(body) == body


def test_a_quoted_header_and_nothing_else_is_all_history() -> None:
    body = f"> {QUOTE_HEADERS['english']}\n>\n>> {QUOTE_HEADERS['german']}\n>>\n>>> Hi\n"
    result = split_reply(body)
    assert result.new_text == ""
    assert result.quoted.startswith(f"> {QUOTE_HEADERS['english']}")


def test_inline_answers_keep_their_quotes_but_not_the_header() -> None:
    header = QUOTE_HEADERS["english"]
    answers = (
        "Hi,\n"
        f"{header}\n"
        "> Which model is the printer?\n"
        "\n"
        "A LaserJet 4000.\n"
        "It is on the second floor,\n"
        "next to the kitchen.\n"
        "\n"
        "> Did you restart it?\n"
        "\n"
        "Yes, twice.\n"
    )
    result = split_reply(answers)
    assert header not in result.new_text
    assert result.quoted == header
    assert result.new_text == answers.replace(f"{header}\n", "").rstrip()


def test_a_short_line_under_the_history_is_a_sign_off_not_an_answer() -> None:
    body = f"{REPLY}\n\n{QUOTE_HEADERS['english']}\n{HISTORY}\n\nSent by the helpdesk\n"
    assert extract_new_text(body) == REPLY_TEXT


def test_supercite_initials_are_quotes_but_shell_prompts_are_not() -> None:
    assert extract_new_text(f"{REPLY}\n\nSP> Please restart the spooler.\nSP>\n") == REPLY_TEXT
    session = f"{REPLY}\n\nmysql> SELECT count(*) FROM jobs;\nirb> Job.count"
    assert extract_new_text(session) == session


# --- embedded header blocks ------------------------------------------------------------

HEADER_BLOCKS = {
    "outlook": (
        "From: Support <support@example.com>\n"
        "Sent: Tuesday, March 5, 2024 10:12 AM\n"
        "To: Maria <maria@example.org>\n"
        "Subject: RE: Printer"
    ),
    "outlook, german": (
        "Von: Support <support@example.com>\n"
        "Gesendet: Dienstag, 5. März 2024 10:12\n"
        "An: Maria <maria@example.org>\n"
        "Betreff: AW: Drucker"
    ),
    "outlook, french": (
        "De : Support <support@example.com>\n"
        "Envoyé : mardi 5 mars 2024 10:12\n"
        "À : Maria <maria@example.org>\n"
        "Objet : RE: Imprimante"
    ),
    "outlook, spanish": (
        "De: Support <support@example.com>\n"
        "Enviado el: martes, 5 de marzo de 2024 10:12\n"
        "Para: Maria <maria@example.org>\n"
        "Asunto: RE: Impresora"
    ),
    "outlook, swedish": (
        "Från: Support [mailto:support@example.com]\n"
        "Skickat: den 5 mars 2024 10:12\n"
        "Till: maria@example.org\n"
        "Ämne: SV: Skrivare"
    ),
    "html converted, bold labels and blank lines": (
        "**From:** Support <support@example.com>\n\n"
        "**Sent:** Tuesday, March 5, 2024 10:12 AM\n\n"
        "**To:** Maria\n\n"
        "**Subject:** RE: Printer"
    ),
    "wrapped subject": (
        "From: Support <support@example.com>\n"
        "Date: Tue, Mar 5, 2024 at 10:12 AM\n"
        "Subject: A subject long enough that the client\n"
        "wrapped it\n"
        "To: maria@example.org"
    ),
}


@pytest.mark.parametrize("block", HEADER_BLOCKS.values(), ids=HEADER_BLOCKS.keys())
def test_cuts_at_an_embedded_header_block(block: str) -> None:
    body = f"{REPLY}\n\n{block}\n\nPlease restart the spooler.\n\nSupport team\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.quoted.startswith(block.splitlines()[0])
    assert result.quoted.endswith("Support team")


def test_cuts_at_the_rule_outlook_draws_above_its_header_block() -> None:
    body = f"{REPLY}\n________________________________\n{HEADER_BLOCKS['outlook']}\n\nOld text\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.signature == ""
    assert result.quoted.startswith("From: Support")


def test_two_header_fields_are_not_a_block() -> None:
    body = "Please change my details.\nFrom: Maria Lopez\nTo: Maria Lopez-Garcia\nThank you!"
    assert extract_new_text(body) == body


def test_question_and_answer_lines_are_not_header_fields() -> None:
    body = "Q: Does it print?\nA: No.\nQ: Is it on?\nA: Yes."
    assert extract_new_text(body) == body


# --- forwarded messages ------------------------------------------------------------------

BANNERS = (
    "-----Original Message-----",
    "-------- Original Message --------",
    "*-------- Original Message --------*",
    "---------- Forwarded message ---------",
    "-----Ursprüngliche Nachricht-----",
    "-----Mensaje original-----",
    "-------- Message d'origine --------",
    "-------- Weitergeleitete Nachricht --------",
    "------------------ 原始邮件 ------------------",
    "Begin forwarded message:",
    "Début du message réexpédié :",
)


@pytest.mark.parametrize("banner", BANNERS)
def test_cuts_at_a_forwarded_message_banner(banner: str) -> None:
    body = f"{REPLY}\n\n{banner}\nFrom: Support\nDate: today\n\nOld text\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.quoted.startswith(banner)


def test_a_framed_title_without_those_words_is_text() -> None:
    body = f"Status below.\n\n----- Update -----\n{REPLY}"
    assert extract_new_text(body) == body


def test_a_forward_without_comment_keeps_the_forwarded_body() -> None:
    body = (
        "---------- Forwarded message ---------\n"
        "From: Maria <maria@example.org>\n"
        "Date: Tue, Mar 5, 2024 at 10:12 AM\n"
        "Subject: Printer\n"
        "To: <it@example.com>\n"
        "\n"
        "The printer on the second floor is jammed.\n"
    )
    result = split_reply(body)
    assert result.new_text == "The printer on the second floor is jammed."
    assert result.quoted.startswith("---------- Forwarded message")


# --- signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", ["-- ", "--"])
def test_the_signature_delimiter_starts_the_signature(delimiter: str) -> None:
    # RFC 3676 §4.3 says "-- "; the trailing space is often lost on the way.
    body = f"{REPLY}\n{delimiter}\nMaria Lopez\nIT, second floor\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.signature == "Maria Lopez\nIT, second floor"
    assert result.quoted == ""


def test_signature_and_history_are_told_apart() -> None:
    body = f"{REPLY}\n-- \nMaria Lopez\n\n{QUOTE_HEADERS['english']}\n{HISTORY}\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.signature == "Maria Lopez"
    assert result.quoted.startswith(QUOTE_HEADERS["english"])


@pytest.mark.parametrize("rule", ["_______________", "---", "=====", "***", "—", "ᐧ"])
def test_a_rule_line_starts_the_signature(rule: str) -> None:
    result = split_reply(f"{REPLY}\n\n{rule}\nMaria Lopez, IT\n")
    assert result.new_text == REPLY_TEXT
    assert result.signature == "Maria Lopez, IT"


def test_a_delimiter_above_a_mobile_signature() -> None:
    result = split_reply(f"{REPLY}\n-- \nSent from my iPhone\n")
    assert result.new_text == REPLY_TEXT
    assert result.signature == "Sent from my iPhone"


def test_a_rule_above_the_history_with_nothing_before_it_is_not_a_signature() -> None:
    body = f"________________________________\n> {QUOTE_HEADERS['english']}\n{HISTORY}\n\n{REPLY}"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.signature == ""


def test_a_rule_above_more_than_a_signature_divides_the_text() -> None:
    # A web form's notification: the rule underlines a heading.
    fields = "\n".join(f"Field {n}: value {n}" for n in range(1, 9))
    body = f"New message:\n=============\n{fields}\n\nPlease call back."
    assert extract_new_text(body) == body


def test_a_rule_with_nothing_above_it_is_not_a_signature() -> None:
    body = "*************\nACME newsletter, spring issue\n\nOur new office opens in May."
    result = split_reply(body)
    assert result.new_text == body
    assert result.signature == ""


def test_two_rule_characters_are_not_a_rule() -> None:
    body = f"{REPLY}\n**\nP.S. the toner is low too."
    assert extract_new_text(body) == body


MOBILE_SIGNATURES = (
    "Sent from my iPhone",
    "Sent from my Galaxy S22, please excuse typos.",
    "Sent from Mail for Windows",
    "Sent from [Mail](https://go.microsoft.com/fwlink/?LinkId=1) for Windows",
    "Sent from Outlook Mobile<https://aka.ms/x>",
    "Sent with Airmail",
    "(Sent from mobile device)",
    "<<sent by galaxy>>",
    "Get Outlook for Android",
    "Get Outlook for iOShttps://aka.ms/x",
    "Get [Outlook for Android](https://aka.ms/x)",
    "Envoyé de mon iPhone",
    "Envoyé depuis mon iPad",
    "Von meinem iPhone gesendet",
    "Diese Nachricht wurde von meinem Android-Gerät mit GMX Mail gesendet.",
    "Enviado desde mi iPhone",
    "Enviado do meu iPhone",
    "Inviato da iPhone",
    "Verstuurd vanaf mijn iPhone",
    "Verzonden met BlackBerry Work",
    "Sendt fra min iPhone",
    "Skickat från min iPhone",
    "Wysłane z iPhone'a",
    "Отправлено с iPhone",
    "iPhoneから送信",
    "发自我的iPhone",
    "從我的 iPhone 傳送",
    "Maria from mobile",
    "From my iPhone 15",
)


@pytest.mark.parametrize("signature", MOBILE_SIGNATURES)
def test_trailing_mobile_signatures_are_signatures(signature: str) -> None:
    result = split_reply(f"{REPLY}\n\n{signature}\n")
    assert result.new_text == REPLY_TEXT
    assert result.signature == signature


def test_mobile_signature_above_the_history() -> None:
    body = f"{REPLY}\n\nSent from my iPhone\n\n{QUOTE_HEADERS['german']}\n\n{HISTORY}\n"
    result = split_reply(body)
    assert result.new_text == REPLY_TEXT
    assert result.signature == "Sent from my iPhone"


def test_a_mobile_signature_followed_by_text_is_text() -> None:
    body = "Sent from my phone on the train.\nThe printer still jams on page two."
    assert extract_new_text(body) == body


def test_a_last_line_starting_like_a_signature_is_text() -> None:
    body = f"{REPLY}\n\nFrom my point of view the ticket can be closed."
    assert extract_new_text(body) == body


# --- code blocks -------------------------------------------------------------------------


def test_rules_and_quotes_inside_a_code_fence_are_code() -> None:
    body = "The config is:\n\n```\n# comment\n----\n> not a quote\n####\n```\n\nDoes it look right?"
    assert extract_new_text(body) == body


def test_an_unclosed_fence_does_not_shield_the_history() -> None:
    body = f"Run ``` to start a block.\n\n{QUOTE_HEADERS['english']}\n{HISTORY}\n"
    assert extract_new_text(body) == "Run ``` to start a block."


# --- normalisation and robustness ---------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_other_line_endings(newline: str) -> None:
    body = top_posted(QUOTE_HEADERS["english"]).replace("\n", newline)
    assert extract_new_text(body) == REPLY_TEXT


def test_leading_and_trailing_blank_lines_go_indentation_stays() -> None:
    body = "\n \n\t\n    indented code\nplain\n\n \n"
    assert extract_new_text(body) == "    indented code\nplain"


@pytest.mark.parametrize("body", ["", " ", "\n\n\n", "\u200b\n\xa0"])
def test_empty_bodies(body: str) -> None:
    assert split_reply(body) == ReplyText(new_text="", quoted="", signature="")


def test_extract_new_text_is_the_new_text_of_split_reply() -> None:
    body = top_posted(QUOTE_HEADERS["french"])
    assert extract_new_text(body) == split_reply(body).new_text


def test_binary_looking_input() -> None:
    noise = bytes(range(256)).decode("latin-1") * 20
    result = split_reply(noise + "\n> quoted\n" + noise)
    assert "\n> quoted" in result.new_text  # quoted between text is kept as context


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab <>@:-_*\n\r\t>2019Onwrote:From:Sent:To:Subject")))
def test_never_raises_and_keeps_only_input_lines(text: str) -> None:
    result = split_reply(text)
    source_lines = set(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    for part in (result.new_text, result.quoted, result.signature):
        # Parts are stripped only at their ends, so inner lines are input lines.
        assert all(line in source_lines for line in part.split("\n")[1:-1])
        assert "\r" not in part


@pytest.mark.parametrize(
    "unit",
    [
        "On 5 Mar 2024 Support <\n",  # every line opens a wrapped header that never ends
        "> On 5 Mar 2024 Support wrote:\n",
        "From: a\nTo: b\n",
        "a" * 1000 + "@example.com wrote:\n",
        "```\n",
    ],
)
def test_large_adversarial_bodies_stay_fast(unit: str) -> None:
    body = unit * (200_000 // len(unit))
    started = time.perf_counter()
    split_reply(body)
    # Linear work on 200 KB takes milliseconds; a quadratic path would take minutes.
    assert time.perf_counter() - started < 5.0


def test_many_rules_above_a_long_text_stay_fast() -> None:
    body = "Hello\n" + "-----\n" * 100_000 + "More text\n" * 10
    started = time.perf_counter()
    assert extract_new_text(body) == body.rstrip()
    assert time.perf_counter() - started < 5.0


def test_a_huge_single_line() -> None:
    line = "On 5 Mar 2024 " + "x@y.z wrote: " * 100_000
    assert extract_new_text(line) == line.rstrip()
