"""Event handlers of the messages service, routed by `HANDLERS`."""

from collections import defaultdict
from datetime import UTC, datetime
from uuid import UUID, uuid5

import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import (
    ChatReadMarked,
    DeliveryAcked,
    Event,
    MessagesDelivered,
    MessageSent,
    MessagesRead,
    MessageStored,
    Origin,
)
from switchboard_contracts.models import MessageOut
from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_contracts.wire import encode_frame, error_frame, message_error_frame
from switchboard_runtime.consumer import Batched, Handler, HandlerContext

from . import read_store, store
from .domain import BatchFacts, Refused, StatusChange, Stored, plan_sends, status_updates

__all__ = ["HANDLERS", "on_chat_read_marked", "on_delivery_acked", "on_messages_sent", "receipt_stream"]

log = structlog.get_logger()


def _reply(ctx: HandlerContext, origin: Origin, frame: bytes) -> None:
    ctx.outbox.send(
        Topology.gateway_key(origin.gateway_id),
        frame,
        {Headers.SESSION: origin.session_id, Headers.KIND: Kind.REPLY},
    )


def _to_user(ctx: HandlerContext, user_id: str, frame: bytes) -> None:
    """To every session of the user, on any gateway, at once (receipts are about now)."""
    ctx.outbox.send(Topology.user_key(user_id), frame, {Headers.USER: user_id, Headers.KIND: Kind.SIGNAL})


def _sent(ctx: HandlerContext, sent: MessageSent, message: MessageOut) -> None:
    _reply(
        ctx,
        sent.origin,
        encode_frame("message_sent", {"tempId": sent.temp_id, "message": message.model_dump(mode="json")}),
    )


def _rejected(ctx: HandlerContext, sent: MessageSent, code: ErrorCode, reason: str) -> None:
    log.info("message rejected", code=code.value, chat_id=str(sent.chat_id), sender_id=sent.sender_id)
    _reply(ctx, sent.origin, message_error_frame(sent.temp_id, code, reason))


async def on_messages_sent(batch: list[tuple[MessageSent, HandlerContext]]) -> None:
    """Store each send once, as its chat's next seq, and answer every sending session.

    Set-based: four reads and three writes for the whole batch (lock the chats, membership,
    earlier tempIds, reply targets; insert messages, append events, move the chats on), then
    the outbox. The rules themselves are `plan_sends`, pure.
    """
    fresh = [(sent, ctx) for sent, ctx in batch if not ctx.duplicate]
    if not fresh:
        return  # answers and MessageStored of a repeat are already in the outbox or published
    conn = fresh[0][1].conn
    sends = [sent for sent, _ in fresh]
    facts = BatchFacts(
        chats=await store.lock_chats(conn, {sent.chat_id for sent in sends}),
        memberships=await store.memberships(conn, {(sent.chat_id, sent.sender_id) for sent in sends}),
        stored=await store.stored_by_temp_id(conn, {(sent.sender_id, str(sent.temp_id)) for sent in sends}),
        replies=await store.messages_in_chats(
            conn, {(sent.chat_id, sent.reply_to) for sent in sends if sent.reply_to is not None}
        ),
    )
    before = dict(facts.chats)
    outcomes = plan_sends(sends, facts, datetime.now(UTC))
    stored = [
        (sent, ctx, outcome)
        for (sent, ctx), outcome in zip(fresh, outcomes, strict=True)
        if isinstance(outcome, Stored)
    ]
    if stored:
        await store.insert_messages(
            conn, [(outcome.message, str(sent.temp_id)) for sent, _, outcome in stored]
        )
        events = [
            (
                outcome.message.chat_id,
                outcome.version,
                ctx.outbox.emit(
                    MessageStored(message=outcome.message, temp_id=sent.temp_id, origin=sent.origin)
                ),
            )
            for sent, ctx, outcome in stored
        ]
        await store.append_events(conn, events)
        await store.save_chat_states(
            conn, [chat for chat_id, chat in facts.chats.items() if chat != before.get(chat_id)]
        )
    for (sent, ctx), outcome in zip(fresh, outcomes, strict=True):
        if isinstance(outcome, Refused):
            _rejected(ctx, sent, outcome.code, outcome.reason)
        else:
            _sent(ctx, sent, outcome.message)


def receipt_stream(chat_id: UUID, user_id: str) -> UUID:
    """The event-log stream of one member's receipts in one chat (stable, derived)."""
    return uuid5(chat_id, user_id)


def _tell_senders(ctx: HandlerContext, updates: list[tuple[str, dict[str, object]]]) -> None:
    for sender, data in updates:
        _to_user(ctx, sender, encode_frame("message_status", data))


async def on_delivery_acked(event: DeliveryAcked, ctx: HandlerContext) -> None:
    """A device of `user_id` got these messages: the first such receipt tells each sender."""
    if ctx.duplicate:
        return
    changed = await read_store.mark_delivered(ctx.conn, event.user_id, event.message_ids)
    by_chat: dict[UUID, list[StatusChange]] = defaultdict(list)
    for change in changed:
        by_chat[change.chat_id].append(change)
    for chat_id, changes in by_chat.items():
        version = await read_store.bump_stream(ctx.conn, chat_id, event.user_id)
        receipt = MessagesDelivered(
            chat_id=chat_id, user_id=event.user_id, message_ids=[c.message_id for c in changes]
        )
        await store.append_event(
            ctx.conn, receipt_stream(chat_id, event.user_id), version, ctx.outbox.emit(receipt)
        )
    _tell_senders(ctx, status_updates(changed, event.user_id, "delivered"))


async def on_chat_read_marked(event: ChatReadMarked, ctx: HandlerContext) -> None:
    """Move the reader's marker forward; each sender concerned hears once, the reader's devices too."""
    if ctx.duplicate:
        return
    conn, chat_id, user_id = ctx.conn, event.chat_id, event.user_id
    marker = await read_store.lock_marker(conn, chat_id, user_id)
    if marker is None:
        exists = await store.chat_exists(conn, chat_id)
        code = ErrorCode.NOT_A_MEMBER if exists else ErrorCode.CHAT_NOT_FOUND
        reason = f"you are not a member of chat {chat_id}" if exists else f"no chat {chat_id}"
        _reply(ctx, event.origin, error_frame(code, f"mark_read: {reason}"))
        return
    # Reading past the end reads up to the end; never before the user joined.
    up_to = min(event.seq, await store.last_seq(conn, chat_id))
    read_seq = marker.read_seq
    after = max(read_seq, marker.joined_seq)
    if up_to > after:
        changed = await read_store.mark_read(conn, chat_id, user_id, after, up_to)
        read = MessagesRead(
            chat_id=chat_id, user_id=user_id, up_to_seq=up_to, message_ids=[c.message_id for c in changed]
        )
        version = marker.version + 1
        await store.append_event(conn, receipt_stream(chat_id, user_id), version, ctx.outbox.emit(read))
        await read_store.save_marker(conn, chat_id, user_id, up_to, version)
        _tell_senders(ctx, status_updates(changed, user_id, "read", up_to))
        read_seq = up_to
    unread = await read_store.unread(conn, chat_id, user_id, max(read_seq, marker.joined_seq))
    _to_user(
        ctx,
        user_id,
        encode_frame("read_marked", {"chat_id": str(chat_id), "up_to_seq": read_seq, "unread": unread}),
    )


HANDLERS: dict[type[Event], Handler] = {
    MessageSent: Batched(on_messages_sent),
    DeliveryAcked: on_delivery_acked,
    ChatReadMarked: on_chat_read_marked,
}
