"""Event handlers of the presence service, routed by `HANDLERS`.

A user is online while any of their sessions, on any gateway, is open. Every session that opens
is announced as `SessionRegistered` (delivery flushes the user's queue to it); the first one
also as `UserWentOnline`. When the last one closes the user is pending offline for a grace
period: a session opening within it cancels that unseen, and only when the grace passes with no
session is the user announced `UserWentOffline` (by `end_graces`, on a timer). A gateway that
falls silent takes its users offline at once.

Each online and offline is also sent as a `presence` frame to the user's contacts: the other
members of their chats that have a session at that moment.
"""

from datetime import UTC, datetime, timedelta

import structlog

from switchboard_contracts.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    Event,
    GatewayHeartbeat,
    SessionClosed,
    SessionOpened,
    SessionRegistered,
    UserWentOffline,
    UserWentOnline,
)
from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_runtime.consumer import Handler, HandlerContext
from switchboard_runtime.db import Conn
from switchboard_runtime.outbox import OutboxWriter

from . import store
from .domain import presence_of, presence_signals

__all__ = ["HANDLERS", "end_graces", "expire_silent_gateways"]

log = structlog.get_logger()


async def _tell_contacts(conn: Conn, outbox: OutboxWriter, user_id: str, last_seen: datetime | None) -> None:
    """A `presence` frame to each contact with a session: online when `last_seen` is None."""
    presence = presence_of(user_id, online=last_seen is None, last_seen=last_seen)
    for routing_key, frame, headers in presence_signals(presence, await store.online_contacts(conn, user_id)):
        outbox.send(routing_key, frame, headers)


async def _went_offline(conn: Conn, outbox: OutboxWriter, user_id: str, last_seen: datetime) -> None:
    await store.went_offline(conn, user_id, last_seen)
    outbox.emit(UserWentOffline(user_id=user_id, last_seen=last_seen))
    await _tell_contacts(conn, outbox, user_id, last_seen)


async def on_chat_created(event: ChatCreated, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, event.members)


async def on_member_added(event: ChatMemberAdded, ctx: HandlerContext) -> None:
    await store.add_members(ctx.conn, event.chat_id, [event.user_id])


async def on_member_removed(event: ChatMemberRemoved, ctx: HandlerContext) -> None:
    await store.remove_member(ctx.conn, event.chat_id, event.user_id)


async def on_session_opened(event: SessionOpened, ctx: HandlerContext) -> None:
    if ctx.duplicate:
        return
    await store.beat(ctx.conn, event.gateway_id, datetime.now(UTC))
    # A gateway re-announces its sessions after a broker outage; a known one is not "new online".
    added = await store.add_session(
        ctx.conn, event.session_id, event.user_id, event.gateway_id, event.device_id
    )
    first = added and await store.session_count(ctx.conn, event.user_id) == 1
    # Back within the grace period: nobody saw the user go offline, so there is nothing to undo.
    if first and not await store.cancel_grace(ctx.conn, event.user_id):
        ctx.outbox.emit(
            UserWentOnline(user_id=event.user_id, session_id=event.session_id, gateway_id=event.gateway_id)
        )
        await _tell_contacts(ctx.conn, ctx.outbox, event.user_id, None)
    ctx.outbox.emit(
        SessionRegistered(
            session_id=event.session_id,
            user_id=event.user_id,
            gateway_id=event.gateway_id,
            user_went_online=first,
            flush_id=event.flush_id,
        )
    )


async def on_session_closed(event: SessionClosed, ctx: HandlerContext) -> None:
    if ctx.duplicate or not await store.remove_session(ctx.conn, event.session_id):
        return
    if await store.session_count(ctx.conn, event.user_id) == 0:
        await store.start_grace(ctx.conn, event.user_id, ctx.envelope.time)


async def on_heartbeat(event: GatewayHeartbeat, ctx: HandlerContext) -> None:
    # Presence's own clock, the one expiry compares with; a gateway's clock may differ.
    new = await store.beat(ctx.conn, event.gateway_id, datetime.now(UTC))
    if new and event.sessions and not ctx.duplicate:
        # A gateway with sessions presence does not know: it was expired while stalled (or
        # presence lost its state). Ask it to announce its sessions again, so their users are
        # online again and their queues flushed.
        ctx.outbox.send(Topology.gateway_key(event.gateway_id), b"", {Headers.KIND: Kind.RESYNC})


async def expire_silent_gateways(conn: Conn, expiry: timedelta, partitions: int) -> OutboxWriter:
    """Sessions of a gateway that died without saying goodbye end when its heartbeats stop."""
    now = datetime.now(UTC)
    outbox = OutboxWriter("presence", partitions)
    users = await store.expire_gateways(conn, now - expiry)
    for user_id in users:
        await _went_offline(conn, outbox, user_id, now)
    if users:
        log.info("sessions of silent gateways expired", users_offline=len(users))
    return outbox


async def end_graces(conn: Conn, grace: timedelta, partitions: int) -> OutboxWriter:
    """Announce offline the users whose last session closed more than `grace` ago.

    `last_seen` is the gateway's time of the close; gateway and presence clocks agree far more
    closely than the seconds a grace lasts.
    """
    outbox = OutboxWriter("presence", partitions)
    for user_id, last_seen in await store.end_graces(conn, datetime.now(UTC) - grace):
        await _went_offline(conn, outbox, user_id, last_seen)
    return outbox


HANDLERS: dict[type[Event], Handler] = {
    SessionOpened: on_session_opened,
    SessionClosed: on_session_closed,
    GatewayHeartbeat: on_heartbeat,
    ChatCreated: on_chat_created,
    ChatMemberAdded: on_member_added,
    ChatMemberRemoved: on_member_removed,
}
