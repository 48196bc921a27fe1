"""Pure rules of the messages service: no I/O, so they are tested directly."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import MessageSent
from switchboard_contracts.models import CreateChat, MessageOut
from switchboard_runtime.http_errors import ApiError

__all__ = ["ChatState", "DomainError", "chat_members_for", "check_membership_change", "next_message"]


class DomainError(ApiError):
    """A rule was broken; the HTTP layer answers with the code's status."""


@dataclass(frozen=True)
class ChatState:
    id: UUID
    type: str
    version: int
    last_seq: int


def chat_members_for(creator: str, request: CreateChat) -> list[str]:
    """The member list of a new chat: the creator always belongs; a direct chat has exactly two."""
    members = list(dict.fromkeys([creator, *request.members]))
    if request.type == "direct" and len(members) != 2:
        raise DomainError(
            ErrorCode.BAD_REQUEST,
            f"a direct chat has exactly two members, got {len(members)} including the caller",
        )
    return members


def check_membership_change(chat: ChatState) -> None:
    if chat.type == "direct":
        raise DomainError(ErrorCode.BAD_REQUEST, "the members of a direct chat cannot change")


def next_message(chat: ChatState, sent: MessageSent, now: datetime) -> MessageOut:
    """The message a send becomes: the chat's next seq, a fresh unguessable id."""
    return MessageOut(
        id=uuid4(),
        chat_id=chat.id,
        seq=chat.last_seq + 1,
        sender_id=sent.sender_id,
        content=sent.content,
        message_type=sent.message_type,
        reply_to=sent.reply_to,
        created_at=now,
    )
