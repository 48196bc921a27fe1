"""Event handlers of the delivery service, routed by `HANDLERS`."""

import asyncio
from uuid import UUID

from switchboard_contracts.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    DeliveryAcked,
    Event,
    MessageStored,
    Origin,
    SessionRegistered,
)
from switchboard_contracts.topology import Headers, Topology
from switchboard_contracts.wire import encode_frame, new_message_frame
from switchboard_runtime.amqp import Bus
from switchboard_runtime.consumer import Handler, HandlerContext

from . import store
from .domain import delivery_info, recipients_of

__all__ = ["HANDLERS"]


async def on_chat_created(event: ChatCreated, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, event.members)


async def on_member_added(event: ChatMemberAdded, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, [event.user_id])


async def on_member_removed(event: ChatMemberRemoved, ctx: HandlerContext) -> None:
    await store.remove_member(ctx.conn, event.chat_id, event.user_id)


async def on_message_stored(event: MessageStored, ctx: HandlerContext) -> None:
    message = event.message
    recipients = recipients_of(await store.members(ctx.conn, message.chat_id), message.sender_id)
    frame = new_message_frame(message)
    if not ctx.duplicate:
        await store.queue_message(ctx.conn, message.id, message.chat_id, message.seq, frame, recipients)
    # On a redelivery only those who have not acknowledged yet get it again.
    pending = await store.still_pending(ctx.conn, message.id) if ctx.duplicate else recipients
    acked = len(recipients) - len(pending)

    async def route() -> None:
        routed = await _route_live(ctx.bus, message.id, message.sender_id, event.origin, frame, pending)
        info = encode_frame(
            "message_delivery_info", delivery_info(message.id, len(recipients), routed + acked)
        )
        await _reply(ctx.bus, event.origin, info)

    ctx.after_commit.append(route)


async def _route_live(
    bus: Bus, message_id: UUID, sender_id: str, origin: Origin, frame: bytes, recipients: list[str]
) -> int:
    """Publish to each recipient's personal route; returns how many had a gateway holding them."""
    headers = {Headers.KIND: "live", Headers.MESSAGE_ID: str(message_id)}
    publishes = [
        bus.publish(
            "route", Topology.user_key(user), frame, headers={**headers, Headers.USER: user}, mandatory=True
        )
        for user in recipients
    ]
    # The sender's other devices see their own message too; the sending session does not.
    own = {**headers, Headers.USER: sender_id, Headers.EXCEPT_SESSION: origin.session_id}
    publishes.append(bus.publish("route", Topology.user_key(sender_id), frame, headers=own))
    results = await asyncio.gather(*publishes)
    return sum(results[:-1])


async def _reply(bus: Bus, origin: Origin, frame: bytes) -> None:
    headers = {Headers.SESSION: origin.session_id, Headers.KIND: "reply"}
    await bus.publish("route", Topology.gateway_key(origin.gateway_id), frame, headers=headers)


async def on_delivery_acked(event: DeliveryAcked, ctx: HandlerContext) -> None:
    await store.acknowledge(ctx.conn, event.user_id, event.message_ids)


async def on_session_registered(event: SessionRegistered, ctx: HandlerContext) -> None:
    """Send the session everything its user has not acknowledged, in order, then `queue_flushed`."""
    backlog = await store.backlog(ctx.conn, event.user_id)
    key = Topology.gateway_key(event.gateway_id)

    async def flush() -> None:
        base = {Headers.SESSION: event.session_id, Headers.KIND: "flush"}
        await asyncio.gather(
            *(
                ctx.bus.publish("route", key, frame, headers={**base, Headers.MESSAGE_ID: str(message_id)})
                for message_id, frame in backlog
            )
        )
        done = encode_frame("queue_flushed", {"count": len(backlog)})
        await ctx.bus.publish("route", key, done, headers={**base, Headers.KIND: "flush-done"})

    ctx.after_commit.append(flush)


HANDLERS: dict[type[Event], Handler] = {
    ChatCreated: on_chat_created,
    ChatMemberAdded: on_member_added,
    ChatMemberRemoved: on_member_removed,
    MessageStored: on_message_stored,
    DeliveryAcked: on_delivery_acked,
    SessionRegistered: on_session_registered,
}
