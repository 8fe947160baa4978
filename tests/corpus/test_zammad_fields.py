"""Parsed fields measured against zammad's expected parse of its own test mail.

zammad's ``test/data/mail/mailNNN.box`` files each have a ``mailNNN.yml``
beside them: zammad's Channel::EmailParser result (from, from_email,
from_display_name, subject, body, content_type, attachments), serialised as
Ruby YAML. For every field the yml holds, our ``parse_email`` is compared
with it; the share of fields that agree is recorded on the scorecard and
asserted against the target.

How each field is compared (zammad's own conventions are undone where they
are presentation, never where they are content):

* from address: ``from_email`` against ``from_.addr``, case-insensitively
  (RFC 5321 §2.4: domains are case-insensitive; we lower-case the whole).
* from name: ``from_display_name``, only where zammad gives one, against
  ``from_.name``; Unicode NFC, runs of whitespace collapsed.
* subject: ``subject`` (a missing one is ""), NFC, whitespace collapsed.
* body start: the first BODY_CHARS letters and digits of the body each
  side would show. Theirs is ``body``, rendered with our ``html_to_text``
  when zammad's content_type is text/html; zammad writes "no visible
  content" when it found no body, which means "". Ours is
  ``html_to_text(mail.html)`` when the mail has HTML (zammad too prefers
  HTML), else ``mail.text``. Only letters and digits count: zammad
  re-structures HTML (html2html_strict: tables, blocks, link attributes)
  before we render it, so punctuation and layout differ while the text
  does not; a wrong part, a wrong charset or lost text still changes the
  letters. Link targets ("[text](url)" in the rendering) are attributes,
  not text, and zammad's sanitiser copies each href into a title, so they
  are left out on both sides. The sanitiser also keeps the HTML <title> as
  the body's first line, which mail clients do not show and neither do we:
  a leading copy of the mail's own <title> is removed from theirs.
* attachments: the multiset of the names the sender gave (NFC). zammad
  lists the HTML body again as an attachment ("message.html", marked
  ``content-alternative``): left out. For a part without a name zammad makes
  one up (app/models/channel/email_parser.rb, get_attachments): the
  Content-ID's local part, "<subject>.eml" for message/rfc822, "image.jpg",
  "document.html", "delivery-status.txt" or "<Content-Description>.<ext>" by
  content type, else "file"; and it makes a repeated name unique by putting
  a counter before the first dot ("a.png", "a1.png"). A made-up name is
  left out when the part's Content-Type carries no ``name``; a counter is
  taken off again. Ours are the attachments with a non-empty filename (a
  part without a name keeps an empty one). The field counts for every mail
  where either side has a named attachment or zammad lists any.
"""

from __future__ import annotations

import base64
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from helpdesk.errors import BadMessageError
from helpdesk.ingest.html import html_to_text
from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.ingest.parse import parse_email
from tests.corpus.scorecard import record

MAIL_DIR = "zammad/test/data/mail"
BODY_CHARS = 100
TARGET = 0.95
NO_BODY = "no visible content"  # zammad's body when it found none

# zammad's content-type -> (extension, stand-in name) table for nameless parts.
ZAMMAD_TYPE_NAMES = {
    "message/delivery-status": ("txt", "delivery-status"),
    "text/plain": ("txt", "document"),
    "text/html": ("html", "document"),
    "video/quicktime": ("mov", "video"),
    "image/jpeg": ("jpg", "image"),
    "image/jpg": ("jpg", "image"),
    "image/png": ("png", "image"),
    "image/gif": ("gif", "image"),
}


# libyaml's parser when PyYAML was built with it: 5x faster on these files.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RubyYamlLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """Safe loading of Ruby YAML: ``!ruby/...`` tagged nodes become plain
    mappings, sequences or strings, and ``!binary`` becomes bytes."""


def _ruby_node(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _binary_node(loader: yaml.SafeLoader, node: yaml.Node) -> bytes:
    return base64.b64decode(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


RubyYamlLoader.add_multi_constructor("!ruby/", _ruby_node)
RubyYamlLoader.add_constructor("!binary", _binary_node)


@dataclass(frozen=True)
class Check:
    sample: str
    field: str
    ok: bool
    expected: object
    got: object


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


# A rendered link's target: "](url)" or "](url "title")", one level of
# parentheses allowed inside the url.
_LINK_TARGET_RE = re.compile(r"\]\((?:[^()]|\([^()]*\))*\)")


def _rendered(markup: str) -> str:
    return _LINK_TARGET_RE.sub("]", html_to_text(markup))


def _significant(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFC", text) if c.isalnum())


_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)


def _their_body(expected: dict[str, Any], ours_html: str) -> str:
    body = str(expected.get("body") or "")
    if body.strip() == NO_BODY:
        return ""
    if expected.get("content_type") == "text/html":
        body = _rendered(body)
    text = _significant(body)
    title = _TITLE_RE.search(ours_html)
    if title:
        prefix = _significant(html.unescape(re.sub(r"<[^>]*>", "", title.group(1))))
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def _our_body(mail: InboundEmail) -> str:
    return _significant(_rendered(mail.html) if mail.html.strip() else mail.text)


def _uniquified_from(name: str, earlier: list[str]) -> str:
    """The name zammad started from before making ``name`` unique."""
    for original in earlier:
        local, dot, ext = original.partition(".")
        pattern = re.escape(local) + r"[1-9]\d{0,3}" + (re.escape("." + ext) if dot else "")
        if re.fullmatch(pattern, name):
            return original
    return name


def _is_made_up(name: str, preferences: dict[str, Any]) -> bool:
    content_type = str(preferences.get("Content-Type") or "")
    if re.search(r"\bname\*?\s*=", content_type, re.I):
        return False
    mime = str(preferences.get("Mime-Type") or content_type.split(";")[0]).strip().lower()
    description = str(preferences.get("Content-Description") or "")
    content_id = str(preferences.get("Content-ID") or "")
    made_up = {"file"}
    if "@" in content_id:
        made_up.add(content_id.split("@", 1)[0])
    if mime in ZAMMAD_TYPE_NAMES:
        ext, stand_in = ZAMMAD_TYPE_NAMES[mime]
        made_up.add(f"{description or stand_in}.{ext}")
    if mime == "message/rfc822" and name.endswith(".eml"):
        return True
    return name in made_up


def _their_attachment_names(expected: dict[str, Any]) -> tuple[list[str], int]:
    """Sender-given names in zammad's list, and how many entries it lists
    besides its copy of the HTML body."""
    names: list[str] = []
    originals: list[str] = []
    listed = 0
    for item in expected.get("attachments") or []:
        preferences = item.get("preferences") or {}
        name = unicodedata.normalize("NFC", str(item.get("filename") or ""))
        original = _uniquified_from(name, originals)
        originals.append(original)
        if preferences.get("content-alternative"):
            continue
        listed += 1
        if not _is_made_up(original, preferences):
            names.append(original)
    return names, listed


def _compare(sample: str, expected: dict[str, Any], mail: InboundEmail) -> Iterator[Check]:
    from_addr = mail.from_.addr if mail.from_ else ""
    from_name = mail.from_.name if mail.from_ else ""
    want_addr = str(expected.get("from_email") or "").strip().lower()
    if want_addr:
        yield Check(sample, "from address", from_addr == want_addr, want_addr, from_addr)
    want_name = _norm(str(expected.get("from_display_name") or ""))
    if want_name:
        got = _norm(from_name)
        yield Check(sample, "from name", got == want_name, want_name, got)
    if "subject" in expected:
        want = _norm(str(expected.get("subject") or ""))
        got = _norm(mail.subject)
        yield Check(sample, "subject", got == want, want, got)
    if "body" in expected:
        want = _their_body(expected, mail.html)[:BODY_CHARS]
        got = _our_body(mail)
        ok = got.startswith(want) if want else not got
        yield Check(sample, "body start", ok, want, got[:BODY_CHARS])
    if "attachments" in expected:
        want_names, listed = _their_attachment_names(expected)
        got_names = [unicodedata.normalize("NFC", a.filename) for a in mail.attachments]
        got_names = [n for n in got_names if n]
        if listed or got_names:
            ok = Counter(want_names) == Counter(got_names)
            yield Check(sample, "attachment names", ok, sorted(want_names), sorted(got_names))


def _samples(corpora: Path) -> list[tuple[str, dict[str, Any], bytes]]:
    folder = corpora / MAIL_DIR
    # The corpora are there (the fixture skips otherwise): a missing part of
    # them is a broken checkout, not a reason to measure nothing.
    assert folder.is_dir(), f"zammad mail corpus not found at {folder}"
    out = []
    for expected_path in sorted(folder.glob("*.yml")):
        box = expected_path.with_suffix(".box")
        if not box.is_file():
            continue
        expected = yaml.load(expected_path.read_text(encoding="utf-8"), Loader=RubyYamlLoader)
        assert isinstance(expected, dict), expected_path.name
        out.append((expected_path.stem, expected, box.read_bytes()))
    return out


def test_zammad_fields_as_expected(corpora: Path) -> None:
    samples = _samples(corpora)
    assert len(samples) >= 100, "the zammad corpus should hold about 106 expected parses"
    checks = [
        check
        for sample, expected, raw in samples
        for check in _compare(sample, expected, parse_email(raw))
    ]
    ok = sum(c.ok for c in checks)
    total = len(checks)
    assert total
    share = ok / total
    per_field: dict[str, list[int]] = {}
    for check in checks:
        tally = per_field.setdefault(check.field, [0, 0])
        tally[0] += check.ok
        tally[1] += 1
    print(f"zammad fields: {ok}/{total} ({share:.1%})")
    for name, (good, count) in per_field.items():
        print(f"  {name}: {good}/{count} ({good / count:.1%})")
    failures = [c for c in checks if not c.ok]
    for c in failures:
        print(f"  MISS {c.sample} {c.field}: expected {c.expected!r}, got {c.got!r}")
    record(
        "fields as expected (from, subject, body start, attachments)",
        "zammad .box vs .yml",
        f"{ok}/{total} ({share:.1%})",
        ">= 95%",
        share >= TARGET,
    )
    assert share >= TARGET, "fields that differ: " + ", ".join(
        f"{c.sample} {c.field}" for c in failures
    )


def test_ruby_yaml_loader_reads_tagged_values() -> None:
    text = (
        "--- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "subject: Hi\n"
        "attachments:\n"
        "- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\n"
        "  data: !binary |-\n"
        "    aGVsbG8=\n"
        "  filename: a.txt\n"
    )
    loaded = yaml.load(text, Loader=RubyYamlLoader)
    assert loaded == {"subject": "Hi", "attachments": [{"data": b"hello", "filename": "a.txt"}]}


def test_zammad_made_up_names_are_recognised_and_counters_removed() -> None:
    expected = {
        "attachments": [
            {"filename": "message.html", "preferences": {"content-alternative": True}},
            {"filename": "image.jpg", "preferences": {"Mime-Type": "image/jpeg"}},
            {"filename": "a.png", "preferences": {"Content-Type": "image/png; name=a.png"}},
            {"filename": "a1.png", "preferences": {"Content-Type": "image/png; name=a.png"}},
            {"filename": "Mail.eml", "preferences": {"Mime-Type": "message/rfc822"}},
            {"filename": "x", "preferences": {"Content-ID": "x@host", "Mime-Type": "image/x"}},
            {"filename": "photo.jpg", "preferences": {"Mime-Type": "image/jpeg"}},
        ]
    }
    names, listed = _their_attachment_names(expected)
    assert listed == 6
    assert sorted(names) == ["a.png", "a.png", "photo.jpg"]


# --- The parser behaviours the zammad corpus exercises, pinned on small
# --- synthetic mails so that they hold where the corpus is absent.


def _mail(headers: str, body: bytes = b"body\n") -> bytes:
    return headers.strip().replace("\n", "\r\n").encode("ascii") + b"\r\n\r\n" + body


def test_gb2312_label_decodes_gbk_characters() -> None:
    # "內應力" needs GBK: 內 (0x83C8) is outside GB2312 proper.
    encoded = base64.b64encode("內應力".encode("gbk")).decode()
    raw = _mail(
        f"From: a@example.com\nSubject: =?GB2312?B?{encoded}?=\n"
        'Content-Type: text/plain; charset="GB2312"',
        "特色 內應力".encode("gbk"),
    )
    mail = parse_email(raw)
    assert mail.subject == "內應力"
    assert mail.text == "特色 內應力"


def test_iso_2022_jp_with_windows_rows_and_mislabelled_shift_jis() -> None:
    # JIS X 0208 row 13 (NEC "①") is outside Python's iso2022_jp codec.
    jis = b"\x1b$B-!#1ET\x1b(B"
    raw = _mail("From: a@example.com\nContent-Type: text/plain; charset=ISO-2022-JP", jis)
    assert parse_email(raw).text == "①１都"
    sjis = base64.b64encode("ツール".encode("cp932")).decode()
    raw = _mail(f"From: =?ISO-2022-JP?B?{sjis}?= <bar@example.org>\nSubject: x")
    from_ = parse_email(raw).from_
    assert from_ is not None and from_.name == "ツール"


def test_raw_8bit_headers_and_filenames() -> None:
    head = (
        "From: Ups R\u00e9mi <r@example.com>\nSubject: \u00e9l\u00e9gibilit\u00e9\n"
        'Content-Type: multipart/mixed; boundary="b"'
    )
    part = 'Content-Type: image/jpeg\r\nContent-Disposition: attachment; filename="Hofj\xe4ger.jpg"'
    raw = (
        head.replace("\n", "\r\n").encode("utf-8")
        + b"\r\n\r\n--b\r\n"
        + part.encode("latin-1")
        + b"\r\n\r\nxx\r\n--b--\r\n"
    )
    mail = parse_email(raw)
    assert mail.from_ is not None and mail.from_.name == "Ups Rémi"
    assert mail.subject == "élégibilité"
    assert [a.filename for a in mail.attachments] == ["Hofjäger.jpg"]


def test_attachment_name_forms() -> None:
    parts = [
        "Content-Type: text/plain; name*=utf-8''Erkl%C3%A4rung.txt",
        'Content-Type: image/jpg; name=" =?ISO-8859-1?B?QmVzdORsbHVuZw==?=.jpg"',
        "Content-Type: image/jpeg; name*=us-ascii''W%F6lbung.jpg",
        'Content-Type: application/pdf\nContent-Disposition: attachment; filename="a  b.pdf"',
        "Content-Type: image/png\nContent-ID: <img1@host>\nContent-Disposition: inline",
    ]
    body = "".join(f"--b\n{p}\nContent-Transfer-Encoding: base64\n\naGk=\n" for p in parts)
    raw = _mail(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        (body + "--b--\n").replace("\n", "\r\n").encode(),
    )
    attachments = parse_email(raw).attachments
    assert [a.filename for a in attachments] == [
        "Erklärung.txt",
        "Beställung.jpg",
        "Wölbung.jpg",  # an 8-bit byte under a us-ascii label is windows-1252
        "a  b.pdf",  # the sender's name as written
        "",  # no name given: none made up
    ]
    assert attachments[-1].content_id == "img1@host" and attachments[-1].inline
    assert attachments[0].payload == b"hi"


def test_broken_encoded_words_are_decoded() -> None:
    raw = _mail(
        "From: =?iso-8859-1?Q?B=FCrling, =20Andreas?= <smith@example.com>\n"
        "Subject: Benachrichtung zum\n =?unicode-1-1-utf-7?Q?+ANw-bermittlungsstatus\n"
        " (Fehlgeschlagen)?="
    )
    mail = parse_email(raw)
    assert mail.subject == "Benachrichtung zum Übermittlungsstatus (Fehlgeschlagen)"
    assert mail.from_ is not None
    assert (mail.from_.addr, mail.from_.name) == ("smith@example.com", "Bürling, Andreas")
    # One character split across two encoded-words (RFC 2047 §5 forbids it).
    halves = "ä".encode()
    first, second = (base64.b64encode(halves[:1]).decode(), base64.b64encode(halves[1:]).decode())
    raw = _mail(f"From: a@example.com\nSubject: =?utf-8?B?{first}?= =?utf-8?B?{second}?=")
    assert parse_email(raw).subject == "ä"


def test_broken_header_block_is_repaired() -> None:
    raw = _mail(
        "---- Original email message ----\n"
        "X-Tracker: H4sIAAAAAAAAA\n"
        "Ig5drOCwmrVzP5sDoseXbDeYAxijWzLyk\n"
        "From: Karoline <k@example.com>\n"
        "Subject: AW: One Net Business\n"
        "Content-Type: multipart/alternative;\n"
        'boundary="x"',
        b"--x\r\nContent-Type: text/plain\r\n\r\nsome text\r\n--x--\r\n",
    )
    mail = parse_email(raw)
    assert mail.from_ is not None and mail.from_.addr == "k@example.com"
    assert mail.subject == "AW: One Net Business"
    assert mail.text == "some text"


def test_attached_message_is_an_attachment_not_body() -> None:
    inner = "From: x@example.com\r\nSubject: inner\r\n\r\ninner text\r\n"
    raw = _mail(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        (
            "--b\r\nContent-Type: text/plain\r\n\r\nouter text\r\n"
            f"--b\r\nContent-Type: message/rfc822\r\n\r\n{inner}--b--\r\n"
        ).encode(),
    )
    mail = parse_email(raw)
    assert mail.text == "outer text"
    assert [(a.filename, a.content_type) for a in mail.attachments] == [("", "message/rfc822")]
    assert b"inner text" in mail.attachments[0].payload


def test_sender_stand_ins_and_display_name_comments() -> None:
    raw = _mail('From: "=?GB2312?B?ztI=?=" <>\nReply-To: <vip@126.com>\nSubject: x')
    assert parse_email(raw).from_ == Address("vip@126.com", "我")
    raw = _mail("From: MAILER-DAEMON (Mail Delivery System) <postmaster@example.com>")
    assert parse_email(raw).from_ == Address("postmaster@example.com", "MAILER-DAEMON")
    raw = _mail('From: "Marcus Smith (ABC)" <m@example.com>')
    assert parse_email(raw).from_ == Address("m@example.com", "Marcus Smith (ABC)")
    raw = _mail("From: Martin <redacted@redacted>")
    assert parse_email(raw).from_ == Address("redacted@redacted", "Martin")


def test_html_rendering_of_mail_layout() -> None:
    markup = (
        "<table><tr><td>Von:</td><td>Max</td></tr><tr><td>An</td><td>Eike</td></tr></table>"
        "<p>1. Advent</p><p>--&nbsp;<br>Sig</p>"
        '<a href="http://x.example/b"><img src="cid:a"></a><p></p><p></p><p>end</p>'
    )
    assert html_to_text(markup) == "Von: Max\nAn Eike\n\n1. Advent\n\n--\nSig\n\nend"


@given(st.binary(max_size=600))
@settings(max_examples=300, deadline=None)
def test_parse_email_only_raises_bad_message_error(raw: bytes) -> None:
    try:
        mail = parse_email(b"Content-Type: multipart/mixed; boundary=b\r\n" + raw)
    except BadMessageError:
        return
    assert len(mail.text) <= 1_000_000 and all(len(a.filename) <= 255 for a in mail.attachments)
