"""Events on the bus: one envelope, past-tense versioned types, a payload model each.

The envelope carries the CloudEvents 1.0 core attributes (`id`, `type`, `source`, `time`,
`specversion`). Consumers de-duplicate on `id`; an incompatible payload change gets a new
type (`...v2`) rather than a changed `v1`.
"""

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from .ids import new_id
from .models import ChatType, MessageOut

__all__ = [
    "EVENT_TYPES",
    "ChatReadMarked",
    "MessagesRead",
    "NotificationCancelled",
    "NotificationRequested",
    "FlushRequested",
    "ChatCreated",
    "ChatMemberAdded",
    "ChatMemberRemoved",
    "DeliveryAcked",
    "Envelope",
    "Event",
    "GatewayHeartbeat",
    "MessageSent",
    "MessageStored",
    "Origin",
    "SessionClosed",
    "SessionOpened",
    "SessionRegistered",
    "UserWentOffline",
    "UserWentOnline",
]


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every payload; `TYPE` starts the routing key and is the envelope's `type`.

    `PARTITION_BY` names the payload field (a dotted path into `data`) whose value decides the
    event's partition (`partitions.py`): the chat for what happens in a chat, the user for what
    happens to one user's sessions and devices. Events with the same key are handled in order,
    by one instance at a time; events with different keys may be handled side by side.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    PARTITION_BY: ClassVar[str]


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: UUID = Field(default_factory=new_id)
    type: str
    source: str
    time: datetime = Field(default_factory=_now)
    specversion: str = "1.0"
    data: dict[str, Any]

    @classmethod
    def wrap(cls, event: Event, source: str, event_id: UUID | None = None) -> "Envelope":
        """The envelope of a new event. Built without validation: every field is made here,
        and an `Event` is valid once constructed (validating it all again was a noticeable share
        of a busy gateway's CPU)."""
        return cls.model_construct(
            id=event_id or new_id(),
            type=event.TYPE,
            source=source,
            time=_now(),
            specversion="1.0",
            data=event.model_dump(mode="json"),
        )


class Origin(BaseModel):
    """The session a command came from, so an answer can be routed back to it."""

    model_config = ConfigDict(frozen=True)

    gateway_id: str
    session_id: str


class MessageSent(Event):
    TYPE = "chat.message.sent.v1"
    PARTITION_BY = "chat_id"

    chat_id: UUID
    sender_id: str
    temp_id: str | int
    content: str
    message_type: str
    reply_to: UUID | None
    origin: Origin


class MessageStored(Event):
    TYPE = "chat.message.stored.v1"
    PARTITION_BY = "message.chat_id"

    message: MessageOut
    temp_id: str | int
    origin: Origin


class ChatCreated(Event):
    TYPE = "chat.created.v1"
    PARTITION_BY = "chat_id"

    chat_id: UUID
    chat_type: ChatType
    title: str | None
    members: list[str]
    created_by: str
    created_at: datetime


class ChatMemberAdded(Event):
    TYPE = "chat.member.added.v1"
    PARTITION_BY = "chat_id"

    chat_id: UUID
    user_id: str
    by: str
    # The chat's last seq when the member was added: they receive (and are counted a recipient
    # of) the messages after it only.
    joined_seq: int = 0


class ChatMemberRemoved(Event):
    TYPE = "chat.member.removed.v1"
    PARTITION_BY = "chat_id"

    chat_id: UUID
    user_id: str
    by: str


class DeliveryAcked(Event):
    """A device confirmed it received these messages: those deliveries are done."""

    TYPE = "chat.delivery.acked.v1"
    # By user, not chat: one ack names messages of many chats. Delivery and messages handle it
    # beside the chats' partitions; docs/scaling.md says why that stays correct.
    PARTITION_BY = "user_id"

    user_id: str
    session_id: str
    message_ids: list[UUID]


class ChatReadMarked(Event):
    """A session marked a chat read up to `seq` (the client's `mark_read`); messages checks it."""

    TYPE = "chat.read.marked.v1"
    PARTITION_BY = "chat_id"

    chat_id: UUID
    user_id: str
    seq: int
    origin: Origin


class MessagesRead(Event):
    """Receipts: `user_id` read the chat up to `up_to_seq`; `message_ids` became read by it."""

    TYPE = "chat.messages.read.v1"
    # With the chat's messages in delivery: a read handled between a message and its
    # notification request keeps the request from being made at all.
    PARTITION_BY = "chat_id"

    chat_id: UUID
    user_id: str
    up_to_seq: int
    message_ids: list[UUID]


class NotificationRequested(Event):
    """A message was queued for a member with no online session: a push service may notify."""

    TYPE = "chat.notification.requested.v1"
    # A partitioned push service would keep one recipient's requests and cancellations in order.
    PARTITION_BY = "recipient_id"

    recipient_id: str
    chat_id: UUID
    message_id: UUID
    seq: int
    sender_id: str
    # Only when the deployment allows message text to leave for push providers.
    preview: str | None = None


class NotificationCancelled(Event):
    """A notification requested earlier is moot: a device of the recipient received or read it."""

    TYPE = "chat.notification.cancelled.v1"
    PARTITION_BY = "recipient_id"

    recipient_id: str
    chat_id: UUID
    message_id: UUID
    reason: Literal["delivered", "read"]


class SessionOpened(Event):
    TYPE = "gateway.session.opened.v1"
    PARTITION_BY = "user_id"

    session_id: str
    user_id: str
    gateway_id: str
    device_id: str | None = None
    # Names this catch-up: the pages delivery sends for it carry it, so a page left over from an
    # earlier catch-up of the same session is told apart and ignored.
    flush_id: str = ""


class SessionClosed(Event):
    TYPE = "gateway.session.closed.v1"
    PARTITION_BY = "user_id"

    session_id: str
    user_id: str
    gateway_id: str
    # When the connection closed, by the gateway's clock: the user's `last_seen` if it was their
    # last session.
    closed_at: datetime


class GatewayHeartbeat(Event):
    TYPE = "gateway.heartbeat.v1"
    # Presence, which is not partitioned, takes every partition; the key only spreads them.
    PARTITION_BY = "gateway_id"

    gateway_id: str
    sessions: int


class FlushRequested(Event):
    """A session took one page of its queue flush and has room for the next one."""

    TYPE = "gateway.flush.requested.v1"
    # With the user's session registrations: a user's catch-up pages come from one instance at a
    # time, in order.
    PARTITION_BY = "user_id"

    session_id: str
    user_id: str
    gateway_id: str
    flush_id: str
    # Delivery's position of the last message already flushed to this session.
    after_position: int
    # The `sb-cursor` of the page before, as it came: where each partition's part of the backlog
    # continues. Empty from a gateway that does not know it (delivery then continues after
    # `after_position` everywhere).
    after_cursor: str = ""


class SessionRegistered(Event):
    """Presence recorded a live session: what is queued for its user can now reach it."""

    TYPE = "presence.session.registered.v1"
    PARTITION_BY = "user_id"

    session_id: str
    user_id: str
    gateway_id: str
    user_went_online: bool
    flush_id: str = ""


class UserWentOnline(Event):
    TYPE = "presence.user.online.v1"
    PARTITION_BY = "user_id"

    user_id: str
    session_id: str
    gateway_id: str


class UserWentOffline(Event):
    TYPE = "presence.user.offline.v1"
    PARTITION_BY = "user_id"

    user_id: str
    last_seen: datetime


EVENT_TYPES: dict[str, type[Event]] = {
    model.TYPE: model
    for model in (
        MessageSent,
        MessageStored,
        ChatCreated,
        ChatMemberAdded,
        ChatMemberRemoved,
        DeliveryAcked,
        ChatReadMarked,
        MessagesRead,
        NotificationRequested,
        NotificationCancelled,
        SessionOpened,
        SessionClosed,
        GatewayHeartbeat,
        SessionRegistered,
        FlushRequested,
        UserWentOnline,
        UserWentOffline,
    )
}
