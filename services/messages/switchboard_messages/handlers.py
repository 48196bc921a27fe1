"""Event handlers of the messages service, routed by `HANDLERS`.

Each takes every event of its type in a run of the batch, and sees only its store and outbox.
Both are idempotent by what they write: a send is stored once per (sender, tempId), a read
marker only moves forward.
"""

from datetime import UTC, datetime
from uuid import UUID, uuid5

import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import (
    ChatReadMarked,
    Event,
    MessageSent,
    MessagesRead,
    MessageStored,
    Origin,
)
from switchboard_contracts.models import MessageOut
from switchboard_contracts.routing import Reply, Signal
from switchboard_contracts.wire import encode_frame, error_frame, message_error_frame
from switchboard_runtime.consumer import Handler
from switchboard_runtime.uow import Outbox, UnitOfWork

from .domain import Refused, Repeated, Stored, plan_sends
from .store import Store

__all__ = ["HANDLERS", "on_chat_read_marked", "on_messages_sent", "receipt_stream"]

log = structlog.get_logger()


def _reply(outbox: Outbox, origin: Origin, frame: bytes) -> None:
    outbox.route(Reply(frame, origin.gateway_id, origin.session_id))


def message_sent_frame(temp_id: str | int, message: MessageOut) -> bytes:
    return encode_frame("message_sent", {"tempId": temp_id, "message": message.model_dump(mode="json")})


async def on_messages_sent(sends: list[MessageSent], uow: UnitOfWork[Store]) -> None:
    """Store each send once, as its chat's next seq.

    Set-based: whatever the batch size, one statement locks the chats and reads their state,
    the senders' membership, earlier tempIds and reply targets; the events emitted here write
    the messages when the unit of work appends them (the messages table is a projection of the
    log). The rules are `plan_sends`, pure. A stored message's `message_sent` goes
    out with its delivery (delivery answers the sender once it has routed it); a refusal, or a
    retry of a send stored before, is answered from here.
    """
    store, outbox = uow.store, uow.outbox
    facts = await store.lock_for_sends(sends)
    outcomes = plan_sends(sends, facts, datetime.now(UTC))
    stored = [
        (sent, outcome) for sent, outcome in zip(sends, outcomes, strict=True) if isinstance(outcome, Stored)
    ]
    for sent, placed in stored:
        event = MessageStored(message=placed.message, temp_id=sent.temp_id, origin=sent.origin)
        outbox.emit(event, stream=(placed.message.chat_id, placed.version))
    for sent, outcome in zip(sends, outcomes, strict=True):
        if isinstance(outcome, Refused):
            log.info(
                "message rejected",
                code=outcome.code.value,
                chat_id=str(sent.chat_id),
                sender_id=sent.sender_id,
            )
            _reply(outbox, sent.origin, message_error_frame(sent.temp_id, outcome.code, outcome.reason))
        elif isinstance(outcome, Repeated):
            _reply(outbox, sent.origin, message_sent_frame(sent.temp_id, outcome.message))


def receipt_stream(chat_id: UUID, user_id: str) -> UUID:
    """The event-log stream of one member's read receipts in one chat (stable, derived)."""
    return uuid5(chat_id, user_id)


async def on_chat_read_marked(marks: list[ChatReadMarked], uow: UnitOfWork[Store]) -> None:
    for mark in marks:
        await _mark_read(mark, uow.store, uow.outbox)


async def _mark_read(event: ChatReadMarked, store: Store, outbox: Outbox) -> None:
    """Move the reader's marker forward; the reader's devices hear where it stands, and delivery
    (which knows who received what) tells the senders concerned."""
    chat_id, user_id = event.chat_id, event.user_id
    marker = await store.lock_marker(chat_id, user_id)
    if marker is None:
        exists = await store.chat_exists(chat_id)
        code = ErrorCode.NOT_A_MEMBER if exists else ErrorCode.CHAT_NOT_FOUND
        reason = f"you are not a member of chat {chat_id}" if exists else f"no chat {chat_id}"
        _reply(outbox, event.origin, error_frame(code, f"mark_read: {reason}"))
        return
    # Reading past the end reads up to the end; never before the user joined.
    up_to = min(event.seq, await store.last_seq(chat_id))
    read_seq = marker.read_seq
    after = max(read_seq, marker.joined_seq)
    if up_to > after:
        read = MessagesRead(
            chat_id=chat_id,
            user_id=user_id,
            up_to_seq=up_to,
            message_ids=await store.read_between(chat_id, user_id, after, up_to),
        )
        version = marker.version + 1
        outbox.emit(read, stream=(receipt_stream(chat_id, user_id), version))
        await store.save_marker(chat_id, user_id, up_to, version)
        read_seq = up_to
    unread = await store.unread(chat_id, user_id, max(read_seq, marker.joined_seq))
    frame = encode_frame("read_marked", {"chat_id": str(chat_id), "up_to_seq": read_seq, "unread": unread})
    outbox.route(Signal(frame, (user_id,)))


HANDLERS: dict[type[Event], Handler] = {
    MessageSent: on_messages_sent,
    ChatReadMarked: on_chat_read_marked,
}
