from datetime import UTC, datetime
from uuid import uuid4

import pytest

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import MessageSent, Origin
from switchboard_contracts.models import CreateChat
from switchboard_messages.domain import (
    ChatState,
    DomainError,
    chat_members_for,
    check_membership_change,
    next_message,
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
