from __future__ import annotations

import pytest

from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.ingest.parse import parse_email
from helpdesk.threading.staff import (
    is_aligned,
    is_staff_address,
    parse_authentication_results,
    verify_sender,
)

OURS = "mx.example.test"
STAFF = ("alice@example.test", "@staff.example.test", " Bob@Partner.Example ")


def mail_from(addr: str, *auth_results: str) -> InboundEmail:
    return InboundEmail(
        message_id="m@x",
        subject="s",
        from_=Address(addr=addr),
        headers=tuple(("authentication-results", value) for value in auth_results),
    )


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("alice@example.test", True),
        ("ALICE@Example.Test", True),
        ("carol@example.test", False),  # only alice is listed at example.test
        ("anyone@staff.example.test", True),
        ("anyone@sub.staff.example.test", False),  # subdomains are not included
        ("anyone@evilstaff.example.test", False),
        ("bob@partner.example", True),
        ("alice@example.test.evil", False),
        ("", False),
        ("alice", False),
        ("@staff.example.test", False),
    ],
)
def test_is_staff_address(addr: str, expected: bool) -> None:
    assert is_staff_address(addr, STAFF) is expected


def test_no_staff_configured_means_nobody_is_staff() -> None:
    assert not is_staff_address("alice@example.test", [])


def test_trust_staff_from_skips_verification() -> None:
    result = verify_sender(mail_from("alice@example.test"), OURS, trust_staff_from=True)
    assert result.verified
    assert "trust_staff_from" in result.reason


@pytest.mark.parametrize(
    "header",
    [
        f"{OURS}; dkim=pass header.d=example.test header.s=sel",
        f"{OURS}; dkim=pass header.i=@example.test",
        f"{OURS}; dkim=pass header.i=alice@mail.example.test",
        f"{OURS}; dkim=pass header.d=EXAMPLE.TEST.",
        # Relaxed alignment: a parent signs for a child and the other way.
        f"{OURS}; dkim=pass header.d=corp.example.test",
        f"{OURS} 1; dkim/1 = pass (2048-bit key; secure) header.d=example.test",
        f'{OURS}; dkim=pass reason="good; really" header.d="example.test"',
        f"{OURS.upper()}; dkim=pass header.d=example.test",
        f"{OURS}; dkim=fail header.d=example.test; dkim=pass header.d=example.test",
        f"{OURS}; spf=pass smtp.mailfrom=example.test; dmarc=pass header.from=example.test",
        f"{OURS}; spf=pass smtp.mailfrom=bounce.example.test; dmarc=pass header.from=example.test",
    ],
)
def test_authenticated_from_domains_are_verified(header: str) -> None:
    result = verify_sender(mail_from("alice@example.test", header), OURS, False)
    assert result.verified, result.reason


def test_a_child_from_domain_aligns_with_a_parent_signature() -> None:
    header = f"{OURS}; dkim=pass header.d=example.test"
    assert verify_sender(mail_from("alice@eu.example.test", header), OURS, False).verified


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (f"{OURS}; dkim=pass header.d=evil.test", "signed by another domain"),
        (f"{OURS}; dkim=pass header.d=badexample.test", "suffix without a dot boundary"),
        (f"{OURS}; dkim=pass header.d=test", "a single-label public suffix"),
        (f"{OURS}; dkim=pass", "no signing domain given"),
        (f"{OURS}; dkim=fail header.d=example.test", "failed"),
        (f"{OURS}; dkim=neutral header.d=example.test", "neutral"),
        (f"{OURS}; spf=pass smtp.mailfrom=example.test", "SPF alone"),
        (f"{OURS}; dmarc=pass header.from=example.test", "DMARC without SPF"),
        (f"{OURS}; spf=pass; dmarc=pass header.from=evil.test", "DMARC for another domain"),
        (f"{OURS}; spf=softfail; dmarc=pass", "SPF not passed"),
        (f"{OURS}; spf=pass; dmarc=pass", "DMARC not saying which domain it checked"),
        (f"{OURS}; none", "no results"),
        ("mx.evil.test; dkim=pass header.d=example.test", "forged: another authserv-id"),
        (f"{OURS}.evil; dkim=pass header.d=example.test", "authserv-id that merely starts alike"),
        ("(mx.example.test) x; dkim=pass header.d=example.test", "our id only in a comment"),
        (f"{OURS}; (dkim=pass header.d=example.test) dkim=fail", "the pass is a comment"),
        (f'{OURS}; dkim=fail reason="dkim=pass header.d=example.test"', "the pass is quoted"),
    ],
)
def test_unauthenticated_mail_is_not_verified(header: str, why: str) -> None:
    result = verify_sender(mail_from("alice@example.test", header), OURS, False)
    assert not result.verified, why


def test_results_may_be_spread_over_several_of_our_headers() -> None:
    mail = mail_from(
        "alice@example.test",
        f"{OURS}; spf=pass smtp.mailfrom=alice@example.test",
        "mx.evil.test; dkim=pass header.d=example.test",
        f"{OURS}; dmarc=pass (p=reject) header.from=example.test",
    )
    assert verify_sender(mail, OURS, False).verified


def test_a_forged_header_does_not_help_when_ours_says_fail() -> None:
    mail = mail_from(
        "alice@example.test",
        f"{OURS}; dkim=fail header.d=example.test; spf=fail",
        "mx.evil.test; dkim=pass header.d=example.test; spf=pass; dmarc=pass",
    )
    result = verify_sender(mail, OURS, False)
    assert not result.verified
    assert "dkim=fail" in result.reason


def test_no_from_or_no_authserv_id_is_never_verified() -> None:
    header = f"{OURS}; dkim=pass header.d=example.test"
    no_from = InboundEmail(message_id="m", subject="s", from_=None)
    assert not verify_sender(no_from, OURS, False).verified
    assert not verify_sender(mail_from("alice@example.test", header), "", False).verified


def test_verification_reads_a_real_folded_header() -> None:
    raw = (
        b"Authentication-Results: mx.example.test;\r\n"
        b"\tdkim=pass (2048-bit key; unprotected)\r\n"
        b"\t  header.d=example.test header.i=@example.test\r\n"
        b'\t  header.b="AbC/dEf+1";\r\n'
        b"\tspf=none smtp.mailfrom=alice@example.test\r\n"
        b"Authentication-Results: mx.evil.test; dkim=pass header.d=example.test\r\n"
        b"From: Alice <alice@example.test>\r\n"
        b"To: support@example.test\r\n"
        b"Subject: #status resolved\r\n"
        b"Message-ID: <a1@example.test>\r\n"
        b"\r\n"
        b"body\r\n"
    )
    result = verify_sender(parse_email(raw), OURS, False)
    assert result.verified, result.reason
    assert "example.test" in result.reason


def test_parse_authentication_results_follows_rfc_8601() -> None:
    parsed = parse_authentication_results(
        'mx.example.test 1; (comment (nested \\) still)) dkim = pass reason="ok; fine" '
        "header.d=Example.Test header.s=s1; spf=pass smtp.mailfrom=a@example.test; "
        "auth=pass (PLAIN) smtp.auth=alice"
    )
    assert parsed is not None
    assert parsed.authserv_id == "mx.example.test"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("auth", "pass"),
    ]
    assert parsed.results[0].prop("header.d") == "Example.Test"
    assert parsed.results[0].prop("reason") == ""
    assert parsed.results[1].prop("smtp.mailfrom") == "a@example.test"


@pytest.mark.parametrize("value", ["", "   ", "; dkim=pass", "(only a comment)"])
def test_parse_authentication_results_without_an_authserv_id(value: str) -> None:
    assert parse_authentication_results(value) is None


@pytest.mark.parametrize(
    ("signer", "from_domain", "expected"),
    [
        ("example.test", "example.test", True),
        ("example.test", "a.b.example.test", True),
        ("a.example.test", "example.test", True),
        ("a.example.test", "b.example.test", False),
        ("xample.test", "example.test", False),
        ("test", "example.test", False),
        ("", "example.test", False),
        ("bücher.example", "xn--bcher-kva.example", True),
    ],
)
def test_is_aligned(signer: str, from_domain: str, expected: bool) -> None:
    assert is_aligned(signer, from_domain) is expected


@pytest.mark.parametrize(
    "value",
    [
        f"=?us-ascii?q?{OURS}?=; dkim=pass header.d=staff.example.test",
        "=?utf-8?b?bXguZXhhbXBsZS50ZXN0OyBka2ltPXBhc3MgaGVhZGVyLmQ9c3RhZmYuZXhhbXBsZS50ZXN0?=",
        f"{OURS}; dkim=pass header.d==?us-ascii?q?staff.example.test?=",
    ],
)
def test_encoded_words_in_authentication_results_verify_nothing(value: str) -> None:
    """RFC 2047 §5 allows no encoded-words in a structured field: our server
    never read this as its own verdict, so it left it in place."""
    raw = (f"From: x@staff.example.test\r\nAuthentication-Results: {value}\r\n"
           "Message-ID: <m@x>\r\nSubject: s\r\n\r\nhi\r\n").encode()
    mail = parse_email(raw)
    assert mail.header_all("authentication-results") == (value,)
    assert not verify_sender(mail, OURS, trust_staff_from=False).verified
    # The same verdict written out, as our server writes it, is believed.
    plain = raw.replace(value.encode(), f"{OURS}; dkim=pass header.d=staff.example.test".encode())
    assert verify_sender(parse_email(plain), OURS, trust_staff_from=False).verified
