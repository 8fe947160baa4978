from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.threading import tokens
from helpdesk.threading.reference import format_reference
from helpdesk.threading.tokens import (
    TAG_LENGTH,
    make_message_id,
    parse_message_id,
    parse_reply_address,
    reply_address,
)

SUPPORT = "support@example.test"
SECRET = "s3cret-from-config"

references = st.builds(
    format_reference,
    st.from_regex(r"[A-Z][A-Z0-9]{0,4}", fullmatch=True),
    st.integers(min_value=0, max_value=10**12 - 1),
)
secrets = st.one_of(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
support_addresses = st.builds(
    "{}@{}".format,
    st.from_regex(r"[a-z][a-z0-9._-]{0,15}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,6}){1,2}", fullmatch=True),
)
uniques = st.from_regex(r"[A-Za-z0-9_-]{1,12}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True)


def test_reply_address_has_the_documented_shape() -> None:
    address = reply_address(SUPPORT, "HD-000123", SECRET)
    tag = f"[a-z2-7]{{{TAG_LENGTH}}}"
    assert re.fullmatch(rf"support\+HD-000123\.{tag}@example\.test", address)


@given(support_addresses, references, secrets)
def test_reply_address_round_trips(support: str, reference: str, secret: str | bytes) -> None:
    address = reply_address(support, reference, secret)
    assert parse_reply_address(address, support, secret) == reference
    # Some MTAs change the case of the whole address.
    assert parse_reply_address(address.lower(), support, secret) == reference
    assert parse_reply_address(address.upper(), support, secret) == reference
    assert parse_reply_address(f"<{address}>", support.upper(), secret) == reference


@given(references, st.data())
def test_any_changed_tag_character_is_refused(reference: str, data: st.DataObject) -> None:
    address = reply_address(SUPPORT, reference, SECRET)
    local, _, domain = address.rpartition("@")
    head, _, tag = local.rpartition(".")
    position = data.draw(st.integers(min_value=0, max_value=len(tag) - 1))
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
    forged = tag[:position] + replacement + tag[position + 1 :]
    expected = reference if forged == tag else None
    assert parse_reply_address(f"{head}.{forged}@{domain}", SUPPORT, SECRET) == expected


def test_a_tag_is_bound_to_its_reference_secret_and_mailbox() -> None:
    address = reply_address(SUPPORT, "HD-000123", SECRET)
    tag = address.split("@")[0].rpartition(".")[2]
    assert parse_reply_address(f"support+HD-000124.{tag}@example.test", SUPPORT, SECRET) is None
    assert parse_reply_address(address, SUPPORT, "another secret") is None
    assert parse_reply_address(address, "help@example.test", SECRET) is None
    other_domain = address.replace("example.test", "example.org")
    assert parse_reply_address(other_domain, "support@example.org", SECRET) is None


@pytest.mark.parametrize(
    "address",
    [
        "support@example.test",
        "support+note@example.test",
        "support+HD-000123@example.test",
        "support+HD-000123.@example.test",
        "support+HD-123.abcdefgh@example.test",
        "someone+HD-000123.abcdefgh@example.test",
        "support+HD-000123.abcdefgh@example.test",
        "not an address",
        "",
    ],
)
def test_parse_reply_address_refuses_what_is_not_a_valid_token(address: str) -> None:
    assert parse_reply_address(address, SUPPORT, SECRET) is None


def test_truncated_and_extended_tags_are_refused() -> None:
    address = reply_address(SUPPORT, "HD-000123", SECRET)
    local, _, domain = address.rpartition("@")
    assert parse_reply_address(f"{local[:-1]}@{domain}", SUPPORT, SECRET) is None
    assert parse_reply_address(f"{local}a@{domain}", SUPPORT, SECRET) is None


def test_an_empty_secret_is_a_configuration_error_not_a_weak_token() -> None:
    with pytest.raises(ValueError):
        reply_address(SUPPORT, "HD-000123", "")
    with pytest.raises(ValueError):
        make_message_id("HD-000123", "example.test", b"", "abc")


def test_message_id_has_the_documented_shape() -> None:
    msgid = make_message_id("HD-000123", "example.test", SECRET, "20240101.x1")
    tag = f"[a-z2-7]{{{TAG_LENGTH}}}"
    assert re.fullmatch(rf"hd\.HD-000123\.20240101\.x1\.{tag}@example\.test", msgid)


@given(references, uniques, secrets)
def test_message_id_round_trips(reference: str, unique: str, secret: str | bytes) -> None:
    msgid = make_message_id(reference, "mail.example.test", secret, unique)
    assert parse_message_id(msgid, "mail.example.test", secret) == reference
    assert parse_message_id(f"<{msgid}>", "MAIL.example.test", secret) == reference
    assert parse_message_id(msgid.lower(), "mail.example.test", secret) == reference


@given(references, uniques, st.data())
def test_message_id_tampering_is_refused(reference: str, unique: str, data: st.DataObject) -> None:
    msgid = make_message_id(reference, "example.test", SECRET, unique)
    left, _, domain = msgid.rpartition("@")
    position = data.draw(st.integers(min_value=0, max_value=len(left) - 1))
    replacement = data.draw(st.sampled_from("0123456789abcdefghijklmnopqrstuvwxyz-"))
    forged = left[:position] + replacement + left[position + 1 :]
    result = parse_message_id(f"{forged}@{domain}", "example.test", SECRET)
    assert result is None or forged.lower() == left.lower()


def test_message_ids_are_bound_to_domain_secret_and_unique_part() -> None:
    msgid = make_message_id("HD-000123", "example.test", SECRET, "one")
    assert parse_message_id(msgid, "example.org", SECRET) is None
    assert parse_message_id(msgid, "example.test", "other") is None
    assert parse_message_id(msgid.replace(".one.", ".two."), "example.test", SECRET) is None
    assert make_message_id("HD-000123", "example.test", SECRET, "two") != msgid


def test_a_reply_address_tag_is_not_a_message_id_tag() -> None:
    address = reply_address(SUPPORT, "HD-000123", SECRET)
    tag = address.split("@")[0].rpartition(".")[2]
    for unique in ("support", "x"):
        forged = f"hd.HD-000123.{unique}.{tag}@example.test"
        assert parse_message_id(forged, "example.test", SECRET) is None


@pytest.mark.parametrize(
    "msgid",
    [
        "",
        "abc@example.test",
        "hd.HD-000123.abcdefgh@example.test",  # no unique part
        "xx.HD-000123.u.abcdefgh@example.test",
        "hd.HD-000123.u.abcdefgh",
        "CAF=abc@mail.gmail.com",
    ],
)
def test_parse_message_id_refuses_other_ids(msgid: str) -> None:
    assert parse_message_id(msgid, "example.test", SECRET) is None


@pytest.mark.parametrize("unique", ["", "a@b", "a b", "a<b", "a..b", ".a", "a."])
def test_make_message_id_refuses_unsafe_unique_parts(unique: str) -> None:
    with pytest.raises(ValueError):
        make_message_id("HD-000123", "example.test", SECRET, unique)


@pytest.mark.parametrize("reference", ["HD-123", "HD 000123", "HD-000123.x", ""])
def test_tokens_refuse_non_canonical_references(reference: str) -> None:
    with pytest.raises(ValueError):
        reply_address(SUPPORT, reference, SECRET)
    with pytest.raises(ValueError):
        make_message_id(reference, "example.test", SECRET, "u")


@given(secret=st.text(min_size=1, max_size=40), label=st.binary(max_size=40),
       fields=st.lists(st.text(max_size=60), max_size=4))
def test_tags_are_the_leading_characters_of_the_whole_digest_in_base32(
        secret: str, label: bytes, fields: list[str]) -> None:
    """Tokens already in clients' mailboxes must keep verifying: a tag is the
    first TAG_LENGTH base32 characters of the whole HMAC-SHA256, however it
    is computed."""
    message = b"\0".join([label, *(f.encode("utf-8") for f in fields)])
    whole = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    expected = base64.b32encode(whole).decode("ascii").lower()[:tokens.TAG_LENGTH]
    assert tokens._tag(secret, label, *fields) == expected
