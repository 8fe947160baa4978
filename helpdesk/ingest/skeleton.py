"""A large message as a skeleton: the bodies of its big leaf parts cut out.
Pure code.

The stdlib parser holds a message as the decoded text of all of it, a list
of its lines and then their joined payloads: a 25 MB attachment peaked at
about eight times its size, before a byte of it was decoded. Above a size
threshold the MIME structure is scanned here first, by the parser's own
rules, and the body of every big leaf part is replaced by a one-line token.
The parser then builds the tree of the small skeleton, and the cut bodies
are read later as memoryviews of the raw bytes.

The rules are those of ``email.feedparser`` (compat32, which mail-parser
uses), not an idealised RFC 2046: lines end at CRLF, CR or LF; a line that
is a delimiter of *any* enclosing multipart ends a part (RFC 2046 §5.1.1
forbids such lines inside a part; the parser honours that, so do we); the
line end before a delimiter belongs to the delimiter; headers run to the
first line that is not a field or a continuation. Anything unusual (a
missing blank line, a multipart without its first or closing delimiter, a
repeated delimiter, nesting past the bounds) gives up, and the caller
parses the whole message as before; so does :func:`cut_spans` when a token
does not come back from the parser as the whole payload of a leaf under the
same delimiters. Inside a ``message/*`` part (RFC 2046 §5.2) the attached
message is scanned the same way; its bytes, re-serialised from the tree,
get the cut bodies back in :mod:`helpdesk.ingest.mime`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

LAZY_ABOVE = 1 << 20  # messages larger than this are scanned first
CUT_ABOVE = 1 << 16  # leaf bodies larger than this are cut out
MAX_ENTITIES = 200
MAX_DEPTH = 20
MAX_PART_HEADER = 65_536
# A token is the base64 of "helpdesk-cut-<tag>-<n>": whatever transfer
# encoding and charset the part declares, mail-parser's look at its text
# decodes it cleanly and reports no defect the real body does not have.
_TOKEN_TEXT = "helpdesk-cut-{tag}-{n:09d}"
TOKEN_MARK = base64.b64encode(b"helpdesk-cut")

# email.feedparser.headerRE, on bytes: a field, an mbox "From " line or a
# continuation. Non-ASCII bytes match nothing, as their surrogates do there.
_HEADER_LINE_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_EOL_RE = re.compile(rb"\r\n|\r|\n")


class _GiveUp(Exception):
    """The structure is not one the scan is sure to read as the parser does."""


@dataclass(frozen=True, slots=True)
class Cut:
    """A leaf body ``raw[start:end]`` replaced by ``token`` in the skeleton;
    ``boundaries`` are those of its enclosing multiparts, outermost first."""

    token: str
    start: int
    end: int
    boundaries: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Skeleton:
    data: bytes
    cuts: tuple[Cut, ...]


def make_skeleton(raw: bytes, head: bytes, body_start: int, tag: str,
                  cut_above: int = CUT_ABOVE) -> Skeleton | None:
    """The skeleton of ``raw``, or None when nothing is cut or the scan gives up.

    ``head`` is the header block as the parser is to read it (repaired and
    bounded, ending with the blank line) and ``body_start`` where the body
    begins in ``raw``.
    """
    if raw.find(TOKEN_MARK) >= 0:
        return None  # the tokens must be unique to be recognised
    scan = _Scan(raw, cut_above)
    try:
        top = scan.headers_of(head, 0, len(head), None, len(head))
        if top is None or top[1] != len(head):
            return None
        scan.body(top[0], body_start, (), top=True)
    except (_GiveUp, RecursionError):
        return None
    if not scan.spans:
        return None
    pieces = [head]
    pos = body_start
    cuts: list[Cut] = []
    for i, (start, end, boundaries) in enumerate(scan.spans):
        text = _TOKEN_TEXT.format(tag=tag, n=i).encode("ascii")
        token = base64.b64encode(text + b"." * (-len(text) % 3))
        pieces += [raw[pos:start], token]
        cuts.append(Cut(token.decode("ascii"), start, end, boundaries))
        pos = end
    pieces.append(raw[pos:])
    return Skeleton(b"".join(pieces), tuple(cuts))


def cut_spans(message: Message, skeleton: Skeleton, raw: bytes) -> dict[str, memoryview] | None:
    """Token -> the cut body, when every token came back from the parser as
    the whole payload of a leaf with the delimiters the scan assumed; else None."""
    wanted = {cut.token: cut for cut in skeleton.cuts}
    found: dict[str, Cut] = {}
    for part, boundaries in _walk(message, len(wanted)):
        payload = getattr(part, "_payload", None)
        if not isinstance(payload, str) or payload not in wanted:
            continue
        cut = wanted[payload]
        if boundaries != cut.boundaries or payload in found:
            return None
        found[payload] = cut
    if len(found) != len(wanted):
        return None
    view = memoryview(raw)
    return {token: view[cut.start:cut.end] for token, cut in found.items()}


def _walk(message: Message, cuts: int) -> Iterator[tuple[Message, tuple[str, ...] | None]]:
    """Every part with the boundaries of its multipart ancestors, bounded;
    None below a multipart without a boundary, and below RFC 3464 status
    fields, which the parser reads up to blank lines."""
    stack: list[tuple[Message, tuple[str, ...] | None]] = [(message, ())]
    seen = 0
    limit = 4 * (MAX_ENTITIES + cuts)
    while stack and seen < limit:
        part, boundaries = stack.pop()
        seen += 1
        yield part, boundaries
        payload = getattr(part, "_payload", None)
        if not isinstance(payload, list):
            continue
        inner: tuple[str, ...] | None = None
        if boundaries is None or part.get_content_type() == "message/delivery-status":
            inner = None
        elif part.get_content_maintype() == "multipart":
            boundary = part.get_boundary()
            inner = None if boundary is None else (*boundaries, boundary)
        else:
            inner = boundaries  # message/*: the message inside, same delimiters
        stack.extend((p, inner) for p in reversed(payload) if isinstance(p, Message))


class _Scan:
    def __init__(self, raw: bytes, cut_above: int) -> None:
        self.raw = raw
        self.cut_above = cut_above
        self.spans: list[tuple[int, int, tuple[str, ...]]] = []
        self.entities = 0
        self._patterns: dict[tuple[str, ...], re.Pattern[bytes]] = {}

    # -- lines ------------------------------------------------------------
    def _line_end(self, data: bytes, pos: int) -> int:
        match = _EOL_RE.search(data, pos)
        return len(data) if match is None else match.end()

    def _delimiter(self, boundaries: tuple[str, ...]) -> re.Pattern[bytes]:
        """email.feedparser's boundaryre for any of ``boundaries``; matched
        at a line start, it ends with the line's end or the input's."""
        pattern = self._patterns.get(boundaries)
        if pattern is None:
            alternatives = b"|".join(re.escape(_wire(b)) for b in boundaries)
            pattern = re.compile(rb"--(?:" + alternatives + rb")(--)?[ \t]*(?:\r\n|\r|\n|\Z)")
            self._patterns[boundaries] = pattern
        return pattern

    def _next_delimiter(self, pos: int, boundaries: tuple[str, ...]) -> int | None:
        """Where the first line from ``pos`` that is a delimiter of any of
        ``boundaries`` starts (``pos`` is a line start)."""
        if not boundaries:
            return None
        pattern = self._delimiter(boundaries)
        raw = self.raw
        while True:
            match = pattern.search(raw, pos)
            if match is None:
                return None
            start = match.start()
            if start == pos or raw[start - 1] in b"\r\n":
                return start
            pos = start + 1

    # -- entities ---------------------------------------------------------
    def headers_of(self, data: bytes, pos: int, limit: int, boundaries: tuple[str, ...] | None,
                   most: int = MAX_PART_HEADER) -> tuple[Message, int] | None:
        """The header fields from ``pos`` and where the body starts, or None
        when a delimiter of ``boundaries`` ends the part in its headers."""
        start = pos
        while True:
            if pos >= limit or pos - start > most:
                raise _GiveUp("no end of the header block")
            if boundaries and self._delimiter(boundaries).match(data, pos):
                return None
            end = self._line_end(data, pos)
            if data[pos:pos + 1] in (b"\r", b"\n"):
                fields = BytesHeaderParser(policy=policy.compat32).parsebytes(data[start:pos])
                return fields, end
            if not _HEADER_LINE_RE.match(data, pos):
                raise _GiveUp("header block without its blank line")
            pos = end

    def entity(self, pos: int, boundaries: tuple[str, ...], parent: str, depth: int) -> int:
        """Scan the part (or the message a message/* part holds) starting at
        ``pos``; return where the delimiter line (one of ``boundaries``)
        that ends it starts."""
        self.entities += 1
        if self.entities > MAX_ENTITIES or depth > MAX_DEPTH:
            raise _GiveUp("too many parts")
        headed = self.headers_of(self.raw, pos, len(self.raw), boundaries)
        if headed is None:
            raise _GiveUp("part without a body")
        fields, body = headed
        if parent == "multipart/digest":
            fields.set_default_type("message/rfc822")  # RFC 2046 §5.1.5
        return self.body(fields, body, boundaries, depth=depth)

    def body(self, fields: Message, pos: int, boundaries: tuple[str, ...], *,
             top: bool = False, depth: int = 0) -> int:
        ctype = fields.get_content_type()
        maintype = fields.get_content_maintype()
        if maintype == "multipart":
            boundary = fields.get_boundary()
            if not boundary:
                raise _GiveUp("multipart without a boundary")
            return self.multipart(pos, boundary, boundaries, ctype, depth)
        if maintype == "message" and ctype != "message/delivery-status" and not top:
            mark = len(self.spans)
            try:
                return self.entity(pos, boundaries, ctype, depth + 1)
            except _GiveUp:
                del self.spans[mark:]  # nothing cut in this one: it ends all the same
        end = self._next_delimiter(pos, boundaries)
        if end is None:
            if not top:
                raise _GiveUp("part runs to the end of the message")
            end = len(self.raw)
        if maintype == "message":
            return end  # RFC 3464 field blocks, read with a blank line as their end
        # RFC 2046 §5.1.1: the line end before a delimiter is the delimiter's.
        stop = end
        if not top:
            stop -= 2 if self.raw[end - 2:end] == b"\r\n" else 1
        if stop - pos > self.cut_above:
            self.spans.append((pos, stop, boundaries))
        return end

    def _own(self, own: re.Pattern[bytes], at: int,
             outer: tuple[str, ...]) -> re.Match[bytes] | None:
        """The multipart's own delimiter at ``at``; a line that is also an
        enclosing one's ends the enclosing part first, as in the parser."""
        if outer and self._delimiter(outer).match(self.raw, at):
            return None
        return own.match(self.raw, at)

    def multipart(self, pos: int, boundary: str, outer: tuple[str, ...], ctype: str,
                  depth: int) -> int:
        own = self._delimiter((boundary,))
        inner = (*outer, boundary)
        at = self._next_delimiter(pos, inner)
        first = None if at is None else self._own(own, at, outer)
        if at is None or first is None or first.group(1):
            raise _GiveUp("no opening delimiter")
        while True:
            part = self._line_end(self.raw, at)
            if own.match(self.raw, part):
                raise _GiveUp("repeated delimiter")
            at = self.entity(part, inner, ctype, depth + 1)
            delimiter = self._own(own, at, outer)
            if delimiter is None:
                raise _GiveUp("part ended by an outer delimiter")
            if delimiter.group(1):
                break
        # The epilogue runs to the next delimiter of an enclosing multipart.
        after = self._line_end(self.raw, at)
        end = self._next_delimiter(after, outer)
        if end is None:
            if outer:
                raise _GiveUp("multipart runs to the end of the message")
            end = len(self.raw)
        return end


def _wire(boundary: str) -> bytes:
    """A boundary as the bytes on the wire (the parser read them as ASCII
    with surrogate escapes); a decoded RFC 2231 one may not encode."""
    try:
        return boundary.encode("ascii", "surrogateescape")
    except UnicodeError as exc:
        raise _GiveUp("boundary not on the wire as written") from exc
