from datetime import UTC, datetime
from uuid import uuid4

import pytest

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import MessageSent, Origin
from switchboard_contracts.models import CreateChat
from switchboard_messages.domain import (
    BatchFacts,
    ChatState,
    DomainError,
    Refused,
    Repeated,
    Stored,
    chat_members_for,
    check_membership_change,
    next_message,
    plan_sends,
)


def test_creator_is_always_a_member_once() -> None:
    members = chat_members_for("ann", CreateChat(type="group", members=["bob", "ann", "bob"]))
    assert members == ["ann", "bob"]


@pytest.mark.parametrize("others", [[], ["bob", "cy"], ["ann"]])
def test_direct_chat_needs_exactly_two_members(others: list[str]) -> None:
    with pytest.raises(DomainError) as caught:
        chat_members_for("ann", CreateChat(type="direct", members=others))
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_direct_chat_members_cannot_change() -> None:
    with pytest.raises(DomainError):
        check_membership_change(ChatState(uuid4(), "direct", 1, 0))
    check_membership_change(ChatState(uuid4(), "group", 1, 0))


def test_next_message_takes_the_next_seq_and_a_fresh_id() -> None:
    chat = ChatState(uuid4(), "group", 7, 41)
    sent = MessageSent(
        chat_id=chat.id,
        sender_id="ann",
        temp_id="t1",
        content="hi",
        message_type="text",
        reply_to=None,
        origin=Origin(gateway_id="g", session_id="s"),
    )
    now = datetime.now(UTC)
    first, second = next_message(chat, sent, now), next_message(chat, sent, now)
    assert first.seq == 42 and first.chat_id == chat.id and first.created_at == now
    assert first.id != second.id


def _send(chat: ChatState, sender: str, temp_id: str, **extra: object) -> MessageSent:
    return MessageSent.model_validate(
        {
            "chat_id": chat.id,
            "sender_id": sender,
            "temp_id": temp_id,
            "content": "hi",
            "message_type": "text",
            "reply_to": None,
            "origin": {"gateway_id": "g", "session_id": "s"},
            **extra,
        }
    )


def test_a_batch_gets_consecutive_seqs_per_chat_and_refusals_take_none() -> None:
    one, two = ChatState(uuid4(), "group", 3, 10), ChatState(uuid4(), "group", 1, 0)
    facts = BatchFacts(
        chats={one.id: one, two.id: two}, memberships={(one.id, "ann"), (two.id, "ann")}, stored={}
    )
    sends = [
        _send(one, "ann", "a"),
        _send(two, "ann", "b"),
        _send(one, "bob", "c"),  # not a member
        _send(one, "ann", "d"),
        _send(one, "ann", "a"),  # a retry of the first, in the same batch
    ]
    outcomes = plan_sends(sends, facts, datetime.now(UTC))
    assert [type(o).__name__ for o in outcomes] == ["Stored", "Stored", "Refused", "Stored", "Repeated"]
    stored = [o for o in outcomes if isinstance(o, Stored)]
    assert [(o.message.chat_id, o.message.seq, o.version) for o in stored] == [
        (one.id, 11, 4),
        (two.id, 1, 2),
        (one.id, 12, 5),
    ]
    assert isinstance(outcomes[4], Repeated) and outcomes[4].message == stored[0].message
    assert facts.chats[one.id] == ChatState(one.id, "group", 5, 12)


def test_unknown_chat_and_foreign_reply_are_refused() -> None:
    chat = ChatState(uuid4(), "group", 1, 0)
    facts = BatchFacts(chats={chat.id: chat}, memberships={(chat.id, "ann")}, stored={})
    ghost = ChatState(uuid4(), "group", 1, 0)
    outcomes = plan_sends(
        [_send(ghost, "ann", "a"), _send(chat, "ann", "b", reply_to=uuid4())], facts, datetime.now(UTC)
    )
    assert [o.code for o in outcomes if isinstance(o, Refused)] == [
        ErrorCode.CHAT_NOT_FOUND,
        ErrorCode.BAD_REQUEST,
    ]
