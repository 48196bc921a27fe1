"""Event handlers of the delivery service, routed by `HANDLERS`."""

import asyncio
import functools

from switchboard_contracts.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    DeliveryAcked,
    Event,
    FlushRequested,
    MessageStored,
    Origin,
    SessionRegistered,
)
from switchboard_contracts.models import MessageOut
from switchboard_contracts.topology import Headers, Topology
from switchboard_contracts.wire import encode_frame, new_message_frame
from switchboard_runtime.amqp import Bus
from switchboard_runtime.consumer import Handler, HandlerContext

from . import store
from .domain import FlushPage, delivery_info, recipients_of

__all__ = ["handlers_for"]


async def on_chat_created(event: ChatCreated, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, event.members)


async def on_member_added(event: ChatMemberAdded, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, [event.user_id])


async def on_member_removed(event: ChatMemberRemoved, ctx: HandlerContext) -> None:
    await store.remove_member(ctx.conn, event.chat_id, event.user_id)


async def on_message_stored(event: MessageStored, ctx: HandlerContext) -> None:
    message = event.message
    frame = new_message_frame(message)
    if not ctx.duplicate:
        recipients = pending = await store.queue_message(ctx.conn, message, frame)
    else:
        # A redelivery: only those who have not acknowledged yet get it again.
        recipients = recipients_of(await store.members(ctx.conn, message.chat_id), message.sender_id)
        pending = await store.still_pending(ctx.conn, message.id)
    acked = len(recipients) - len(pending)

    async def route() -> None:
        routed = await _route_live(ctx.bus, message, event.origin, frame, pending)
        info = encode_frame(
            "message_delivery_info", delivery_info(message.id, len(recipients), routed + acked)
        )
        await _reply(ctx.bus, event.origin, info)

    ctx.after_commit.append(route)


async def _route_live(
    bus: Bus, message: MessageOut, origin: Origin, frame: bytes, recipients: list[str]
) -> int:
    """Publish to each recipient's personal route; returns how many had a gateway holding them."""
    headers = {
        Headers.KIND: "live",
        Headers.MESSAGE_ID: str(message.id),
        Headers.CHAT: str(message.chat_id),
        Headers.SEQ: message.seq,
    }
    publishes = [
        bus.publish(
            "route", Topology.user_key(user), frame, headers={**headers, Headers.USER: user}, mandatory=True
        )
        for user in recipients
    ]
    # The sender's other devices see their own message too; the sending session does not.
    own = {**headers, Headers.USER: message.sender_id, Headers.EXCEPT_SESSION: origin.session_id}
    publishes.append(bus.publish("route", Topology.user_key(message.sender_id), frame, headers=own))
    results = await asyncio.gather(*publishes)
    return sum(results[:-1])


async def _reply(bus: Bus, origin: Origin, frame: bytes) -> None:
    headers = {Headers.SESSION: origin.session_id, Headers.KIND: "reply"}
    await bus.publish("route", Topology.gateway_key(origin.gateway_id), frame, headers=headers)


async def on_delivery_acked(event: DeliveryAcked, ctx: HandlerContext) -> None:
    await store.acknowledge(ctx.conn, event.user_id, event.message_ids)


async def on_session_registered(event: SessionRegistered, ctx: HandlerContext, *, limits: FlushPage) -> None:
    """A session opened: send it what its user has not acknowledged, first page."""
    await _flush_page(ctx, limits, event.user_id, event.session_id, event.gateway_id, event.flush_id, 0)


async def on_flush_requested(event: FlushRequested, ctx: HandlerContext, *, limits: FlushPage) -> None:
    await _flush_page(
        ctx, limits, event.user_id, event.session_id, event.gateway_id, event.flush_id, event.after_position
    )


async def _flush_page(
    ctx: HandlerContext,
    limits: FlushPage,
    user_id: str,
    session_id: str,
    gateway_id: str,
    flush_id: str,
    after_position: int,
) -> None:
    """One page of the flush, in order, then `flush-done` saying whether more is queued."""
    page = await store.backlog_page(ctx.conn, user_id, after_position, limits.messages, limits.bytes)
    key = Topology.gateway_key(gateway_id)
    base: dict[str, object] = {
        Headers.SESSION: session_id,
        Headers.KIND: "flush",
        Headers.FLUSH: flush_id,
        Headers.AFTER: after_position,
    }

    async def flush() -> None:
        await asyncio.gather(
            *(
                ctx.bus.publish(
                    "route",
                    key,
                    row.frame,
                    headers={
                        **base,
                        Headers.MESSAGE_ID: str(row.message_id),
                        Headers.CHAT: str(row.chat_id),
                        Headers.SEQ: row.seq,
                    },
                )
                for row in page.rows
            )
        )
        done = {**base, Headers.KIND: "flush-done", Headers.COUNT: len(page.rows)}
        if page.more and page.rows:
            done[Headers.MORE] = page.rows[-1].position
        await ctx.bus.publish("route", key, b"", headers=done)

    ctx.after_commit.append(flush)


def handlers_for(limits: FlushPage) -> dict[type[Event], Handler]:
    return {
        ChatCreated: on_chat_created,
        ChatMemberAdded: on_member_added,
        ChatMemberRemoved: on_member_removed,
        MessageStored: on_message_stored,
        DeliveryAcked: on_delivery_acked,
        SessionRegistered: functools.partial(on_session_registered, limits=limits),
        FlushRequested: functools.partial(on_flush_requested, limits=limits),
    }
