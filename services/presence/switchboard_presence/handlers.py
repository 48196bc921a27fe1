"""Event handlers of the presence service, routed by `HANDLERS`.

A user is online while any of their sessions, on any gateway, is open. Every session that opens
is announced as `SessionRegistered` (delivery flushes the user's queue to it); the first one
also as `UserWentOnline`, and the last one closing as `UserWentOffline`.
"""

from datetime import UTC, datetime, timedelta

import structlog

from switchboard_contracts.events import (
    Event,
    GatewayHeartbeat,
    SessionClosed,
    SessionOpened,
    SessionRegistered,
    UserWentOffline,
    UserWentOnline,
)
from switchboard_runtime.consumer import Handler, HandlerContext
from switchboard_runtime.db import Conn
from switchboard_runtime.outbox import OutboxWriter

from . import store

__all__ = ["HANDLERS", "expire_silent_gateways"]

log = structlog.get_logger()


async def on_session_opened(event: SessionOpened, ctx: HandlerContext) -> None:
    if ctx.duplicate:
        return
    await store.beat(ctx.conn, event.gateway_id, datetime.now(UTC))
    # A gateway re-announces its sessions after a broker outage; a known one is not "new online".
    added = await store.add_session(
        ctx.conn, event.session_id, event.user_id, event.gateway_id, event.device_id
    )
    first = added and await store.session_count(ctx.conn, event.user_id) == 1
    if first:
        ctx.outbox.emit(
            UserWentOnline(user_id=event.user_id, session_id=event.session_id, gateway_id=event.gateway_id)
        )
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
        await store.went_offline(ctx.conn, event.user_id, ctx.envelope.time)
        ctx.outbox.emit(UserWentOffline(user_id=event.user_id, last_seen=ctx.envelope.time))


async def on_heartbeat(event: GatewayHeartbeat, ctx: HandlerContext) -> None:
    # Presence's own clock, the one expiry compares with; a gateway's clock may differ.
    await store.beat(ctx.conn, event.gateway_id, datetime.now(UTC))


async def expire_silent_gateways(conn: Conn, expiry: timedelta) -> OutboxWriter:
    """Sessions of a gateway that died without saying goodbye end when its heartbeats stop."""
    now = datetime.now(UTC)
    outbox = OutboxWriter("presence")
    for user_id in await store.expire_gateways(conn, now - expiry):
        await store.went_offline(conn, user_id, now)
        outbox.emit(UserWentOffline(user_id=user_id, last_seen=now))
    if outbox.rows:
        log.info("sessions of silent gateways expired", users_offline=len(outbox.rows))
    return outbox


HANDLERS: dict[type[Event], Handler] = {
    SessionOpened: on_session_opened,
    SessionClosed: on_session_closed,
    GatewayHeartbeat: on_heartbeat,
}
