"""The shapes clients see: a stored message, a chat, and the HTTP request bodies."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "AddMember",
    "ChatOut",
    "ChatType",
    "CreateChat",
    "ErrorBody",
    "HistoryPage",
    "MessageOut",
    "UserId",
]

# User ids come from the JWT `sub` claim; the bound keeps routing keys and rows small.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ChatType = Literal["direct", "group"]


class MessageOut(BaseModel):
    """A stored message as every client sees it."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    chat_id: UUID
    seq: int
    sender_id: str
    content: str
    message_type: str
    reply_to: UUID | None
    created_at: datetime


class ChatOut(BaseModel):
    id: UUID
    type: ChatType
    title: str | None
    members: list[str]
    created_at: datetime


class CreateChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ChatType
    title: Annotated[str, StringConstraints(max_length=256)] | None = None
    # 10,000 keeps one chat's fan-out bounded; the largest group the benchmarks target is 5,000.
    members: Annotated[list[UserId], Field(max_length=10_000)]


class AddMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId


class HistoryPage(BaseModel):
    messages: list[MessageOut]
    # Pass as `before_seq` to fetch the page before this one; null when there is none.
    next_before_seq: int | None


class ErrorBody(BaseModel):
    code: str
    message: str
