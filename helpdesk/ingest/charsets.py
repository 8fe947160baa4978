"""Text from bytes in whatever charset a mail claims. Pure code.

Labels are read as the WHATWG Encoding Standard reads them (``gb2312`` is
GBK, ``iso-8859-1`` and ``us-ascii`` are windows-1252, ``ks_c_5601-1987`` is
windows-949), because that is what the sending clients really used;
ISO-2022-JP is decoded with the Windows repertoire; a 7-bit label on 8-bit
data falls back to UTF-8 and then to the label's language family.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

_UTF8 = "utf-8"
_WIN1252 = "cp1252"
_ASCII = "ascii"
_ISO2022JP = "iso-2022-jp"  # decoded by _decode_iso2022jp, not by a Python codec

# Labels read as the WHATWG Encoding Standard §4.2 reads them: the legacy
# single-byte labels decode as windows-1252 and the East Asian ones as the
# superset the sending clients really used. 8-bit data under a US-ASCII
# label is mislabelled: UTF-8 is tried first, then windows-1252.
# decoder    labels
_LABEL_TABLE = """
cp1252       iso-8859-1 iso8859-1 iso_8859-1 iso-8859-1:1987 latin1 latin-1 l1 cp819 ibm819
             csisolatin1 iso-ir-100 windows-1252 x-cp1252 cp1252
gb18030      gb2312 gbk gb_2312 gb_2312-80 gb18030 chinese csgb2312 csiso58gb231280 iso-ir-58
             x-gbk cp936 ms936 windows-936 euc-cn x-euc-cn iso-gb2312
big5hkscs    big5 big5-hkscs cn-big5 csbig5 x-x-big5 x-big5
cp949        euc-kr cseuckr korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 csksc56011987
             iso-ir-149 windows-949 cp949 uhc
cp932        shift_jis shift-jis sjis x-sjis ms_kanji csshiftjis windows-31j ms932 cp932
euc_jp       euc-jp cseucpkdfmtjapanese x-euc-jp
iso-2022-jp  iso-2022-jp csiso2022jp iso2022jp
utf_7        utf-7 utf7 unicode-1-1-utf-7 csunicode11utf7 x-unicode-2-0-utf-7
ascii        us-ascii ascii ansi_x3.4-1968 us iso646-us csascii
utf-8        utf-8 utf8 unicode-1-1-utf-8 x-unicode20utf8
cp1254       iso-8859-9 iso8859-9 latin5 l5 csisolatin5 iso-ir-148
cp874        iso-8859-11 tis-620 windows-874 dos-874
"""


def _read_label_table(table: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    decoder = ""
    for line in table.strip().splitlines():
        words = line.split()
        if not line[:1].isspace():
            decoder, words = words[0], words[1:]
        labels.update(dict.fromkeys(words, decoder))
    return labels


_LABELS = _read_label_table(_LABEL_TABLE)
_UNDECLARED = frozenset({"", "unknown-8bit", "x-unknown", "unknown", "default", "x-user-defined"})
# Charsets that cannot carry 8-bit bytes: 8-bit data under them is mislabelled.
_SEVEN_BIT = frozenset({_ASCII, _ISO2022JP, "utf_7"})
# Where a strict decode fails, the charsets the same senders confuse it with.
_FAMILY: dict[str, tuple[str, ...]] = {
    _ISO2022JP: ("cp932", "euc_jp"),
    "cp932": ("euc_jp",),
    "euc_jp": ("cp932",),
    "gb18030": ("big5hkscs",),
    "big5hkscs": ("gb18030",),
    "cp949": (),
}
_MULTIBYTE = frozenset({*_FAMILY, _UTF8, "utf_7"})
_UTF8_MULTIBYTE_RE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def _lenient_latin1(err: UnicodeError) -> tuple[str, int]:
    """Error handler: the five bytes windows-1252 leaves undefined become the
    C1 controls of the same value, as the WHATWG decoder maps them."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error("helpdesk-latin1", _lenient_latin1)


def codec_for(label: str | None) -> str | None:
    """The decoder for a charset label, or None when undeclared or unknown."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    # RFC 2231 §5 lets a charset carry a language: "utf-8*en".
    name = name.split("*", 1)[0]
    if name in _UNDECLARED:
        return None
    if name in _LABELS:
        return _LABELS[name]
    if not name.isascii() or not name.isprintable() or len(name) > 40:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # Only text encodings: "base64" or "rot13" are codecs too.
    try:
        b"a".decode(info.name)
    except (LookupError, UnicodeError):
        return None
    return _LABELS.get(info.name, info.name)


def _strict(data: bytes, codec: str) -> str | None:
    if codec == _ISO2022JP:
        return _decode_iso2022jp(data)
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


def decode_text(data: bytes, label: str | None, fallbacks: Sequence[str] = ()) -> str:
    """Text from ``data`` declared as ``label``; never raises.

    The declared charset wins when it decodes cleanly. Otherwise, in order:
    its language family, UTF-8, the other charsets the message declares; and
    when nothing decodes cleanly, UTF-8 with replacement characters if the
    data is mostly UTF-8, else the declared charset (or windows-1252) with
    replacement characters.
    """
    if not data:
        return ""
    codec = codec_for(label)
    if data.isascii() and codec in (None, _ASCII, _UTF8, _WIN1252):
        return data.decode("ascii")
    if codec == _WIN1252:
        return data.decode(_WIN1252, "helpdesk-latin1")
    candidates: list[str] = []
    if codec is not None:
        candidates.append(codec)
        candidates.extend(_FAMILY.get(codec, ()))
    candidates.append(_UTF8)
    candidates.extend(fallbacks)
    seen: set[str] = set()
    for candidate in candidates:
        if candidate in seen or candidate == _WIN1252:
            continue
        seen.add(candidate)
        text = _strict(data, candidate)
        if text is not None:
            return text
    sequences = _UTF8_MULTIBYTE_RE.findall(data)
    stray = sum(1 for b in data if b >= 0x80) - sum(len(s) for s in sequences)
    if sequences and len(sequences) >= stray:
        return data.decode(_UTF8, "replace")
    if codec is None or codec in _SEVEN_BIT or codec == _UTF8:
        return data.decode(_WIN1252, "helpdesk-latin1")
    try:
        return data.decode(codec, "replace")
    except (LookupError, UnicodeError):
        return data.decode(_WIN1252, "helpdesk-latin1")


# ISO-2022-JP (RFC 1468) escape sequences: ASCII, JIS X 0201 Roman and
# Katakana, JIS X 0208 (1978 and 1983), JIS X 0212.
_ISO2022_ESC_RE = re.compile(rb"\x1b(\(B|\(J|\(I|\$@|\$B|\$\(D)")


def _decode_iso2022jp(data: bytes) -> str | None:
    """ISO-2022-JP with the Windows repertoire, or None when not ISO-2022-JP.

    Python's codec knows only JIS X 0208 proper, but the mail senders that
    label their text ISO-2022-JP (Outlook, Japanese webmail) use the NEC row
    13 (circled digits) and IBM extension rows too, as the WHATWG decoder's
    jis0208 index does. Each JIS X 0208 pair is moved to its Shift_JIS
    position and decoded as windows-31j, which holds all of them.
    """
    if not data.isascii():
        return None
    out = bytearray()
    mode = b"(B"
    pos = 0
    for match in [*_ISO2022_ESC_RE.finditer(data), None]:
        chunk = data[pos : match.start() if match else len(data)]
        if mode in (b"$@", b"$B"):
            out += _jis_to_sjis(chunk)
        elif mode == b"(I":
            out += bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
        elif mode == b"$(D":
            out += b"?" * (len(chunk) // 2)  # JIS X 0212 has no windows-31j form
        else:
            out += chunk
        if match is None:
            break
        mode = match.group(1)
        pos = match.end()
    if b"\x1b" in out:
        return None
    return out.decode("cp932", "replace")


def _jis_to_sjis(chunk: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(chunk):
        j1 = chunk[i]
        if not 0x21 <= j1 <= 0x7E or i + 1 >= len(chunk):
            out.append(j1)  # a stray line break inside two-byte mode
            i += 1
            continue
        j2 = chunk[i + 1]
        # JIS X 0208 row/cell to Shift_JIS: odd rows take the low half of a
        # lead byte's trail range, even rows the high half.
        s2 = j2 + 0x1F + (j2 >= 0x60) if j1 % 2 else j2 + 0x7E
        s1 = ((j1 + 1) >> 1) + 0x70
        if s1 >= 0xA0:
            s1 += 0x40
        out += bytes((s1, s2))
        i += 2
    return bytes(out)


def fallback_codecs(labels: Sequence[str | None]) -> tuple[str, ...]:
    """Codecs to try for undeclared 8-bit text, from the labels a message
    declares elsewhere, with their language family; multi-byte ones first,
    since a clean multi-byte decode is evidence and a single-byte one always
    succeeds."""
    found: list[str] = []
    for label in labels:
        codec = codec_for(label)
        if codec is None or codec in found:
            continue
        found.append(codec)
        found.extend(c for c in _FAMILY.get(codec, ()) if c not in found)
    return tuple(sorted(found, key=lambda c: c not in _MULTIBYTE))
