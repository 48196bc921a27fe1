"""The shapes clients see: a stored message, a chat, and the HTTP request bodies."""

import unicodedata
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MAX_SEQ",
    "AddMember",
    "ChatSync",
    "HistoryMessage",
    "PresenceOut",
    "Receipt",
    "MessageReceipts",
    "ReceiptsRequest",
    "ReceiptStatus",
    "SyncPlan",
    "SyncRequest",
    "ChatOut",
    "ChatType",
    "CreateChat",
    "ErrorBody",
    "HistoryPage",
    "MessageOut",
    "UserId",
    "check_user_id",
]

# User ids come from the JWT `sub` claim. Each becomes a routing key `user.<id>`, and AMQP
# routing keys are at most 255 bytes: 128 characters and 200 UTF-8 bytes leave room.
MAX_USER_ID_CHARS = 128
MAX_USER_ID_BYTES = 200


def check_user_id(value: str) -> str:
    """The one rule for a user id, wherever one comes in (a token's `sub`, a request's body or
    path): 1 to 128 characters, at most 200 bytes of UTF-8, no control characters (NUL, which
    PostgreSQL text cannot hold, and the rest of Unicode's Cc: invisible, and ambiguous in logs)."""
    if not value or len(value) > MAX_USER_ID_CHARS or len(value.encode()) > MAX_USER_ID_BYTES:
        raise ValueError(
            f"a user id is 1 to {MAX_USER_ID_CHARS} characters and at most {MAX_USER_ID_BYTES} bytes of UTF-8"
        )
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("a user id must not contain control characters (U+0000 to U+001F, U+007F to U+009F)")
    return value


UserId = Annotated[str, AfterValidator(check_user_id)]
# seqs are PostgreSQL bigints: a larger number in a request is refused as `bad_request` rather
# than failing in the database.
MAX_SEQ = 2**63 - 1
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


ReceiptStatus = Literal["sent", "delivered", "read"]


class Receipt(BaseModel):
    user_id: str
    status: ReceiptStatus


class ReceiptsRequest(BaseModel):
    """What the gateway asks delivery about the caller's own messages of a history page."""

    # A history page is at most 200 messages.
    message_ids: Annotated[list[UUID], Field(max_length=200)]


class MessageReceipts(BaseModel):
    """Where each recipient of one message stands, and the totals."""

    message_id: UUID
    delivered_count: int
    read_count: int
    total: int
    receipts: list[Receipt]


class HistoryMessage(MessageOut):
    """A message in history. For the caller's own messages, where each recipient stands."""

    delivered_count: int | None = None
    read_count: int | None = None
    total: int | None = None
    receipts: list[Receipt] | None = None


class HistoryPage(BaseModel):
    messages: list[HistoryMessage]
    # Pass as `before_seq` to fetch the page before this one; null when there is none.
    next_before_seq: int | None


class ErrorBody(BaseModel):
    code: str
    message: str


class SyncRequest(BaseModel):
    """What the gateway asks messages for a device's `sync` (see `wire.Sync`)."""

    chats: dict[UUID, Annotated[int, Field(ge=0, le=MAX_SEQ)]] = {}
    since: datetime | None = None
    # The device's own bound on messages per chat; the server's limit caps it.
    limit: int | None = Field(None, ge=1)


class ChatSync(BaseModel):
    """One chat of a sync: the range the device will be sent, and what `sync_done` reports."""

    chat_id: UUID
    result: Literal["replayed", "compacted"]
    # The seqs to send, both inclusive; null when the device missed nothing.
    from_seq: int | None
    to_seq: int | None
    # Messages from others after this user's read marker.
    unread: int


class SyncPlan(BaseModel):
    chats: list[ChatSync]


class PresenceOut(BaseModel):
    user_id: str
    status: Literal["online", "offline"]
    # When the user was last online; null while online or when never seen.
    last_seen: datetime | None
