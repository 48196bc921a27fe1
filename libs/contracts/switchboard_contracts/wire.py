"""Client protocol v1: the frames a client sends and the frames it receives.

Every frame is a JSON text `{"event": "<name>", "data": {...}}` (docs/protocol.md).
"""

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic_core import to_json

from .errors import ErrorCode
from .models import MAX_SEQ, MessageOut

__all__ = [
    "CLIENT_EVENTS",
    "SERVER_EVENTS",
    "ChatRef",
    "ClientFrame",
    "MarkRead",
    "Sync",
    "Typing",
    "MessageReceived",
    "SendMessage",
    "UserAuthenticated",
    "encode_frame",
    "error_frame",
    "message_error_frame",
    "new_message_frame",
]


# Every event name of protocol v1, each documented in docs/protocol.md (a test checks it).
CLIENT_EVENTS = (
    "user_authenticated",
    "send_message",
    "message_received",
    "mark_read",
    "join_chat",
    "leave_chat",
    "typing",
    "sync",
)
SERVER_EVENTS = (
    "authenticated",
    "error",
    "new_message",
    "queue_flushed",
    "message_sent",
    "message_error",
    "message_delivery_info",
    "message_status",
    "read_marked",
    "chat_joined",
    "chat_left",
    "user_typing",
    "sync_done",
    "presence",
    "member_joined",
    "member_left",
)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refusing it here answers the client instead of
    # failing in storage after the send was accepted.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]

# tempIds are client-chosen; 128 characters fits any UUID, ULID or timestamp-based scheme.
# Strict: `true` is not tempId 1. Note that 5 and "5" are the same tempId for de-duplication.
TempId = Annotated[Text, StringConstraints(min_length=1, max_length=128)] | StrictInt


class ClientFrame(BaseModel):
    """The outer shape of every client frame; `data` is validated per event afterwards."""

    event: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    data: Any = None


class UserAuthenticated(BaseModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)]
    # Stored by presence with the session: no NUL, which PostgreSQL text cannot hold.
    device_id: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = None


class SendMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    chat_id: UUID
    # The upper bound is checked against the configured limit by the gateway, so it can answer
    # `content_too_long` rather than a generic `bad_request`.
    content: Annotated[Text, StringConstraints(min_length=1)]
    message_type: Annotated[Text, StringConstraints(min_length=1, max_length=32)] = "text"
    reply_to: UUID | None = None
    temp_id: TempId = Field(alias="tempId")


# A UUID's canonical text is 36 characters; a little room for braces or a URN prefix is harmless.
MESSAGE_ID_CHARS = 64


class MessageReceived(BaseModel):
    # One acknowledgement may cover a whole flushed backlog page; 1,000 bounds the work per frame.
    # Strings, not UUIDs: the gateway only looks each one up among the ids it sent this
    # connection, so a made-up or malformed id is ignored at the cost of a set lookup, where
    # parsing 1,000 UUIDs per frame was the gateway's largest cost under an acknowledgement flood.
    message_ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=MESSAGE_ID_CHARS)]],
        Field(min_length=1, max_length=1000),
    ]


class ChatRef(BaseModel):
    """`join_chat` / `leave_chat`: `{"chat_id": ...}`, or the bare chat id older clients send."""

    chat_id: UUID

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        return {"chat_id": data} if isinstance(data, str) else data


class Typing(BaseModel):
    chat_id: UUID
    is_typing: StrictBool


class MarkRead(BaseModel):
    chat_id: UUID
    seq: Annotated[StrictInt, Field(ge=1, le=MAX_SEQ)]


# One sync names at most this many chats: a device's whole chat list, bounded so that one frame
# cannot make the gateway plan an unbounded catch-up.
MAX_SYNC_CHATS = 10_000


def _in_utc_range(value: datetime) -> datetime:
    # "0001-01-01T00:00:00+14:00" is a valid time that is before year 1 in UTC, where the
    # database (and Python) cannot follow.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time between years 1 and 9999 in UTC") from None


class Sync(BaseModel):
    """`chats`: the last seq this device saw per chat; chats it does not name start at `since`
    (a time) when given, else at their beginning, both subject to the compaction limit."""

    model_config = ConfigDict(extra="forbid")

    chats: Annotated[
        dict[UUID, Annotated[StrictInt, Field(ge=0, le=MAX_SEQ)]], Field(max_length=MAX_SYNC_CHATS)
    ] = {}
    since: Annotated[AwareDatetime, AfterValidator(_in_utc_range)] | None = None
    # At most this many messages per chat (a phone on a metered link); the server's own
    # compaction limit applies when it is lower.
    limit: Annotated[StrictInt, Field(ge=1)] | None = None


def encode_frame(event: str, data: Any) -> bytes:
    return to_json({"event": event, "data": data})


def error_frame(code: ErrorCode, message: str) -> bytes:
    return encode_frame("error", {"code": code.value, "message": message})


def message_error_frame(
    temp_id: str | int | None, code: ErrorCode | str, message: str, retry_after: int | None = None
) -> bytes:
    data: dict[str, object] = {"tempId": temp_id, "code": str(code), "message": message}
    if retry_after is not None:
        data["retry_after"] = retry_after
    return encode_frame("message_error", data)


def new_message_frame(message: MessageOut) -> bytes:
    return encode_frame("new_message", message.model_dump(mode="json"))
