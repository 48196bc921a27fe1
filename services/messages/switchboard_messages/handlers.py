"""Event handlers of the messages service, routed by `HANDLERS`."""

from datetime import UTC, datetime

import structlog

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.events import Event, MessageSent, MessageStored, Origin
from switchboard_contracts.models import MessageOut
from switchboard_contracts.topology import Headers, Topology
from switchboard_contracts.wire import encode_frame, message_error_frame
from switchboard_runtime.consumer import Batched, Handler, HandlerContext

from . import store
from .domain import BatchFacts, Refused, Stored, plan_sends

__all__ = ["HANDLERS", "on_messages_sent"]

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


HANDLERS: dict[type[Event], Handler] = {MessageSent: Batched(on_messages_sent)}
