"""What kind of inbound mail this is, before any ticket is touched. Pure code.

The kinds, in the order they are decided:

* ``OWN_LOOP`` - our own mail came back (our loop header with our value, our
  own address as sender, or - unless it is a bounce - a Message-ID under our
  own domain): drop it, never answer.
* ``BOUNCE`` - a delivery failure or delay notice: attach it to the ticket of
  the bounced message and flag the address; never answer. Decided before the
  size check because notices carry the whole returned message, and the small
  :class:`~helpdesk.ingest.bounce.Bounce` is all the shell needs from them.
* ``TOO_LARGE`` - more than ``max_size`` bytes: store a stub, not the body.
* ``AUTO_REPLY`` - written by a machine (RFC 3834 responders, vacation
  notices, abuse reports, success notices): record it, never answer it.
* ``NORMAL`` - everything else.

``no_auto_reply_reason`` is filled for every kind whenever we must not send
any automatic mail in answer (a TOO_LARGE mail from a robot, a NORMAL mail
from a mailing list...), so the shell needs one test only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from helpdesk.ingest.autoreply import automatic_mail_reason, is_auto_reply, own_mail_reason
from helpdesk.ingest.bounce import Bounce, detect_bounce
from helpdesk.ingest.inbound import InboundEmail


class Kind(StrEnum):
    NORMAL = "normal"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    OWN_LOOP = "own_loop"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Classification:
    kind: Kind
    bounce: Bounce | None
    no_auto_reply_reason: str | None


def classify(
    mail: InboundEmail,
    *,
    max_size: int,
    own_addresses: frozenset[str],
    own_domains: frozenset[str],
    loop_header: str = "X-Helpdesk-Loop",
    loop_value: str,
    raw: bytes | None = None,
) -> Classification:
    """Classify ``mail``; ``raw`` (its bytes) lets the bounce detector read
    notices whose MIME structure the parser could not follow."""
    reason = automatic_mail_reason(mail, own_addresses, own_domains, loop_header, loop_value)
    own = own_mail_reason(mail, own_addresses, own_domains, loop_header, loop_value)
    if own in ("own-loop", "own-address"):
        return Classification(Kind.OWN_LOOP, None, reason)
    bounce = detect_bounce(mail, raw)
    if bounce is not None:
        return Classification(Kind.BOUNCE, bounce, reason or "bounce")
    if own is not None:
        # Checked after bounces: the MTA that sends our mail may also write
        # the bounces of it, with Message-IDs under our own domain.
        return Classification(Kind.OWN_LOOP, None, reason)
    if mail.size > max_size:
        return Classification(Kind.TOO_LARGE, None, reason)
    if is_auto_reply(mail) or (reason is not None and _is_machine_report(reason)):
        return Classification(Kind.AUTO_REPLY, None, reason)
    return Classification(Kind.NORMAL, None, reason)


def _is_machine_report(reason: str) -> bool:
    # RFC 6522 reports (delivery successes, read receipts) and RFC 5965 abuse
    # complaints are written by machines: no person waits for an answer.
    return reason == "feedback-report" or reason.startswith("report:")
