"""Event handlers of the delivery service, routed by `HANDLERS`."""

import asyncio
import functools
from collections.abc import Sequence
from typing import Literal

import asyncpg

from switchboard_contracts.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    DeliveryAcked,
    Event,
    FlushRequested,
    MessagesRead,
    MessageStored,
    NotificationCancelled,
    NotificationRequested,
    Origin,
    SessionRegistered,
)
from switchboard_contracts.models import MessageOut
from switchboard_contracts.pages import PageEntry, pack_page
from switchboard_contracts.partitions import partition_of
from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_contracts.wire import encode_frame, new_message_frame
from switchboard_runtime.amqp import Bus
from switchboard_runtime.consumer import Handler, HandlerContext
from switchboard_runtime.outbox import OutboxWriter

from . import store
from .domain import (
    FlushPage,
    advance_cursor,
    decode_cursor,
    delivery_info,
    encode_cursor,
    member_frame_recipients,
    preview,
    recipients_of,
)

__all__ = ["handlers_for"]


async def on_chat_created(event: ChatCreated, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, event.members)


async def on_member_added(event: ChatMemberAdded, ctx: HandlerContext) -> None:
    # A repeat must not add again: the member may have been removed by a later event since.
    if not ctx.duplicate:
        await store.add_members(ctx.conn, event.chat_id, [event.user_id])
    members = await store.members(ctx.conn, event.chat_id)
    _announce_member_change(ctx, "member_joined", event, members)


async def on_member_removed(event: ChatMemberRemoved, ctx: HandlerContext) -> None:
    # Read before removing: the removed member hears of it too.
    members = await store.members(ctx.conn, event.chat_id)
    if not ctx.duplicate:
        await store.remove_member(ctx.conn, event.chat_id, event.user_id)
    _announce_member_change(ctx, "member_left", event, members)


def _announce_member_change(
    ctx: HandlerContext, name: str, event: ChatMemberAdded | ChatMemberRemoved, members: list[str]
) -> None:
    """`member_joined` / `member_left` to every member's personal route, after commit.

    Kind "live": a session catching up holds it in order with the messages, so "member_left,
    then no more messages from that chat" arrives in that order.
    """
    frame = encode_frame(name, {"chat_id": str(event.chat_id), "user_id": event.user_id, "by": event.by})
    left = isinstance(event, ChatMemberRemoved)

    def headers(user: str) -> dict[str, object]:
        base: dict[str, object] = {Headers.USER: user, Headers.KIND: Kind.LIVE}
        if left and user == event.user_id:
            # The gateway takes that user's sessions out of the chat's typing room.
            base[Headers.LEFT_CHAT] = str(event.chat_id)
        return base

    async def send() -> None:
        await asyncio.gather(
            *(
                ctx.bus.publish("route", Topology.user_key(user), frame, headers=headers(user))
                for user in member_frame_recipients(members, event.user_id)
            )
        )

    ctx.after_commit.append(send)


async def on_message_stored(event: MessageStored, ctx: HandlerContext, *, preview_chars: int) -> None:
    message = event.message
    frame = new_message_frame(message)
    if not ctx.duplicate:
        part = partition_of(str(message.chat_id), ctx.bus.topology.partitions)
        recipients = pending = await store.queue_message(ctx.conn, message, frame, part)
    else:
        # A redelivery: only those who have not acknowledged yet get it again.
        recipients = recipients_of(await store.members(ctx.conn, message.chat_id), message.sender_id)
        pending = await store.still_pending(ctx.conn, message.id)
    acked = len(recipients) - len(pending)

    async def route() -> None:
        offline = await _route_live(ctx.bus, message, event.origin, frame, pending)
        info = encode_frame(
            "message_delivery_info",
            delivery_info(message.id, len(recipients), len(pending) - len(offline) + acked),
        )
        await _reply(ctx.bus, event.origin, info)
        if offline:
            # Only now is it known who no gateway holds; the transaction of the handler is over.
            await _request_notifications(ctx.pool, ctx.outbox.fresh(), message, offline, preview_chars)

    ctx.after_commit.append(route)


async def _request_notifications(
    pool: asyncpg.Pool, outbox: OutboxWriter, message: MessageOut, offline: Sequence[str], preview_chars: int
) -> None:
    """One NotificationRequested per (message, recipient), however often this runs."""
    async with pool.acquire() as conn, conn.transaction():
        for user in await store.request_notifications(conn, message, offline):
            outbox.emit(
                NotificationRequested(
                    recipient_id=user,
                    chat_id=message.chat_id,
                    message_id=message.id,
                    seq=message.seq,
                    sender_id=message.sender_id,
                    preview=preview(message.content, preview_chars),
                )
            )
        await outbox.flush(conn)


async def _route_live(
    bus: Bus, message: MessageOut, origin: Origin, frame: bytes, recipients: list[str]
) -> list[str]:
    """Publish to each recipient's personal route; returns those no gateway holds (offline)."""
    headers = {
        Headers.KIND: Kind.LIVE,
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
    return [user for user, routed in zip(recipients, results[:-1], strict=True) if not routed]


async def _reply(bus: Bus, origin: Origin, frame: bytes) -> None:
    headers = {Headers.SESSION: origin.session_id, Headers.KIND: Kind.REPLY}
    await bus.publish("route", Topology.gateway_key(origin.gateway_id), frame, headers=headers)


async def on_delivery_acked(event: DeliveryAcked, ctx: HandlerContext) -> None:
    for cancelled in await store.acknowledge(ctx.conn, event.user_id, event.message_ids):
        _cancel_notification(ctx, event.user_id, cancelled, "delivered")


async def on_messages_read(event: MessagesRead, ctx: HandlerContext) -> None:
    for cancelled in await store.mark_read(ctx.conn, event.chat_id, event.user_id, event.up_to_seq):
        _cancel_notification(ctx, event.user_id, cancelled, "read")


def _cancel_notification(
    ctx: HandlerContext, user_id: str, cancelled: store.Cancelled, reason: Literal["delivered", "read"]
) -> None:
    ctx.outbox.emit(
        NotificationCancelled(
            recipient_id=user_id, chat_id=cancelled.chat_id, message_id=cancelled.message_id, reason=reason
        )
    )


async def on_session_registered(event: SessionRegistered, ctx: HandlerContext, *, limits: FlushPage) -> None:
    """A session opened: send it what its user has not acknowledged, first page."""
    await _flush_page(ctx, limits, event.user_id, event.session_id, event.gateway_id, event.flush_id, 0, "")


async def on_flush_requested(event: FlushRequested, ctx: HandlerContext, *, limits: FlushPage) -> None:
    await _flush_page(
        ctx,
        limits,
        event.user_id,
        event.session_id,
        event.gateway_id,
        event.flush_id,
        event.after_position,
        event.after_cursor,
    )


async def _flush_page(
    ctx: HandlerContext,
    limits: FlushPage,
    user_id: str,
    session_id: str,
    gateway_id: str,
    flush_id: str,
    after_position: int,
    after_cursor: str,
) -> None:
    """One page of the flush, in order, as one broker message that says whether more is queued."""
    cursor = decode_cursor(after_cursor, after_position, ctx.bus.topology.partitions)
    page = await store.backlog_page(ctx.conn, user_id, cursor, limits.messages, limits.bytes)
    key = Topology.gateway_key(gateway_id)
    headers: dict[str, object] = {
        Headers.SESSION: session_id,
        Headers.KIND: Kind.FLUSH_PAGE,
        Headers.FLUSH: flush_id,
        Headers.AFTER: after_position,
        Headers.COUNT: len(page.rows),
    }
    if page.more and page.rows:
        headers[Headers.MORE] = page.rows[-1].position
        headers[Headers.CURSOR] = encode_cursor(
            advance_cursor(cursor, ((r.part, r.position) for r in page.rows))
        )
    body = pack_page([PageEntry(str(r.message_id), str(r.chat_id), r.seq, r.frame) for r in page.rows])

    async def flush() -> None:
        await ctx.bus.publish("route", key, body, headers=headers)

    ctx.after_commit.append(flush)


def handlers_for(limits: FlushPage, *, preview_chars: int = 0) -> dict[type[Event], Handler]:
    return {
        ChatCreated: on_chat_created,
        ChatMemberAdded: on_member_added,
        ChatMemberRemoved: on_member_removed,
        MessageStored: functools.partial(on_message_stored, preview_chars=preview_chars),
        DeliveryAcked: on_delivery_acked,
        MessagesRead: on_messages_read,
        SessionRegistered: functools.partial(on_session_registered, limits=limits),
        FlushRequested: functools.partial(on_flush_requested, limits=limits),
    }
