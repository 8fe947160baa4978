"""Recognising automatic mail, and knowing when we must stay silent. Pure code.

Two questions with opposite costs of being wrong:

* :func:`is_auto_reply` - is this mail a machine's answer (out-of-office,
  vacation notice, responder)? A wrong "yes" takes a customer's message out of
  the normal flow, so only explicit markers and unmistakable subjects count.
* :func:`automatic_mail_reason` - must we NOT answer this mail automatically?
  A wrong "no" risks a mail loop or spamming a list, so every hint counts.

Neither function ever raises: they run on every inbound mail.
"""

from __future__ import annotations

import re

from helpdesk.ingest.inbound import InboundEmail

# Headers that responders put on their own answers (not standardised, but
# widely set by vacation programs, Exchange, Yahoo and webmail responders).
_RESPONDER_HEADERS = ("x-autoreply", "x-autorespond", "x-mail-autoreply")

# Subjects of out-of-office and other responders. They must start the subject
# (a person's "Re: Out of office?" does not) and be followed by what
# responders put next - a colon, a bracket, "AutoReply", "until" or nothing -
# so that "Auto reply settings are broken" stays a question for support. The
# languages follow the defaults of the big mail clients.
_AUTO_SUBJECT_START = re.compile(
    r"""^\s*(?:
        (?:
            out\s+of\s+(?:the\s+)?office | automatic\s+reply | auto[\s_-]?reply
          | auto[\s_-]?respon[sd]\w* | automatische\s+antwort | abwesenheitsnotiz
          | r[ée]ponse\s+automatique | respuesta\s+autom[áa]tica | risposta\s+automatica
          | resposta\s+autom[áa]tica | automatisch\s+antwoord | afwezigheidsbericht
          | automatiskt\s+svar | automatisk\s+svar | automaattinen\s+vastaus
          | автоответ | 自動応答 | 自动回复
        )
        \s*(?:[:：\]\[(\-–]|auto[\s_-]?reply|reply|until|$)
      | i\s+am\s+out\s+of\s+(?:the\s+)?office
      | \[\s*auto[\s_-]?generated\s*\]
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Lotus Notes writes "<Name> is out of the office." as the whole subject.
_AUTO_SUBJECT_ANYWHERE = re.compile(r"\bis\s+out\s+of\s+(?:the\s+)?office\b", re.IGNORECASE)

# Local parts of mailboxes that are never read by a person.
_ROBOT_LOCALS = frozenset({"mailerdaemon", "postmaster", "noreply", "donotreply"})
_ROBOT_PREFIXES = ("noreply", "donotreply", "mailerdaemon")

# MS-OXCMAIL 2.1.3.2.20: "All" suppresses everything, "AutoReply" suppresses
# replies other than out-of-office notices - which is what a ticket
# acknowledgement is. DR/NDR/RN/NRN/OOF ask for other things.
_SUPPRESS_TOKENS = frozenset({"all", "autoreply"})

_REPORT_TYPE_RE = re.compile(r"report-type\s*=\s*\"?([a-z0-9_.-]+)", re.IGNORECASE)

# RFC 2369 list fields other than List-Unsubscribe, and RFC 2919 List-Id.
_LIST_HEADERS = ("list-post", "list-help", "list-subscribe", "list-owner", "list-archive")


def is_auto_reply(mail: InboundEmail) -> bool:
    """True when ``mail`` says it is a machine's answer (RFC 3834) or looks
    exactly like one by its subject.

    ``X-Auto-Response-Suppress`` is deliberately ignored here: it is a
    request *not to be answered* that Outlook also puts on ordinary mail
    (MS-OXCMAIL 2.1.3.2.20), not a statement that the mail is automatic. It is
    honoured by :func:`automatic_mail_reason` instead.
    """
    try:
        return _auto_reply_marker(mail) is not None
    except Exception:  # a classifier must never stop the pipeline
        return False


def is_feedback_report(mail: InboundEmail) -> bool:
    """True for abuse complaints: RFC 5965 ``multipart/report;
    report-type=feedback-report`` and Hotmail's older JMRP format, which
    forwards the complained-about message with ``X-HmXmrOriginalRecipient``.
    """
    try:
        if _report_type(mail) == "feedback-report":
            return True
        for part in mail.parts:
            if part.content_type == "message/feedback-report":
                return True
            if part.content_type == "message/rfc822" and re.search(
                r"^x-hmxmroriginalrecipient:", part.text, re.IGNORECASE | re.MULTILINE
            ):
                return True
        return False
    except Exception:
        return False


def automatic_mail_reason(
    mail: InboundEmail,
    own_addresses: frozenset[str],
    own_domains: frozenset[str],
    loop_header: str,
    loop_value: str,
) -> str | None:
    """Why no automatic mail may be sent in answer to ``mail``, or None.

    The reason is a short machine token (``"own-loop"``, ``"auto-submitted"``,
    ``"precedence:bulk"``, ``"list-id"``, ``"null-return-path"``,
    ``"robot-sender"``...). Our own mail coming back is checked first, so that
    the shell can tell a loop from an ordinary automatic mail.
    """
    try:
        return _reason(mail, own_addresses, own_domains, loop_header, loop_value)
    except Exception:
        # When in doubt, stay silent: an unanswered mail is cheap, a loop is not.
        return "unreadable"


def own_mail_reason(
    mail: InboundEmail,
    own_addresses: frozenset[str],
    own_domains: frozenset[str],
    loop_header: str,
    loop_value: str,
) -> str | None:
    """``"own-loop"``, ``"own-address"`` or ``"own-message-id"`` when ``mail``
    is our own mail come back, else None."""
    try:
        return _own_reason(mail, own_addresses, own_domains, loop_header, loop_value)
    except Exception:
        return None


def _reason(
    mail: InboundEmail,
    own_addresses: frozenset[str],
    own_domains: frozenset[str],
    loop_header: str,
    loop_value: str,
) -> str | None:
    own = _own_reason(mail, own_addresses, own_domains, loop_header, loop_value)
    if own is not None:
        return own
    marker = _auto_reply_marker(mail)
    if marker is not None:
        return marker
    suppress = mail.header("x-auto-response-suppress")
    if suppress is not None:
        tokens = {t.strip().lower() for t in re.split(r"[,\s]+", suppress) if t.strip()}
        if tokens & _SUPPRESS_TOKENS:
            return "auto-response-suppress"
    precedence = _first_token(mail.header("precedence"))
    # RFC 3834 §2 names these values as reasons a responder may stay silent.
    if precedence in ("bulk", "junk", "list"):
        return f"precedence:{precedence}"
    if mail.header("list-id") is not None:
        return "list-id"
    if mail.header("list-unsubscribe") is not None:
        return "list-unsubscribe"
    if any(mail.header(name) is not None for name in _LIST_HEADERS):
        return "list-header"
    if is_feedback_report(mail):
        return "feedback-report"
    report_type = _report_type(mail)
    if report_type:
        # RFC 3464 DSNs, RFC 8098 read receipts and other RFC 6522 reports
        # are written by machines for machines.
        return f"report:{report_type}"
    if _has_null_return_path(mail):
        return "null-return-path"
    if _is_robot_sender(mail):
        return "robot-sender"
    return None


def _own_reason(
    mail: InboundEmail,
    own_addresses: frozenset[str],
    own_domains: frozenset[str],
    loop_header: str,
    loop_value: str,
) -> str | None:
    wanted = loop_value.strip().lower()
    if wanted and any(v.strip().lower() == wanted for v in mail.header_all(loop_header)):
        return "own-loop"
    own = {a.strip().lower() for a in own_addresses}
    senders = [mail.sender_addr, _bare_address(mail.header("sender"))]
    if any(s and s in own for s in senders):
        return "own-address"
    domains = {d.strip().lower().rstrip(".") for d in own_domains}
    msgid_domain = mail.message_id.rpartition("@")[2].lower().rstrip(".")
    # Exact domain only: our Message-IDs use our own domain, while a
    # colleague's mail server may well use a sub-domain of the company's.
    if "@" in mail.message_id and msgid_domain in domains:
        return "own-message-id"
    return None


def _auto_reply_marker(mail: InboundEmail) -> str | None:
    """The reason ``mail`` is known to be a machine's answer, or None."""
    # RFC 3834 §5: any Auto-Submitted keyword other than "no" marks mail that
    # a human did not write (auto-generated, auto-replied, auto-notified...).
    submitted = _first_token(mail.header("auto-submitted"))
    if submitted and submitted != "no":
        return "auto-submitted"
    for name in _RESPONDER_HEADERS:
        value = mail.header(name)
        if value is not None and _first_token(value) not in ("no", "false", "0"):
            return name
    if _first_token(mail.header("x-autogenerated")) == "reply":
        return "x-autogenerated"
    # Precedence is not standardised (RFC 2076 lists it as in use); some
    # vacation programs mark their answers with this value.
    if _first_token(mail.header("precedence")) == "auto_reply":
        return "precedence:auto_reply"
    subject = mail.subject
    if _AUTO_SUBJECT_START.search(subject) or _AUTO_SUBJECT_ANYWHERE.search(subject):
        return "auto-reply-subject"
    return None


def _first_token(value: str | None) -> str:
    if not value:
        return ""
    return value.split(";", 1)[0].strip().strip('"').lower()


def _report_type(mail: InboundEmail) -> str:
    if mail.content_type != "multipart/report":
        return ""
    match = _REPORT_TYPE_RE.search(mail.header("content-type") or "")
    return match.group(1).lower() if match else "unknown"


def _has_null_return_path(mail: InboundEmail) -> bool:
    """RFC 3834 §2 / RFC 5321 §4.5.5: a null reverse-path ("<>") means no
    automatic answer may be sent. Only a Return-Path header that is present and
    null counts: much ordinary client mail reaches us (pipes, IMAP copies)
    without any Return-Path header at all, and that says nothing about it.
    """
    value = mail.header("return-path")
    if value is None:
        return False
    return not value.strip().strip("<>").strip()


def _is_robot_sender(mail: InboundEmail) -> bool:
    # Judge the address an answer would go to: a web form sending from
    # noreply@ with the customer in Reply-To still deserves an answer.
    answer_to = mail.reply_to[0].addr if mail.reply_to else mail.sender_addr
    if answer_to and is_robot_address(answer_to):
        return True
    if not mail.sender_addr and re.search(
        r"mailer-daemon|postmaster", mail.header("from") or "", re.IGNORECASE
    ):
        return True  # "MAILER-DAEMON <>" has no address part at all
    # A daemon envelope sender marks a bounce even when the From looks human.
    return_path = mail.return_path or ""
    return _normalised_local(return_path) in ("mailerdaemon", "doublebounce")


def is_robot_address(addr: str) -> bool:
    """noreply@, mailer-daemon@ and their like: nobody reads what is sent there."""
    local = _normalised_local(addr)
    return local in _ROBOT_LOCALS or local.startswith(_ROBOT_PREFIXES)


def _normalised_local(addr: str) -> str:
    local = addr.rpartition("@")[0] if "@" in addr else addr
    local = local.split("+", 1)[0].lower()
    return re.sub(r"[-_.]", "", local)


def _bare_address(value: str | None) -> str:
    if not value:
        return ""
    match = re.search(r"<([^<>\s]+@[^<>\s]+)>", value) or re.search(r"(\S+@\S+)", value)
    return match.group(1).strip("<>\"'").lower() if match else ""
