"""Event handlers of the messages service, routed by `HANDLERS`."""

from datetime import UTC, datetime

import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import Event, MessageSent, MessageStored, Origin
from switchboard_contracts.models import MessageOut
from switchboard_contracts.topology import Headers, Topology
from switchboard_contracts.wire import encode_frame, message_error_frame
from switchboard_runtime.consumer import Handler, HandlerContext

from . import store
from .domain import next_message

__all__ = ["HANDLERS", "on_message_sent"]

log = structlog.get_logger()


def _reply(ctx: HandlerContext, origin: Origin, frame: bytes) -> None:
    ctx.outbox.send(
        Topology.gateway_key(origin.gateway_id),
        frame,
        {Headers.SESSION: origin.session_id, Headers.KIND: "reply"},
    )


def _sent(ctx: HandlerContext, sent: MessageSent, message: MessageOut) -> None:
    _reply(
        ctx,
        sent.origin,
        encode_frame("message_sent", {"tempId": sent.temp_id, "message": message.model_dump(mode="json")}),
    )


def _rejected(ctx: HandlerContext, sent: MessageSent, code: ErrorCode, reason: str) -> None:
    log.info("message rejected", code=code.value, chat_id=str(sent.chat_id), sender_id=sent.sender_id)
    _reply(ctx, sent.origin, message_error_frame(sent.temp_id, code, reason))


async def on_message_sent(sent: MessageSent, ctx: HandlerContext) -> None:
    """Store a send once, as the chat's next seq; answer the sending session either way.

    Three round trips on the common path: lock the chat (with the membership check), insert the
    message (ON CONFLICT on (sender, tempId) detects a retry), append the event and bump the chat.
    """
    if ctx.duplicate:
        return  # its answer and its MessageStored are already in the outbox or published
    locked = await store.lock_chat_for_sender(ctx.conn, sent.chat_id, sent.sender_id)
    if locked is None:
        _rejected(ctx, sent, ErrorCode.CHAT_NOT_FOUND, f"no chat {sent.chat_id}")
        return
    chat, member = locked
    if not member:
        _rejected(ctx, sent, ErrorCode.NOT_A_MEMBER, f"you are not a member of chat {chat.id}")
        return
    if sent.reply_to is not None and not await store.message_in_chat(ctx.conn, chat.id, sent.reply_to):
        _rejected(ctx, sent, ErrorCode.BAD_REQUEST, f"reply_to {sent.reply_to} is not a message of this chat")
        return
    message = next_message(chat, sent, datetime.now(UTC))
    if not await store.insert_message(ctx.conn, message, str(sent.temp_id)):
        # A retry of a send already stored (maybe by another instance a moment ago): same answer.
        existing = await store.find_by_temp_id(ctx.conn, sent.sender_id, str(sent.temp_id))
        if existing is None:
            raise RuntimeError("tempId conflict without a stored message")
        _sent(ctx, sent, existing)
        return
    envelope = ctx.outbox.emit(MessageStored(message=message, temp_id=sent.temp_id, origin=sent.origin))
    await store.append_to_chat(ctx.conn, chat, envelope, message.seq)
    _sent(ctx, sent, message)


HANDLERS: dict[type[Event], Handler] = {MessageSent: on_message_sent}
