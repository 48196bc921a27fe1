"""Event handlers of the presence service, routed by `HANDLERS`.

A user is online while any of their sessions, on any gateway, is open. Every session that opens
is announced as `SessionRegistered` (delivery flushes the user's queue to it); a user's first one
also as `UserWentOnline`. When the last one closes the user is pending offline for a grace
period: a session opening within it cancels that unseen, and only when the grace passes with no
session is the user announced `UserWentOffline` (by `end_graces`, on a timer). A gateway that
falls silent takes its users offline at once.

Each online and offline is also sent as a `presence` frame to the user's contacts: the other
members of their chats that have a session at that moment.

Session events come in batches (a reconnect storm is thousands at once), and each handler works
on the whole run of its events with a few statements, whatever its length. All are idempotent:
a session is added or removed once, a known gateway's beat changes only its time.
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
from switchboard_runtime.consumer import Handler
from switchboard_runtime.uow import UnitOfWork

from .domain import presence_of, presence_signal
from .store import Store

__all__ = ["HANDLERS", "end_graces", "expire_silent_gateways"]

log = structlog.get_logger()

Uow = UnitOfWork[Store]


async def _tell_contacts(uow: Uow, went: dict[str, datetime | None]) -> None:
    """A `presence` frame to the contacts with a session of each user: online when its
    `last_seen` is None."""
    contacts = await uow.store.online_contacts(list(went))
    for user_id, last_seen in went.items():
        presence = presence_of(user_id, online=last_seen is None, last_seen=last_seen)
        signal = presence_signal(presence, contacts.get(user_id, []))
        if signal is not None:
            uow.outbox.route(signal)


async def _went_offline(uow: Uow, last_seen: dict[str, datetime]) -> None:
    await uow.store.went_offline(last_seen)
    for user_id, seen in last_seen.items():
        uow.outbox.emit(UserWentOffline(user_id=user_id, last_seen=seen))
    await _tell_contacts(uow, dict(last_seen))


async def on_chats_created(events: list[ChatCreated], uow: Uow) -> None:
    for event in events:
        await uow.store.add_members(event.chat_id, event.members)


async def on_members_added(events: list[ChatMemberAdded], uow: Uow) -> None:
    for event in events:
        await uow.store.add_members(event.chat_id, [event.user_id])


async def on_members_removed(events: list[ChatMemberRemoved], uow: Uow) -> None:
    for event in events:
        await uow.store.remove_member(event.chat_id, event.user_id)


async def on_sessions_opened(events: list[SessionOpened], uow: Uow) -> None:
    store = uow.store
    await store.beat([event.gateway_id for event in events], datetime.now(UTC))
    online_before = await store.online_among(event.user_id for event in events)
    # A gateway re-announces its sessions after a broker outage; a known one is not "new online".
    added = await store.add_sessions(
        [(event.session_id, event.user_id, event.gateway_id, event.device_id) for event in events]
    )
    first: dict[str, SessionOpened] = {}
    for event in events:
        if event.session_id in added and event.user_id not in online_before and event.user_id not in first:
            first[event.user_id] = event
    # Back within the grace period: nobody saw the user go offline, so there is nothing to undo.
    returning = await store.cancel_graces(first) if first else set()
    announced = {user: event for user, event in first.items() if user not in returning}
    for user, event in announced.items():
        uow.outbox.emit(
            UserWentOnline(user_id=user, session_id=event.session_id, gateway_id=event.gateway_id)
        )
    if announced:
        await _tell_contacts(uow, dict.fromkeys(announced))
    for event in events:
        uow.outbox.emit(
            SessionRegistered(
                session_id=event.session_id,
                user_id=event.user_id,
                gateway_id=event.gateway_id,
                user_went_online=first.get(event.user_id) is event,
                flush_id=event.flush_id,
            )
        )


async def on_sessions_closed(events: list[SessionClosed], uow: Uow) -> None:
    store = uow.store
    ended = set(await store.remove_sessions([event.session_id for event in events]))
    if not ended:
        return
    still_online = await store.online_among(ended)
    last_seen: dict[str, datetime] = {}
    for event in events:
        if event.user_id in ended and event.user_id not in still_online:
            seen = last_seen.get(event.user_id)
            last_seen[event.user_id] = event.closed_at if seen is None else max(seen, event.closed_at)
    if last_seen:
        await store.start_graces(last_seen)


async def on_heartbeats(events: list[GatewayHeartbeat], uow: Uow) -> None:
    # Presence's own clock, the one expiry compares with; a gateway's clock may differ.
    new = await uow.store.beat([event.gateway_id for event in events], datetime.now(UTC))
    for gateway_id in {event.gateway_id for event in events if event.sessions and event.gateway_id in new}:
        # A gateway with sessions presence does not know: it was expired while stalled (or
        # presence lost its state). Ask it to announce its sessions again, so their users are
        # online again and their queues flushed.
        uow.outbox.publish(Topology.gateway_key(gateway_id), b"", {Headers.KIND: Kind.RESYNC})


async def expire_silent_gateways(uow: Uow, expiry: timedelta) -> None:
    """Sessions of a gateway that died without saying goodbye end when its heartbeats stop."""
    now = datetime.now(UTC)
    users = await uow.store.expire_gateways(now - expiry)
    if users:
        await _went_offline(uow, dict.fromkeys(users, now))
        log.info("sessions of silent gateways expired", users_offline=len(users))


async def end_graces(uow: Uow, grace: timedelta) -> None:
    """Announce offline the users whose last session closed more than `grace` ago.

    `last_seen` is the gateway's time of the close; gateway and presence clocks agree far more
    closely than the seconds a grace lasts.
    """
    ended = await uow.store.end_graces(datetime.now(UTC) - grace)
    if ended:
        await _went_offline(uow, dict(ended))


HANDLERS: dict[type[Event], Handler] = {
    SessionOpened: on_sessions_opened,
    SessionClosed: on_sessions_closed,
    GatewayHeartbeat: on_heartbeats,
    ChatCreated: on_chats_created,
    ChatMemberAdded: on_members_added,
    ChatMemberRemoved: on_members_removed,
}
