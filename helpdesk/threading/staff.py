"""Who is staff, and whether a mail claiming to be from staff really is.

Anyone can write any From header, and staff mail carries commands that
change tickets, so a staff address alone proves nothing. We believe only the
Authentication-Results header (RFC 8601) that our own receiving server added,
recognised by its authserv-id. RFC 8601 §5 requires that server to remove any
header arriving from outside that claims its authserv-id, so one bearing our
id was written by us; those with any other id are the sender's word and are
ignored.

A From domain counts as authenticated when a DKIM signature passed for it
(RFC 6376 ``header.d``, or the domain of ``header.i``) in DMARC relaxed
alignment (RFC 7489 §3.1.1: the same domain, or one a parent of the other),
or when SPF and DMARC both passed, DMARC having checked alignment itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from helpdesk.ingest.inbound import InboundEmail


@dataclass(frozen=True, slots=True)
class Verification:
    verified: bool
    reason: str


@dataclass(frozen=True, slots=True)
class AuthResult:
    """One ``method=result`` statement of an Authentication-Results header."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str:
        """The value of property ``name`` (``header.d``), or ""."""
        return next((value for key, value in self.properties if key == name), "")


@dataclass(frozen=True, slots=True)
class AuthenticationResults:
    authserv_id: str
    results: tuple[AuthResult, ...]


def is_staff_address(addr: str, staff: Sequence[str]) -> bool:
    """Whether ``addr`` is configured staff: listed itself, or its domain is
    listed as ``@domain``. A listed domain does not cover its subdomains,
    which may be run by someone else."""
    addr = addr.strip().lower()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        return False
    for entry in staff:
        entry = entry.strip().lower()
        if entry.startswith("@"):
            if entry[1:] == domain:
                return True
        elif entry == addr:
            return True
    return False


def verify_sender(mail: InboundEmail, authserv_id: str, trust_staff_from: bool) -> Verification:
    """Whether the From domain of ``mail`` was authenticated by our server."""
    if trust_staff_from:
        return Verification(True, "trust_staff_from is set: From is not checked")
    if mail.from_ is None or "@" not in mail.from_.addr:
        return Verification(False, "no From address")
    if not authserv_id.strip():
        return Verification(False, "no authserv_id is configured")
    from_domain = _domain(mail.from_.domain)
    ours = [
        parsed
        for value in mail.header_all("authentication-results")
        if (parsed := parse_authentication_results(value)) is not None
        and parsed.authserv_id == authserv_id.strip().lower()
    ]
    if not ours:
        return Verification(False, f"no Authentication-Results from {authserv_id}")
    results = [r for header in ours for r in header.results]
    for r in results:
        if r.method == "dkim" and r.result == "pass":
            signer = _dkim_signer(r)
            if signer and is_aligned(signer, from_domain):
                return Verification(True, f"dkim=pass for {signer}, aligned with {from_domain}")
    spf = any(r.method == "spf" and r.result == "pass" for r in results)
    # The verdict must name the domain it checked (RFC 7489 §11.2 header.from):
    # one without it may be for a From that our parser read otherwise (a
    # display name that looks like an address, two addresses in From).
    dmarc = any(
        r.method == "dmarc"
        and r.result == "pass"
        and _domain(r.prop("header.from")) == from_domain
        for r in results
    )
    if spf and dmarc:
        return Verification(True, f"spf=pass and dmarc=pass for {from_domain}")
    seen = ", ".join(f"{r.method}={r.result}" for r in results) or "no results"
    return Verification(False, f"{from_domain} not authenticated ({seen})")


def is_aligned(signer: str, from_domain: str) -> bool:
    """RFC 7489 relaxed alignment without a public-suffix list: equal, or one
    a subdomain of the other. A single-label signer ("com") is refused, since
    it can only be a public suffix."""
    signer, from_domain = _domain(signer), _domain(from_domain)
    if not signer or not from_domain or "." not in signer or "." not in from_domain:
        return False
    return (
        signer == from_domain
        or from_domain.endswith("." + signer)
        or signer.endswith("." + from_domain)
    )


def parse_authentication_results(value: str) -> AuthenticationResults | None:
    """Parse one header value per the RFC 8601 §2.2 grammar, leniently.

    Comments (nested, with quoted pairs) are dropped, quoted strings
    unquoted, names lower-cased. None when not even an authserv-id is there.
    """
    segments = _segments(value)
    head = _words(segments[0])
    if not head or head[0][0]:
        return None
    results: list[AuthResult] = []
    for segment in segments[1:]:
        pairs = _pairs(_words(segment))
        if not pairs:
            continue  # "none", or nothing we can read
        method, result = pairs[0]
        props = tuple((key, val) for key, val in pairs[1:] if key != "reason")
        # RFC 8601 §2.2 method-version: "dkim/1".
        results.append(AuthResult(method.partition("/")[0], result.lower(), props))
    return AuthenticationResults(head[0][1].lower(), tuple(results))


def _dkim_signer(result: AuthResult) -> str:
    signer = result.prop("header.d")
    if not signer:
        # RFC 6376 §3.5: i= is "[local-part] @ domain", a subdomain of d=.
        signer = result.prop("header.i").rpartition("@")[2]
    return _domain(signer)


def _domain(value: str) -> str:
    domain = value.strip().strip(".").lower()
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _segments(value: str) -> list[str]:
    """Split at ";" outside quoted strings, with comments replaced by a space."""
    segments: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    chars = iter(value)
    for char in chars:
        if char == "\\" and (quoted or depth):
            escaped = next(chars, "")
            if quoted:
                current.append("\\" + escaped)
        elif quoted:
            current.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if not depth:
                current.append(" ")
        elif depth:
            continue
        elif char == '"':
            current.append(char)
            quoted = True
        elif char == ";":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    segments.append("".join(current))
    return segments


def _words(segment: str) -> list[tuple[bool, str]]:
    """Atoms and unquoted strings as ``(False, text)``, each "=" as ``(True, "=")``."""
    words: list[tuple[bool, str]] = []
    current: list[str] = []
    quoted = False
    chars = iter(segment)

    def flush() -> None:
        if current:
            words.append((False, "".join(current)))
            current.clear()

    for char in chars:
        if quoted:
            if char == "\\":
                current.append(next(chars, ""))
            elif char == '"':
                quoted = False
                words.append((False, "".join(current)))
                current.clear()
            else:
                current.append(char)
        elif char == '"':
            flush()
            quoted = True
        elif char == "=":
            flush()
            words.append((True, "="))
        elif char.isspace():
            flush()
        else:
            current.append(char)
    flush()
    return words


def _pairs(words: list[tuple[bool, str]]) -> list[tuple[str, str]]:
    """``key = value`` triples, keys lower-cased; stray words are skipped."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i + 2 < len(words):
        (key_is_eq, key), (is_eq, _), (value_is_eq, value) = words[i : i + 3]
        if not key_is_eq and is_eq and not value_is_eq:
            pairs.append((key.lower(), value))
            i += 3
        else:
            i += 1
    return pairs
