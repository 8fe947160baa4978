from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.ingest.inbound import Address, InboundEmail
from helpdesk.ingest.parse import parse_email
from helpdesk.threading.reference import find_subject_references, subject_key
from helpdesk.threading.resolve import (
    DEFAULT_REOPEN_WINDOW,
    Facts,
    Resolution,
    TicketFacts,
    chain_candidates,
    referenced_ids,
    resolve,
    signed_chain_refs,
    thread_topic_key,
    tokens_in,
)
from helpdesk.threading.tokens import make_message_id, reply_address

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SUPPORT = "support@example.test"
SECRET = "unit-test-secret"
CUSTOMER = "cust@example.org"
A, B, C = "HD-000001", "HD-000002", "HD-000003"


def mail(
    *,
    sender: str = CUSTOMER,
    msgid: str = "new@example.org",
    irt: tuple[str, ...] = (),
    refs: tuple[str, ...] = (),
    to: tuple[str, ...] = (SUPPORT,),
    cc: tuple[str, ...] = (),
    delivered_to: tuple[str, ...] = (),
    x_original_to: tuple[str, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> InboundEmail:
    return InboundEmail(
        message_id=msgid,
        subject="whatever",
        from_=Address(addr=sender),
        to=tuple(Address(addr=a) for a in to),
        cc=tuple(Address(addr=a) for a in cc),
        delivered_to=tuple(Address(addr=a) for a in delivered_to),
        x_original_to=tuple(Address(addr=a) for a in x_original_to),
        in_reply_to=irt,
        references=refs,
        headers=headers,
    )


def ticket(
    reference: str,
    status: str = "open",
    closed_at: datetime | None = None,
    participants: tuple[str, ...] = (CUSTOMER,),
) -> TicketFacts:
    return TicketFacts(reference, status, closed_at, frozenset(participants))


def known(*tickets: TicketFacts) -> dict[str, TicketFacts]:
    return {t.reference: t for t in tickets}


# --- what the shell asks the database ---------------------------------------


def test_chain_candidates_order_in_reply_to_then_references_newest_first_then_own() -> None:
    m = mail(msgid="me@x", irt=("p1@x", "p2@x"), refs=("r1@x", "r2@x", "p1@x", "r3@x"))
    assert chain_candidates(m) == ["p1@x", "p2@x", "r3@x", "r2@x", "r1@x", "me@x"]


def test_chain_candidates_without_a_message_id() -> None:
    assert chain_candidates(mail(msgid="", refs=("r@x",))) == ["r@x"]


def test_referenced_ids_are_the_pointers_without_the_mail_itself() -> None:
    m = mail(msgid="me@x", irt=("p@x",), refs=("r1@x", "p@x", "me@x"))
    assert referenced_ids(m) == ["p@x", "r1@x"]


def test_an_address_in_an_old_style_in_reply_to_is_not_an_id() -> None:
    # RFC 822 clients wrote a phrase here; parse_email finds the <...> in it.
    raw = (
        b"From: Carl <carl@example.org>\r\n"
        b"To: Ann <ann@example.org>, support@example.test\r\n"
        b"Subject: Re: hello\r\n"
        b"Message-ID: <c1@example.org>\r\n"
        b"In-Reply-To: Message from Ann <ann@example.org> of Mon\r\n"
        b"References: <a1@example.org>\r\n"
        b"\r\nhi\r\n"
    )
    parsed = parse_email(raw)
    assert "ann@example.org" in parsed.in_reply_to
    assert chain_candidates(parsed) == ["a1@example.org", "c1@example.org"]
    assert referenced_ids(parsed) == ["a1@example.org"]


def test_tokens_in_reads_every_recipient_header_in_order() -> None:
    token_a = reply_address(SUPPORT, A, SECRET)
    token_b = reply_address(SUPPORT, B, SECRET)
    token_c = reply_address(SUPPORT, C, SECRET)
    local, _, domain = token_c.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
    m = mail(
        to=(SUPPORT, forged),
        cc=(token_b.upper(),),
        delivered_to=(token_a, "support+note@example.test"),
        x_original_to=(token_b, token_c),
    )
    assert tokens_in(m, SUPPORT, SECRET) == (B, A, C)


def test_tokens_in_ignores_tokens_made_with_another_secret() -> None:
    m = mail(to=(reply_address(SUPPORT, A, "old secret"),))
    assert tokens_in(m, SUPPORT, SECRET) == ()


def test_signed_chain_refs_decode_our_own_message_ids_only() -> None:
    ours = make_message_id(A, "example.test", SECRET, "o1")
    forged = ours.replace("HD-000001", "HD-000002")
    m = mail(irt=(forged,), refs=("x@example.org", ours))
    assert signed_chain_refs(m, "example.test", SECRET) == {ours: A}


def test_thread_topic_key_comes_from_the_thread_topic_header() -> None:
    m = mail(headers=(("thread-index", "AdqX"), ("thread-topic", "Drucker kaputt")))
    assert thread_topic_key(m) == subject_key("AW: [HD-000001] Drucker kaputt")
    assert thread_topic_key(mail()) is None
    assert thread_topic_key(mail(headers=(("thread-topic", "RE:"),))) is None


# --- the decision -------------------------------------------------------------


def test_no_evidence_opens_a_new_ticket() -> None:
    assert resolve(mail(), Facts(), NOW) == Resolution("new", None, None)


def test_a_token_wins_over_the_chain_and_the_subject() -> None:
    facts = Facts(
        token_refs=(A,),
        chain_refs={"p@x": B},
        subject_refs=(C,),
        tickets=known(ticket(A), ticket(B), ticket(C)),
    )
    result = resolve(mail(irt=("p@x",)), facts, NOW)
    assert (result.action, result.reference, result.matched_by) == ("reply", A, "token")
    assert result.mentions == (C,)


def test_a_token_works_for_a_sender_who_is_not_on_the_ticket() -> None:
    facts = Facts(token_refs=(A,), tickets=known(ticket(A, participants=("x@y.org",))))
    assert resolve(mail(), facts, NOW).reference == A


def test_a_token_for_a_ticket_that_no_longer_exists_is_no_evidence() -> None:
    facts = Facts(token_refs=(A,), chain_refs={"p@x": B}, tickets=known(ticket(B)))
    result = resolve(mail(irt=("p@x",)), facts, NOW)
    assert (result.reference, result.matched_by) == (B, "message_id")


def test_the_chain_is_followed_in_priority_order() -> None:
    m = mail(irt=("parent@x",), refs=("root@x", "middle@x"))
    facts = Facts(chain_refs={"root@x": A, "middle@x": B}, tickets=known(ticket(A), ticket(B)))
    # The parent is unknown (never received): the newest known ancestor wins.
    assert resolve(m, facts, NOW).reference == B
    facts = Facts(chain_refs={"root@x": A, "parent@x": C}, tickets=known(ticket(A), ticket(C)))
    assert resolve(m, facts, NOW).reference == C


def test_apple_mail_rewritten_references_still_match_through_any_id() -> None:
    m = mail(irt=("unknown@x",), refs=("apple-1@x", "apple-2@x", "ours@x"))
    facts = Facts(chain_refs={"apple-1@x": A}, tickets=known(ticket(A)))
    assert resolve(m, facts, NOW).reference == A


def test_the_mail_s_own_message_id_joins_a_ticket_that_already_knows_it() -> None:
    facts = Facts(chain_refs={"dup@x": A}, tickets=known(ticket(A)))
    result = resolve(mail(msgid="dup@x"), facts, NOW)
    assert (result.reference, result.matched_by) == (A, "message_id")


def test_a_subject_reference_counts_for_a_participant() -> None:
    facts = Facts(subject_refs=(A,), tickets=known(ticket(A)))
    result = resolve(mail(), facts, NOW)
    assert (result.action, result.reference, result.matched_by) == ("reply", A, "subject")
    assert result.mentions == ()


def test_a_subject_reference_from_a_stranger_opens_a_ticket_that_mentions_it() -> None:
    facts = Facts(subject_refs=(A,), tickets=known(ticket(A)))
    result = resolve(mail(sender="stranger@evil.test"), facts, NOW)
    assert result == Resolution("new", None, None, mentions=(A,))


def test_a_subject_reference_counts_for_verified_staff() -> None:
    facts = Facts(subject_refs=(A,), tickets=known(ticket(A)), is_staff_verified=True)
    result = resolve(mail(sender="agent@example.test"), facts, NOW)
    assert (result.reference, result.matched_by) == (A, "subject")


def test_the_first_usable_subject_reference_wins_and_the_rest_are_mentions() -> None:
    facts = Facts(
        subject_refs=(A, B, C),
        tickets=known(ticket(A, participants=("x@y.org",)), ticket(B), ticket(C)),
    )
    result = resolve(mail(), facts, NOW)
    assert (result.reference, result.mentions) == (B, (A, C))


def test_a_subject_agreeing_with_the_chain_is_not_a_mention() -> None:
    facts = Facts(
        chain_refs={"p@x": A},
        subject_refs=(A, B),
        tickets=known(ticket(A, participants=()), ticket(B, participants=())),
    )
    result = resolve(mail(sender="stranger@evil.test", irt=("p@x",)), facts, NOW)
    assert (result.reference, result.matched_by, result.mentions) == (A, "message_id", (B,))


def test_unknown_subject_references_are_not_mentioned() -> None:
    facts = Facts(subject_refs=(A,))
    assert resolve(mail(), facts, NOW) == Resolution("new", None, None)


def test_thread_topic_matches_only_a_ticket_the_sender_is_on() -> None:
    facts = Facts(thread_topic_refs=(A, B), tickets=known(ticket(A, participants=()), ticket(B)))
    result = resolve(mail(), facts, NOW)
    assert (result.reference, result.matched_by) == (B, "thread_topic")
    facts = Facts(thread_topic_refs=(A,), tickets=known(ticket(A, participants=())))
    assert resolve(mail(), facts, NOW).action == "new"


def test_an_explicit_subject_reference_beats_a_thread_topic() -> None:
    facts = Facts(thread_topic_refs=(A,), subject_refs=(B,), tickets=known(ticket(A), ticket(B)))
    assert resolve(mail(), facts, NOW).matched_by == "subject"


@pytest.mark.parametrize("status", ["new", "open", "pending"])
def test_a_reply_to_an_active_ticket_does_not_reopen(status: str) -> None:
    facts = Facts(token_refs=(A,), tickets=known(ticket(A, status)))
    assert resolve(mail(), facts, NOW) == Resolution("reply", A, "token")


def test_a_reply_to_a_resolved_ticket_reopens_it() -> None:
    facts = Facts(token_refs=(A,), tickets=known(ticket(A, "resolved")))
    assert resolve(mail(), facts, NOW) == Resolution("reply", A, "token", reopen=True)


@pytest.mark.parametrize(
    ("closed_ago", "window", "expected"),
    [
        (timedelta(days=1), DEFAULT_REOPEN_WINDOW, "reply"),
        (timedelta(days=30), DEFAULT_REOPEN_WINDOW, "reply"),  # "more than" 30 days
        (timedelta(days=30, seconds=1), DEFAULT_REOPEN_WINDOW, "new_linked"),
        (timedelta(days=400), DEFAULT_REOPEN_WINDOW, "new_linked"),
        (timedelta(days=8), timedelta(days=7), "new_linked"),
        (timedelta(days=-1), DEFAULT_REOPEN_WINDOW, "reply"),  # clock skew
    ],
)
def test_a_reply_to_a_closed_ticket_depends_on_when_it_closed(
    closed_ago: timedelta, window: timedelta, expected: str
) -> None:
    facts = Facts(chain_refs={"p@x": A}, tickets=known(ticket(A, "closed", NOW - closed_ago)))
    result = resolve(mail(irt=("p@x",)), facts, NOW, reopen_window=window)
    if expected == "reply":
        assert result == Resolution("reply", A, "message_id", reopen=True)
    else:
        assert result == Resolution("new_linked", None, "message_id", linked_to=A)


def test_a_closed_ticket_with_no_closing_time_is_not_reopened() -> None:
    facts = Facts(token_refs=(A,), tickets=known(ticket(A, "closed")))
    assert resolve(mail(), facts, NOW).action == "new_linked"


def test_a_naive_closing_time_is_read_as_utc() -> None:
    closed = (NOW - timedelta(days=29, hours=23)).replace(tzinfo=None)
    facts = Facts(token_refs=(A,), tickets=known(ticket(A, "closed", closed)))
    assert resolve(mail(), facts, NOW).action == "reply"


def test_linked_new_ticket_keeps_the_mentions() -> None:
    facts = Facts(
        token_refs=(A,),
        subject_refs=(A, B),
        tickets=known(ticket(A, "closed", NOW - timedelta(days=90)), ticket(B)),
    )
    result = resolve(mail(), facts, NOW)
    assert result == Resolution("new_linked", None, "token", mentions=(B,), linked_to=A)


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_verified_staff_neither_reopen_nor_split_off_a_ticket(status: str) -> None:
    long_ago = NOW - timedelta(days=365)
    facts = Facts(
        token_refs=(A,), tickets=known(ticket(A, status, long_ago)), is_staff_verified=True
    )
    assert resolve(mail(sender="agent@example.test"), facts, NOW) == Resolution("reply", A, "token")


def test_now_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError):
        resolve(mail(), Facts(), NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "reply", "reference": None, "matched_by": "token"},
        {"action": "new", "reference": A, "matched_by": None},
        {"action": "new", "reference": None, "matched_by": "token"},
        {"action": "new_linked", "reference": None, "matched_by": "token"},
        {"action": "new", "reference": None, "matched_by": None, "linked_to": A},
        {"action": "new", "reference": None, "matched_by": None, "reopen": True},
    ],
)
def test_resolution_refuses_inconsistent_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Resolution(**kwargs)  # type: ignore[arg-type]


# --- properties over arbitrary evidence ---------------------------------------

refs = st.sampled_from([A, B, C, "HD-000004"])
statuses = st.sampled_from(["new", "open", "pending", "resolved", "closed"])
people = st.sampled_from([CUSTOMER, "other@example.org", "agent@example.test"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[InboundEmail, Facts]:
    ids = ["p1@x", "p2@x", "p3@x", "me@x"]
    m = mail(
        sender=draw(people),
        msgid="me@x",
        irt=tuple(draw(st.lists(st.sampled_from(ids[:3]), max_size=1))),
        refs=tuple(draw(st.lists(st.sampled_from(ids[:3]), max_size=3))),
    )
    tickets = {
        r: TicketFacts(
            r,
            draw(statuses),
            draw(st.one_of(st.none(), st.just(NOW - timedelta(days=draw(st.integers(0, 90)))))),
            frozenset(draw(st.lists(people, max_size=2))),
        )
        for r in draw(st.lists(refs, unique=True))
    }
    facts = Facts(
        token_refs=tuple(draw(st.lists(refs, unique=True, max_size=2))),
        chain_refs=draw(st.dictionaries(st.sampled_from(ids), refs)),
        thread_topic_refs=tuple(draw(st.lists(refs, unique=True, max_size=2))),
        subject_refs=tuple(draw(st.lists(refs, unique=True, max_size=3))),
        tickets=tickets,
        is_staff_verified=draw(st.booleans()),
    )
    return m, facts


@given(scenarios())
def test_resolution_follows_the_evidence_in_order(scenario: tuple[InboundEmail, Facts]) -> None:
    m, facts = scenario
    result = resolve(m, facts, NOW)
    found = result.reference or result.linked_to
    sender = m.sender_addr

    def may_use(ref: str) -> bool:
        return facts.is_staff_verified or sender in facts.tickets[ref].participants

    tokens = [r for r in facts.token_refs if r in facts.tickets]
    chained = [facts.chain_refs[i] for i in chain_candidates(m) if i in facts.chain_refs]
    chained = [r for r in chained if r in facts.tickets]
    subject = [r for r in facts.subject_refs if r in facts.tickets and may_use(r)]
    topic = [r for r in facts.thread_topic_refs if r in facts.tickets and may_use(r)]
    if tokens:
        assert (found, result.matched_by) == (tokens[0], "token")
    elif chained:
        assert (found, result.matched_by) == (chained[0], "message_id")
    elif subject:
        assert (found, result.matched_by) == (subject[0], "subject")
    elif topic:
        assert (found, result.matched_by) == (topic[0], "thread_topic")
    else:
        assert result.action == "new"
        assert found is None
    assert found not in result.mentions
    assert set(result.mentions) <= set(facts.tickets)
    if found is not None:
        state = facts.tickets[found]
        assert result.reopen == (
            result.action == "reply"
            and state.status in ("resolved", "closed")
            and not facts.is_staff_verified
        )
        if result.action == "new_linked":
            assert state.status == "closed" and not facts.is_staff_verified


# --- end to end over parsed mail ------------------------------------------------


def test_a_parsed_reply_finds_its_ticket_by_token_and_by_signed_message_id() -> None:
    ours = make_message_id(A, "example.test", SECRET, "out1")
    token = reply_address(SUPPORT, A, SECRET)
    raw = (
        f"From: Customer <{CUSTOMER}>\r\n"
        f"To: Support <{token}>\r\n"
        f"Subject: AW: [{A}] Drucker kaputt\r\n"
        f"Message-ID: <c2@example.org>\r\n"
        f"In-Reply-To: <{ours}>\r\n"
        f"References: <c1@example.org> <{ours}>\r\n"
        "\r\nStill broken.\r\n"
    ).encode()
    m = parse_email(raw)
    facts = Facts(
        token_refs=tokens_in(m, SUPPORT, SECRET),
        chain_refs=signed_chain_refs(m, "example.test", SECRET),
        subject_refs=tuple(find_subject_references(m.subject, "HD")),
        tickets=known(ticket(A, "resolved")),
    )
    assert facts.token_refs == (A,)
    assert facts.chain_refs == {ours: A}
    assert resolve(m, facts, NOW) == Resolution("reply", A, "token", reopen=True)
    # Without the token (a client that replied to From), the signed id suffices.
    no_token = Facts(chain_refs=facts.chain_refs, tickets=facts.tickets)
    assert resolve(m, no_token, NOW).matched_by == "message_id"


def test_apple_mail_overwritten_references_still_thread_by_in_reply_to() -> None:
    """Apple Mail may replace References with ids of its own draft history;
    the In-Reply-To pointing at our signed Message-ID still decides."""
    ours = make_message_id(A, "example.test", SECRET, "u1")
    m = mail(irt=(ours,), refs=("draft-1@icloud.test", "draft-2@icloud.test"))
    chain = signed_chain_refs(m, "example.test", SECRET)
    assert chain == {ours: A}
    result = resolve(m, Facts(chain_refs=chain, tickets=known(ticket(A))), now=NOW)
    assert (result.action, result.reference, result.matched_by) == ("reply", A, "message_id")


def test_apple_mail_references_holding_only_the_thread_root_still_thread() -> None:
    """When References was cut to its first element (the original mail), the
    stored root id places the reply, even though the parent is unknown."""
    m = mail(irt=("unknown-parent@example.org",), refs=("root@example.org",))
    facts = Facts(chain_refs={"root@example.org": A}, tickets=known(ticket(A)))
    result = resolve(m, facts, now=NOW)
    assert (result.action, result.reference) == ("reply", A)
