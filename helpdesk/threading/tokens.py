"""Signed reply addresses and Message-IDs: HMAC-SHA256 tags over a reference.

Every mail we send carries ``Reply-To: support+HD-000123.<tag>@domain`` and a
Message-ID ``hd.HD-000123.<unique>.<tag>@domain``. A reply that comes back to
either names its ticket with a proof that we wrote it, so a stranger cannot
attach mail to someone else's ticket by typing a number.

Tags are the first 40 bits of the HMAC, in lower-case RFC 4648 base32: short
enough for an address people may see, long enough that guessing one by
sending mail (one guess per message) is hopeless. Everything signed is
lower-cased first because some MTAs lower-case addresses, and RFC 5321 §2.4
lets them treat the domain case-insensitively; the tags then survive.
Each kind of token signs a different label, so a tag from a Reply-To can
never be replayed as a Message-ID tag.
"""

from __future__ import annotations

import base64
import hmac
import re

TAG_LENGTH = 8
_TAG_BYTES = -(-TAG_LENGTH // 8) * 5  # whole 5-byte groups covering TAG_LENGTH

_ADDRESS_LABEL = b"helpdesk reply-address v1"
_MESSAGE_ID_LABEL = b"helpdesk message-id v1"
_REFERENCE_RE = re.compile(r"[a-z0-9]{1,16}-[0-9]{6,12}")
# RFC 5322 §3.6.4 id-left is a dot-atom; keep "unique" to a safe subset of
# atext so that it can never smuggle in "@", "<", ">" or whitespace.
_UNIQUE_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def reply_address(support_address: str, reference: str, secret: str | bytes) -> str:
    """``support+HD-000123.<tag>@example.test`` for ``support@example.test``."""
    local, domain = _split_address(support_address)
    canonical = _canonical_reference(reference)
    tag = _tag(secret, _ADDRESS_LABEL, canonical, local.lower(), domain.lower())
    return f"{local}+{reference.upper()}.{tag}@{domain}"


def parse_reply_address(address: str, support_address: str, secret: str | bytes) -> str | None:
    """The reference a signed reply address names, or None.

    None for anything that is not a token of ``support_address`` with a valid
    tag: another mailbox, the plain support address, ``support+note@``, a
    forged or truncated tag.
    """
    try:
        local, domain = _split_address(address.strip().strip("<>"))
        support_local, support_domain = _split_address(support_address)
    except ValueError:
        return None
    if domain.lower() != support_domain.lower():
        return None
    lead = support_local.lower() + "+"
    if not local.lower().startswith(lead):
        return None
    reference, dot, tag = local[len(lead) :].lower().rpartition(".")
    if not dot or not _REFERENCE_RE.fullmatch(reference):
        return None
    expected = _tag(secret, _ADDRESS_LABEL, reference, support_local.lower(), domain.lower())
    if not hmac.compare_digest(tag.encode("ascii", "replace"), expected.encode("ascii")):
        return None
    return reference.upper()


def make_message_id(reference: str, domain: str, secret: str | bytes, unique: str) -> str:
    """``hd.HD-000123.<unique>.<tag>@domain``, without angle brackets.

    ``unique`` must make the id unique (RFC 5322 §3.6.4 says a Message-ID
    names one message forever): a random string or an outbox row id.
    """
    canonical = _canonical_reference(reference)
    if not _UNIQUE_RE.fullmatch(unique):
        raise ValueError(f"unique part must be dot-separated letters, digits, _ or -: {unique!r}")
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(f"not a domain: {domain!r}")
    tag = _tag(secret, _MESSAGE_ID_LABEL, canonical, unique.lower(), domain.lower())
    return f"hd.{reference.upper()}.{unique}.{tag}@{domain}"


def parse_message_id(msgid: str, domain: str, secret: str | bytes) -> str | None:
    """The reference one of our own Message-IDs names, or None."""
    left, at, right = msgid.strip().strip("<>").rpartition("@")
    if not at or right.lower() != domain.lower():
        return None
    parts = left.lower().split(".")
    if len(parts) < 4 or parts[0] != "hd":
        return None
    reference, unique, tag = parts[1], ".".join(parts[2:-1]), parts[-1]
    if not _REFERENCE_RE.fullmatch(reference) or not _UNIQUE_RE.fullmatch(unique):
        return None
    expected = _tag(secret, _MESSAGE_ID_LABEL, reference, unique, right.lower())
    if not hmac.compare_digest(tag.encode("ascii", "replace"), expected.encode("ascii")):
        return None
    return reference.upper()


def _tag(secret: str | bytes, label: bytes, *fields: str) -> str:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the token secret is empty")
    # NUL cannot occur in any field, so the concatenation is unambiguous.
    message = b"\0".join([label, *(f.encode("utf-8") for f in fields)])
    # Base32 turns each 5 bytes into 8 characters: encoding only the bytes
    # the tag shows gives the same characters as encoding the whole digest
    # (RFC 4648 §6), for a fraction of the pure-Python encoder's time.
    digest = hmac.digest(key, message, "sha256")[:_TAG_BYTES]
    return base64.b32encode(digest).decode("ascii").lower()[:TAG_LENGTH]


def _canonical_reference(reference: str) -> str:
    canonical = reference.lower()
    if not _REFERENCE_RE.fullmatch(canonical):
        raise ValueError(f"not a ticket reference: {reference!r}")
    return canonical


def _split_address(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise ValueError(f"not an address: {address!r}")
    return local, domain
