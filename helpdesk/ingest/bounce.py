"""Recognising bounces: non-delivery and delay notices. Pure code.

Three layers, most reliable first:

1. RFC 3464 delivery status notifications: the per-recipient fields of a
   ``message/delivery-status`` part, or the same fields quoted in the text.
2. Well-known non-standard notices: Amazon SES JSON notifications, Exim's
   and Gmail's ``X-Failed-Recipients`` header, and the prose of qmail,
   Postfix, Exim, Sendmail, Exchange, Notes, Gmail, Yahoo and friends, read
   by the phrases that introduce the failed addresses; then flufl.bounce as
   a second opinion when the raw bytes are at hand.
3. Heuristics, only for mail that already looks like a notice (a mailer
   daemon or null return path, and a bounce-like subject or text): an
   address in the text that is neither the sender's nor the notice's own,
   else the single recipient of the returned message.

Permanent means RFC 3463 class 5. Delays (RFC 3464 ``Action: delayed``) and
failures with a transient cause (class 4, "expired", "timed out") are
bounces with ``permanent=False``: they say nothing bad about the address.

:func:`detect_bounce` never raises: it runs on every inbound mail, and a
notice it cannot read is better treated as ordinary mail than as a crash.
"""

from __future__ import annotations

import email
import email.policy
import html
import logging
import re
from dataclasses import dataclass
from email.message import Message

from helpdesk.ingest.autoreply import is_feedback_report
from helpdesk.ingest.inbound import InboundEmail

log = logging.getLogger(__name__)
# flufl.bounce logs a traceback at ERROR for every detector that trips over a
# malformed notice; we catch those exceptions ourselves, so that is noise.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

MAX_NOTICE = 40_000
MAX_REASON = 200
MAX_RECIPIENTS = 50


@dataclass(frozen=True)
class Bounce:
    """A delivery failure (``permanent``) or delay (not ``permanent``) notice."""

    recipients: tuple[str, ...]  # the bounced addresses, lower-cased
    permanent: bool
    reason: str  # short human text, e.g. the diagnostic code or status
    original_message_id: str | None  # Message-ID of the mail that bounced, without <>


@dataclass(frozen=True)
class _Failure:
    recipient: str
    permanent: bool
    reason: str


def detect_bounce(mail: InboundEmail, raw: bytes | None = None) -> Bounce | None:
    """The bounce ``mail`` reports, or None when it is not a bounce.

    ``raw`` (the message bytes) is optional: with it, flufl.bounce gets a
    look at notices the own layers could not read.
    """
    try:
        return _detect(mail, raw)
    except Exception:  # a classifier bug must not stop the pipeline
        log.exception("bounce detection failed message_id=%s", mail.message_id)
        return None


# --------------------------------------------------------------------------
# The layers


def _detect(mail: InboundEmail, raw: bytes | None) -> Bounce | None:
    if is_feedback_report(mail):
        return None  # RFC 5965 abuse complaints quote a message but bounce nothing
    excluded = _excluded_addresses(mail)
    texts = _texts(mail, raw)
    failures, saw_dsn_recipients, dsn_status = _dsn_failures(mail, texts, excluded)
    if failures:
        return _bounce(failures, mail, texts)
    if saw_dsn_recipients:
        # RFC 3464 §2.3.3: every recipient was delivered, relayed or expanded;
        # this is a success notice someone asked for, not a bounce.
        return None
    failures = _ses_failures(texts)
    if failures:
        return _bounce(failures, mail, texts)
    if not _is_from_daemon(mail, bool(dsn_status)):
        return None
    notice, returned = _notice_text(mail, raw)
    if not (_BOUNCE_SUBJECT_RE.search(mail.subject) or _NOTICE_BODY_RE.search(notice)):
        return None
    permanent = _is_permanent(notice, mail.subject, dsn_status)
    recipients = (
        _header_recipients(mail)
        or _notice_recipients(notice, excluded)
        or _listed_recipients(
            # A notice sent to the very address that failed (mail to oneself, a
            # forward that comes back) names it as its own recipient: accept it
            # then only from an unmistakable list of failed addresses.
            notice,
            {a for a in (mail.sender_addr,) if a},
        )
    )
    if not recipients and raw is not None:
        recipients, flufl_permanent = _flufl_recipients(raw, excluded)
        if flufl_permanent is not None and not dsn_status and not _has_code(notice):
            permanent = permanent and flufl_permanent
    if not recipients:
        # The notice names no address (a bare transcript, "no valid
        # recipients"): the returned message says whom it was sent to, and
        # when that is one address, that address is the one that failed.
        recipients = _returned_recipients(mail, returned, excluded)
    if not recipients:
        return None
    reason = dsn_status or _reason_line(notice) or mail.subject
    return _bounce([_Failure(r, permanent, reason) for r in recipients], mail, texts)


def _bounce(failures: list[_Failure], mail: InboundEmail, texts: list[str]) -> Bounce:
    # One notice may mix recipients that failed with ones that are only
    # delayed; the failures are what the shell must act on.
    chosen = [f for f in failures if f.permanent] or failures
    recipients: list[str] = []
    for failure in chosen:
        if failure.recipient not in recipients:
            recipients.append(failure.recipient)
    return Bounce(
        recipients=tuple(recipients[:MAX_RECIPIENTS]),
        permanent=chosen[0].permanent,
        reason=_clip(chosen[0].reason),
        original_message_id=_original_message_id(mail, texts),
    )


# --------------------------------------------------------------------------
# Layer 1: RFC 3464 delivery status fields

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
# RFC 3462 §2 / RFC 6532: the third part returns the message or its headers.
_RETURNED_TYPES = frozenset(
    {"message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"}
)
_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$")
_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_SMTP_CODE_RE = re.compile(r"(?<![\w.#/-])([245])[0-5]\d(?=[\s,;)\]-]|$)", re.MULTILINE)
_ADDR_RE = re.compile(
    # Local parts are read leniently (RFC 5322 §3.4.1 allows quoted strings,
    # and Japanese mobile carriers issued addresses with consecutive dots).
    r"(?:\"[^\"\s@]{1,64}\"|(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{0,63})"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def _dsn_failures(
    mail: InboundEmail, texts: list[str], excluded: set[str]
) -> tuple[list[_Failure], bool, str]:
    """Failed recipients from RFC 3464 fields; whether any recipient field was
    seen at all; and the first Status code met (for notices whose recipient
    fields are unreadable)."""
    blocks: list[dict[str, str]] = []
    for part in mail.parts:
        if part.content_type in _RETURNED_TYPES:
            # RFC 3462 puts the status before the returned message; a status
            # part after an attached message belongs to that message - a
            # person forwarding a bounce has not bounced anything.
            break
        if part.content_type in _DSN_TYPES and part.text:
            blocks.extend(_field_blocks(part.text))
    from_daemon = _is_from_daemon(mail, False)
    if not any(_is_recipient_block(b) for b in blocks) and from_daemon:
        # A relay that wraps the DSN it received into a notice of its own
        # nests the status inside the attached message.
        for part in mail.parts:
            if part.content_type in _DSN_TYPES and part.text:
                blocks.extend(_field_blocks(part.text))
    if not any(_is_recipient_block(b) for b in blocks) and from_daemon:
        # Some MTAs (Amazon WorkMail, old Postfix) quote the fields in the
        # text part instead of sending a message/delivery-status part. Only
        # trusted from a mail system: a customer may paste such fields too.
        for text in texts:
            if re.search(r"^[ \t]*final-recipient[ \t]*:", text, re.IGNORECASE | re.MULTILINE):
                blocks.extend(_field_blocks(text))
    failures: list[_Failure] = []
    seen_recipient = False
    first_status = ""
    for block in blocks:
        status = _status_of(block)
        first_status = first_status or status
        if not _is_recipient_block(block):
            continue
        recipient = _dsn_recipient(block, excluded)
        if not recipient:
            continue
        seen_recipient = True
        failure = _dsn_failure(block, recipient, status)
        if failure is not None:
            failures.append(failure)
    return failures, seen_recipient, first_status


def _field_blocks(text: str) -> list[dict[str, str]]:
    """RFC 3464 §2.1: blank-line separated groups of header-style fields
    (folded lines continued); the first value of a repeated field wins."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text[:MAX_NOTICE].splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] = f"{current[last]} {line.strip()}"
            continue
        match = _FIELD_RE.match(line.strip())
        if match:
            last = match.group(1).lower()
            current.setdefault(last, match.group(2).strip())
        else:
            last = ""
    if current:
        blocks.append(current)
    return blocks


def _is_recipient_block(block: dict[str, str]) -> bool:
    return "final-recipient" in block or "original-recipient" in block


def _dsn_recipient(block: dict[str, str], excluded: set[str]) -> str:
    # RFC 3464 §2.3.1: Original-Recipient is the address the sender used,
    # which is the one our contacts are stored under; Final-Recipient
    # (§2.3.2) may be an alias expansion of it.
    for name in ("original-recipient", "final-recipient"):
        value = block.get(name, "")
        address = _field_address(value)
        if address and address not in excluded:
            return address
    for name in ("original-recipient", "final-recipient"):
        address = _field_address(block.get(name, ""))
        if address:
            return address
    return ""


def _field_address(value: str) -> str:
    # "rfc822; user@example.org" - the address type is optional in practice.
    _, _, rest = value.rpartition(";")
    match = _ADDR_RE.search(rest or value)
    return match.group(0).lower() if match else ""


def _status_of(block: dict[str, str]) -> str:
    match = _STATUS_RE.search(block.get("status", ""))
    return match.group(0) if match else ""


def _dsn_failure(block: dict[str, str], recipient: str, status: str) -> _Failure | None:
    action = (block.get("action", "").split() or [""])[0].lower()
    diagnostic = block.get("diagnostic-code", "")
    _, _, diagnostic_text = diagnostic.partition(";")
    diagnostic_text = (diagnostic_text or diagnostic).strip()
    reason = " ".join(x for x in (status, diagnostic_text) if x) or action
    # RFC 3464 §2.3.3: "delivered", "relayed" and "expanded" are successes.
    if action in ("delivered", "relayed", "expanded"):
        return None
    if action == "delayed":
        return _Failure(recipient, False, reason or "delayed")
    if action in ("expired", "timeout"):
        # Not an RFC 3464 action, but used for mail given up after transient
        # failures: the address itself was never refused.
        return _Failure(recipient, False, reason or action)
    if status:
        # RFC 3463 §3.1: class 2 success, 4 persistent transient, 5 permanent.
        if status[0] == "2" and action != "failed":
            return None
        return _Failure(recipient, status[0] == "5", reason)
    code = _SMTP_CODE_RE.search(diagnostic_text)
    if code:
        return _Failure(recipient, code.group(1) == "5", reason)
    if action == "failed":
        return _Failure(recipient, True, reason or "failed")
    return None


# --------------------------------------------------------------------------
# Layer 2: Amazon SES notifications (JSON in the body)


_SES_TYPE_RE = re.compile(r'"bounceType"\s*:\s*"(\w+)"')
_SES_RECIPIENTS_RE = re.compile(r'"bouncedRecipients"\s*:\s*\[(.*?)\]', re.DOTALL)
_SES_ADDRESS_RE = re.compile(r'"emailAddress"\s*:\s*"([^"]+)"')
_SES_DIAGNOSTIC_RE = re.compile(r'"(?:diagnosticCode|status)"\s*:\s*"([^"]+)"')


def _ses_failures(texts: list[str]) -> list[_Failure]:
    """Amazon SES bounce notifications delivered by mail (through SNS): JSON
    with ``bounceType`` Permanent/Transient and ``bouncedRecipients``.

    Read with patterns rather than a JSON parser: SNS nests the SES document
    in an escaped string, and mail transport wraps long lines inside it.
    """
    for text in texts:
        # The notification is the whole body; JSON quoted inside a person's
        # question about a bounce does not start it.
        if "bouncedRecipients" not in text or not text.lstrip().startswith("{"):
            continue
        text = text.replace('\\"', '"')
        if not re.search(r'"notificationType"\s*:\s*"Bounce"', text):
            continue
        kind = _SES_TYPE_RE.search(text)
        listing = _SES_RECIPIENTS_RE.search(text)
        if not kind or not listing:
            continue
        permanent = kind.group(1).lower() == "permanent"
        diagnostic = _SES_DIAGNOSTIC_RE.search(listing.group(1))
        reason = diagnostic.group(1) if diagnostic else kind.group(1)
        failures = []
        for found in _SES_ADDRESS_RE.finditer(listing.group(1)):
            match = _ADDR_RE.search(found.group(1))
            if match:
                failures.append(_Failure(match.group(0).lower(), permanent, reason))
        if failures:
            return failures
    return []


# --------------------------------------------------------------------------
# Layers 2 and 3: notices in prose

_DAEMON_SENDER_RE = re.compile(
    r"mailer[-_ ]?daemon|post[-_ ]?master|mail delivery|delivery subsystem|"
    r"mail (?:delivery )?system|mail administrator|mail\.delivery\.system|"
    r"delivery[-_ ]?status|^\s*<?>?\s*$",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|returned mail|returning message|mail delivery|"
    r"delivery (?:status|failure|failed|notification|problem|has failed)|"
    r"failure notice|failure delivery|failed delivery|delivery failure|"
    r"could not be delivered|not delivered|non[- ]?deliver|nondeliverable|"
    r"delayed mail|message delayed|delayed \d+ hours|could not send|"
    r"mail system error|returned to sender|returning to sender|error sending your mail|"
    r"mail failed|errors from|"
    r"unzustellbar|nicht zustellbar|zustellung|übermittlungsstatus|"
    r"non remis|échec de (?:la )?remise|no se puede entregar|"
    r"не доставлено|配信できません|送信できません|mail failure",
    re.IGNORECASE,
)
_NOTICE_BODY_RE = re.compile(
    r"this is the qmail-send program|created automatically by mail delivery software|"
    r"the original message was received at|could not be delivered to|"
    r"i'm sorry to have to inform you that your message could not|"
    r"delivery to the following recipients? (?:failed|has been delayed)|"
    r"did not reach the following recipient|following address(?:es|\(es\))? (?:failed|had)|"
    r"following recipients? (?:returned|had|failed|cannot be reached)|"
    r"error (?:occurred )?(?:while trying to deliver|delivering your mail)|"
    r"unable to deliver|was not delivered to|there was an error delivering|"
    r"delivery has failed to these recipients|"
    r"your message (?:could not|couldn't|wasn't) be delivered|"
    r"we had trouble delivering your message|message delivery has failed|"
    r"permanent error|permanent fatal error|delivery status notification|"
    r"unknown user|user unknown|no such user|mailbox (?:unavailable|full|is full)|"
    r"invalid user address|not listed in|recipient address rejected|"
    r"has not yet been delivered|will be retried|still being retried|"
    r"message delivery failed|message could not be delivered|transcript of session follows|"
    r"failed addresses|no valid recipients|not be delivered",
    re.IGNORECASE,
)
# Lines that start the returned copy of the original message.
_RETURNED_COPY_RE = re.compile(
    # [ \t] rather than \s: a "\s*" at a line start rescans every blank run.
    r"^[ \t]*-*[ \t]*(?:"
    r"this is a copy of (?:the|your) message|below this line is a copy of the message|"
    r"original message(?: follows| headers)?\b|the header of the original message|"
    r"message headers follow|unsent message follows|(?:a )?copy of (?:the|your) message|"
    r"returned message|original mail (?:as follows|info)|headers of the original message|"
    r"undelivered message (?:headers )?follows|the original message headers|"
    r"original message text|content of the original message"
    r")|^(?:return-path|received|x-original-to|delivered-to):",
    re.IGNORECASE | re.MULTILINE,
)
# Phrases that introduce the failed addresses.
_INTRO_RE = re.compile(
    r"following (?:e-?mail )?(?:address(?:es|\(es\))?|recipients?(?:\(s\))?|users?|destinations?)|"
    r"could not be delivered to|not (?:be )?delivered to|did not reach|"
    r"delivering your (?:mail|message) to|delivery to|deliver(?:y)? (?:the mail )?to|"
    r"unknown (?:user|recipient)s?:|user unknown|no such (?:user|recipient)|"
    r"undeliverable (?:to|address)|failed recipients?|recipient(?:\(s\))?:|rcpt to:?|"
    r"address(?:es)? failed|not yet been delivered|invalid (?:user|recipient|address)|"
    r"addressed to|your message to|mail to|sent to",
    re.IGNORECASE,
)
# Contexts in which an address is the sender's, not the recipient's.
_SENDER_CONTEXT_RE = re.compile(
    r"(?:mail from|envelope[- ]from|envelope sender|sender|from|reply-to|return-path)"
    r"\s*[:=]?\s*<?$",
    re.IGNORECASE,
)
# Wording of a warning: the message is still queued (RFC 3464 "delayed").
_STILL_TRYING_RE = re.compile(
    r"has not yet been delivered|not been delivered yet|will be retried|still being retried|"
    r"warning only|this is a warning|will (?:continue|keep) trying|attempts will continue|"
    r"will retry|retried for \d|is delayed|only a temporary failure",
    re.IGNORECASE,
)
_DELAY_SUBJECT_RE = re.compile(r"\bdelay(?:ed)?\b|warning|still being retried", re.IGNORECASE)
_SAYS_PERMANENT_RE = re.compile(r"\bpermanent(?:ly)?\b|fatal error", re.IGNORECASE)
# Wording of a failure with a transient cause: the message was given up after
# retrying (RFC 3463 X.4.7 "delivery time expired"), or the cause was temporary.
_TRANSIENT_RE = re.compile(
    r"giving up|gave up|given up|in the queue too long|too long in (?:the )?queue|"
    r"retry timeout exceeded|failing for a long time|cannot send message for \d|"
    r"could not be delivered for \d|could not deliver for the last|failed \d+ attempts|"
    r"after (?:\d+|multiple|several) (?:attempts|retries)|aborted after|expired|timed? ?out|"
    r"temporar(?:y|ily)|deferred|try again later|not\s+found,\s+try\s+again",
    re.IGNORECASE,
)
# Words that name the cause of a failure, for the reason line.
_CAUSE_RE = re.compile(
    r"permanent|fatal|user unknown|unknown user|no such (?:user|mailbox|address|recipient)|"
    r"does not exist|doesn't exist|not exist|invalid (?:user|recipient|address|mailbox)|"
    r"rejected|refused|not found|unknown recipient|not listed|host unknown|"
    r"mailbox (?:unavailable|disabled|full)|quota|too large|exceed",
    re.IGNORECASE,
)


def _is_from_daemon(mail: InboundEmail, has_dsn_status: bool) -> bool:
    """A notice comes from a mail system: a daemon sender, a null envelope
    sender (RFC 5321 §4.5.5) or a report structure. The caller also wants a
    bounce-like subject or text, so that a person's mail about "a failed
    delivery" is not taken for a bounce."""
    from_header = mail.header("from")
    return (
        from_header is None
        or bool(_DAEMON_SENDER_RE.search(from_header))
        or _is_null_return_path(mail)
        or (mail.return_path or "").startswith(("mailer-daemon", "postmaster", "double-bounce"))
        or mail.content_type == "multipart/report"
        or has_dsn_status
    )


def _is_null_return_path(mail: InboundEmail) -> bool:
    value = mail.header("return-path")
    return value is not None and not value.strip().strip("<>").strip()


def _notice_text(mail: InboundEmail, raw: bytes | None) -> tuple[str, str]:
    """The notice's own words, and the inline copy of the returned message
    that follows them (empty when the copy is a separate MIME part).

    When the MIME structure hid every text part (a broken boundary), the raw
    body is read as text instead.
    """
    texts: list[str] = []
    for part in mail.parts:
        if part.content_type in _RETURNED_TYPES or part.content_type == "message/partial":
            break
        if part.content_type in _DSN_TYPES:
            continue
        if _is_readable(part.content_type) and part.text:
            texts.append(part.text)
        elif part.content_type.startswith("text/html") and part.text and not texts:
            texts.append(_strip_tags(part.text))
    text = _lines("\n".join(texts)) if texts else "\n".join(_texts(mail, raw))
    cut = _RETURNED_COPY_RE.search(text)
    if cut is None:
        return text, ""
    return text[: cut.start()], text[cut.start() :]


_LEAD_RE = re.compile(
    # What may precede a failed address at the start of its line: list
    # bullets, Sendmail's ">>>", an SMTP reply or status code, "RCPT TO:",
    # or a short label ("Unknown user:", "Delivery failed 20 attempts:").
    r"^[\s<>\"'*\-:\[(|]*(?:(?:[245]\d\d|[245]\.\d{1,3}\.\d{1,3})[\s-]+)*"
    r"(?:(?:rcpt\s+to|(?!(?:[\w-]*-id|in-reply-to|references|subject|date|from|sender|"
    r"reply-to|return-path|received|content-[\w-]+|x-[\w-]+)\s*:)[A-Za-z][\w '-]{0,48})\s*:\s*)?"
    r"[\s<\"'(\[]*(?:rfc822\s*;\s*)?<?$",
    re.IGNORECASE,
)


def _notice_recipients(notice: str, excluded: set[str]) -> list[str]:
    """The failed addresses named in a prose notice.

    Each mention is scored by where it stands: at the start of a line
    (qmail ``<user@host>:``, Exim's indented list, Sendmail's ``<user@host>``
    after the error banner, Exchange's ``user@host on <date>``), after a
    phrase that introduces failed addresses, or next to an SMTP error. The
    best-scored mentions win, so that a greeting's "your message to ..."
    loses to the list that follows it.
    """
    scores: dict[str, int] = {}
    order: list[str] = []
    since_intro = 99  # non-blank lines since the last introducing phrase
    for line in notice.splitlines():
        if not line.strip():
            continue
        since_intro += 1
        for match in _ADDR_RE.finditer(line):
            address = match.group(0).lower()
            if address in excluded or _is_daemon_address(address):
                continue
            before = line[: match.start()]
            if _SENDER_CONTEXT_RE.search(before.rstrip()):
                continue
            score = 1
            if _LEAD_RE.match(before):
                score += 4
            if _INTRO_RE.search(before) or since_intro <= 3:
                score += 3
            after = line[match.end() :]
            if re.match(r">?\s*(?::|\.\.\.|on\s|\[|\(|$)", after):
                score += 1
            if before.endswith("<") and after.startswith(">"):
                score += 1  # MTAs print envelope addresses in angle brackets
            if _STATUS_RE.search(line) or _SMTP_CODE_RE.search(line):
                score += 1
            if address not in scores:
                order.append(address)
            scores[address] = max(scores.get(address, 0), score)
        if _INTRO_RE.search(line):
            since_intro = 0
    if not scores:
        return []
    best = max(scores.values())
    if best < 5:
        return []
    return [a for a in order if scores[a] == best][:MAX_RECIPIENTS]


_LISTED_RE = re.compile(r"^[\s*>\-]*<?\"?(\S+@\S+?)\"?>?:?\s*$")


def _header_recipients(mail: InboundEmail) -> list[str]:
    """Exim and Gmail name the failed addresses in ``X-Failed-Recipients``."""
    found: list[str] = []
    for value in mail.header_all("x-failed-recipients"):
        for match in _ADDR_RE.finditer(value):
            address = match.group(0).lower()
            if address not in found:
                found.append(address)
    return found[:MAX_RECIPIENTS]


def _listed_recipients(notice: str, excluded: set[str]) -> list[str]:
    """Addresses standing alone on their line, like the lists that Exim,
    qmail and Postfix print under "The following address(es) failed"."""
    found: list[str] = []
    since_intro = 99
    for line in notice.splitlines():
        if not line.strip():
            continue
        since_intro += 1
        match = _LISTED_RE.match(line)
        if match and since_intro <= 3:
            address = _ADDR_RE.fullmatch(match.group(1))
            if address and address.group(0).lower() not in excluded | set(found):
                found.append(address.group(0).lower())
                since_intro = 0  # the list goes on
        if _INTRO_RE.search(line):
            since_intro = 0
    return found[:MAX_RECIPIENTS]


def _returned_recipients(mail: InboundEmail, returned: str, excluded: set[str]) -> list[str]:
    """The single To/Cc address of the returned message, if it has exactly one."""
    headers = [p.text for p in mail.parts if p.content_type in _RETURNED_TYPES and p.text]
    if returned:
        # Skip the banner line(s) ("Message headers follow.") to the headers.
        start = re.search(r"^[A-Za-z][A-Za-z0-9-]*:", returned, re.MULTILINE)
        if start:
            headers.append(returned[start.start() :].split("\n\n", 1)[0])
    found: set[str] = set()
    for block in headers:
        block = re.sub(r"\n[ \t]+", " ", block)
        for line in re.findall(r"^[ \t>]*(?:to|cc):[^\n]*", block, re.IGNORECASE | re.MULTILINE):
            found.update(m.group(0).lower() for m in _ADDR_RE.finditer(line))
        if not found:
            # No To/Cc (Bcc, or headers cut short): the envelope recipient
            # that the receiving MTA wrote into its Received field.
            for rcvd in re.findall(r"^received:[^\n]*", block, re.IGNORECASE | re.MULTILINE):
                match = re.search(r"\bfor\s+<?([^\s<>;]+@[^\s<>;]+?)>?\s*;", rcvd)
                if match:
                    found.add(match.group(1).lower())
                    break
        if found:
            break
    found -= excluded
    return sorted(found) if len(found) == 1 else []


def _is_permanent(notice: str, subject: str, dsn_status: str) -> bool:
    """Whether a prose notice reports a permanent failure (RFC 3463 class 5)
    rather than a delay or a transient one (class 4).

    In order: a warning that the message is still queued; the status or
    SMTP codes the notice quotes; its own words ("permanent error"); words
    of a transient cause (expired, timed out, try again later); and else a
    plain failure, which is permanent.
    """
    if _DELAY_SUBJECT_RE.search(subject) or _STILL_TRYING_RE.search(notice):
        return False
    if dsn_status:
        return dsn_status[0] == "5"
    classes = {m.group(1) for m in _STATUS_RE.finditer(notice)}
    classes.update(m.group(1) for m in _SMTP_CODE_RE.finditer(notice))
    if "5" in classes:
        return True
    if "4" in classes:
        return False
    if _SAYS_PERMANENT_RE.search(notice):
        return True
    return not _TRANSIENT_RE.search(notice)


def _has_code(notice: str) -> bool:
    return bool(_STATUS_RE.search(notice) or _SMTP_CODE_RE.search(notice))


def _reason_line(notice: str) -> str:
    for line in notice.splitlines():
        if _STATUS_RE.search(line) or _SMTP_CODE_RE.search(line):
            return " ".join(line.split())
    for line in notice.splitlines():
        if _CAUSE_RE.search(line) or _TRANSIENT_RE.search(line):
            return " ".join(line.split())
    return ""


# --------------------------------------------------------------------------
# flufl.bounce


def _flufl_recipients(raw: bytes, excluded: set[str]) -> tuple[list[str], bool | None]:
    """Recipients flufl.bounce finds, and whether it calls them permanent.

    A library exception is never our exception: any failure means "found
    nothing".
    """
    try:
        # Imported here so that even a broken installation is "found nothing".
        from flufl.bounce import all_failures

        message: Message = email.message_from_bytes(raw, policy=email.policy.compat32)
        temporary, permanent = all_failures(message)
    except Exception:
        return [], None
    found: list[str] = []
    for item in sorted(permanent) + sorted(temporary):
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        match = _ADDR_RE.search(text)
        if match:
            address = match.group(0).lower()
            if address not in excluded and address not in found:
                found.append(address)
    if not found:
        return [], None
    return found[:MAX_RECIPIENTS], bool(permanent)


# --------------------------------------------------------------------------
# Shared helpers

_MSGID_LINE_RE = re.compile(
    r"^[ \t>]*message-id:[ \t]*<?([^<>\s]+@[^<>\s]+?)>?[ \t\r]*$", re.IGNORECASE | re.MULTILINE
)
_HEADER_ADDR_RE = re.compile(
    r"^[ \t>]*(?:from|sender|return-path|reply-to):[^\n]*", re.IGNORECASE | re.MULTILINE
)


def _original_message_id(mail: InboundEmail, texts: list[str]) -> str | None:
    """The Message-ID of the mail that bounced: from the returned message or
    its headers (RFC 3462 third part), else from an inline copy, else from
    the notice's own In-Reply-To / References."""
    for part in mail.parts:
        if part.content_type in _RETURNED_TYPES:
            match = _MSGID_LINE_RE.search(part.text)
            if match:
                return match.group(1)
    body = "\n".join(texts)[:MAX_NOTICE]
    cut = _RETURNED_COPY_RE.search(body)
    if cut:
        match = _MSGID_LINE_RE.search(body, cut.start())
        if match:
            return match.group(1)
    for part in mail.parts:
        if part.content_type in _DSN_TYPES:
            match = re.search(r"message-id:[ \t]*<?([^<>\s]+@[^<>\s]+?)>?\s", part.text, re.I)
            if match:
                return match.group(1)
    if mail.in_reply_to:
        return mail.in_reply_to[0]
    if mail.references:
        return mail.references[-1]
    return None


def _excluded_addresses(mail: InboundEmail) -> set[str]:
    """Addresses that are never the bounced recipient: the notice's own sender
    and recipients (the original sender, i.e. usually us), and the sender of
    the returned message."""
    excluded = {a.addr for a in (mail.from_,) if a is not None}
    # Not Delivered-To / X-Original-To: some agents deliver the notice with
    # those naming the failed recipient.
    excluded.update(a.addr for a in mail.to + mail.cc)
    if mail.return_path:
        excluded.add(mail.return_path)
    for part in mail.parts:
        if part.content_type in _RETURNED_TYPES:
            for line in _HEADER_ADDR_RE.findall(part.text):
                excluded.update(m.group(0).lower() for m in _ADDR_RE.finditer(line))
    return {a for a in excluded if a}


def _is_daemon_address(address: str) -> bool:
    local = address.rpartition("@")[0]
    return re.sub(r"[-_.]", "", local) in ("mailerdaemon", "doublebounce")


def _texts(mail: InboundEmail, raw: bytes | None) -> list[str]:
    """The text parts of ``mail``; when the MIME structure hid every text
    part (a broken boundary), the raw body read as text."""
    texts = [_lines(p.text) for p in mail.parts if _is_readable(p.content_type) and p.text]
    if not texts and mail.text.strip():
        texts = [_lines(mail.text)]
    if not texts and raw is not None:
        _, _, body = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").partition(b"\n\n")
        texts = [body[:MAX_NOTICE].decode("utf-8", "replace")]
    return texts


def _is_readable(content_type: str) -> bool:
    # startswith: a broken Content-Type ("text/plain charset=...") still names
    # a text part. A multipart with text is one whose boundary was never found
    # (the parser then keeps its whole body as one string).
    return content_type.startswith(("text/plain", "multipart/"))


def _lines(text: str) -> str:
    # Line-anchored patterns need "\n" line ends; old Mac mail uses "\r".
    return text[:MAX_NOTICE].replace("\r\n", "\n").replace("\r", "\n")


def _strip_tags(markup: str) -> str:
    # A cheap tag strip: only the notice's wording matters, not its layout.
    text = re.sub(r"<(?:br|/p|/div|/tr|/li)[^>]{0,200}>", "\n", markup, flags=re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]{0,2000}>", " ", text))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
