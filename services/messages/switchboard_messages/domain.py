"""Pure rules of the messages service: no I/O, so they are tested directly."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import MessageSent
from switchboard_contracts.ids import new_id
from switchboard_contracts.models import ChatSync, CreateChat, MessageOut
from switchboard_runtime.http_errors import ApiError

__all__ = [
    "BatchFacts",
    "ChatState",
    "DomainError",
    "Outcome",
    "Refused",
    "Repeated",
    "Stored",
    "chat_members_for",
    "plan_chat_sync",
    "check_membership_change",
    "next_message",
    "plan_sends",
]


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
        id=new_id(),
        chat_id=chat.id,
        seq=chat.last_seq + 1,
        sender_id=sent.sender_id,
        content=sent.content,
        message_type=sent.message_type,
        reply_to=sent.reply_to,
        created_at=now,
    )


@dataclass(frozen=True)
class Stored:
    message: MessageOut
    # The chat stream's version this message's event takes in the log.
    version: int


@dataclass(frozen=True)
class Repeated:
    """A retry of a send already stored: answered with the first message, nothing written."""

    message: MessageOut


@dataclass(frozen=True)
class Refused:
    code: ErrorCode
    reason: str


Outcome = Stored | Repeated | Refused


@dataclass
class BatchFacts:
    """What the database said about a batch of sends, read in a few set-based queries."""

    chats: dict[UUID, ChatState]
    memberships: set[tuple[UUID, str]]
    stored: dict[tuple[str, str], MessageOut]
    replies: set[tuple[UUID, UUID]] = field(default_factory=set)


def plan_sends(sends: Sequence[MessageSent], facts: BatchFacts, now: datetime) -> list[Outcome]:
    """Decide every send of a batch in order: its seq, a retry, or a refusal.

    Pure: it reads `facts` and advances `facts.chats` (version, last seq) as messages are
    placed, and records new messages in `facts.stored` so a retry later in the same batch is
    recognised. The caller writes the result.
    """
    outcomes: list[Outcome] = []
    for sent in sends:
        key = (sent.sender_id, str(sent.temp_id))
        chat = facts.chats.get(sent.chat_id)
        if key in facts.stored:
            outcomes.append(Repeated(facts.stored[key]))
        elif chat is None:
            outcomes.append(Refused(ErrorCode.CHAT_NOT_FOUND, f"no chat {sent.chat_id}"))
        elif (chat.id, sent.sender_id) not in facts.memberships:
            outcomes.append(Refused(ErrorCode.NOT_A_MEMBER, f"you are not a member of chat {chat.id}"))
        elif sent.reply_to is not None and (chat.id, sent.reply_to) not in facts.replies:
            reason = f"reply_to {sent.reply_to} is not a message of this chat"
            outcomes.append(Refused(ErrorCode.BAD_REQUEST, reason))
        else:
            message = next_message(chat, sent, now)
            facts.chats[chat.id] = ChatState(chat.id, chat.type, chat.version + 1, message.seq)
            facts.stored[key] = message
            facts.replies.add((chat.id, message.id))
            outcomes.append(Stored(message, chat.version + 1))
    return outcomes


def plan_chat_sync(
    chat_id: UUID,
    *,
    joined_seq: int,
    end_seq: int,
    seen: int | None,
    since_seq: int | None,
    unread: int,
    limit: int,
) -> ChatSync:
    """What one chat of a sync sends: every message after what the device saw, or, past `limit`,
    the newest `limit` of them (`compacted`: the client pages the older ones from history).

    A chat the device does not name starts at `since_seq` (the last seq before its `since`), else
    at the beginning; nothing before the user joined is ever sent.
    """
    start = max(joined_seq, seen if seen is not None else (since_seq or 0))
    missed = max(0, end_seq - start)
    if missed == 0:
        return ChatSync(chat_id=chat_id, result="replayed", from_seq=None, to_seq=None, unread=unread)
    if missed > limit:
        return ChatSync(
            chat_id=chat_id, result="compacted", from_seq=end_seq - limit + 1, to_seq=end_seq, unread=unread
        )
    return ChatSync(chat_id=chat_id, result="replayed", from_seq=start + 1, to_seq=end_seq, unread=unread)
