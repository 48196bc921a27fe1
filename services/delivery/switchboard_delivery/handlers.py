"""Event handlers of the delivery service, routed by `handlers_for`.

Each takes every event of its type in a run of the batch and sees only its store and outbox.
Whatever frames a batch produces for clients leave after commit as one broker message
(routing.py): every `new_message`, the senders' `message_sent` and `message_delivery_info`,
receipts, membership frames. Every handler is idempotent by what it writes (a message is queued
once, a delivery acknowledged once, a read marker only moves forward), so a redelivered batch
changes nothing twice and only sends its frames again.
"""

import functools
from collections import defaultdict
from dataclasses import replace
from typing import Literal
from uuid import UUID

from pydantic_core import from_json

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
    SessionRegistered,
    UserWentOffline,
    UserWentOnline,
)
from switchboard_contracts.pages import PageEntry, PageHead, pack_page, pack_pages
from switchboard_contracts.partitions import partition_of
from switchboard_contracts.routing import Live, Reply, Signal
from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_contracts.wire import encode_frame
from switchboard_runtime.consumer import Handler
from switchboard_runtime.uow import Outbox, UnitOfWork

from .domain import (
    FlushPage,
    StatusUpdate,
    advance_cursor,
    decode_cursor,
    delivery_info,
    encode_cursor,
    member_frame_recipients,
    preview,
    status_frame,
)
from .store import Cancelled, Status, Store, ToQueue

__all__ = ["handlers_for"]

Uow = UnitOfWork[Store]

# Notifications asked for at once when a user goes offline with messages still unacknowledged
# (they were online when those were routed). A push service shows a handful per chat; the
# newest hundred are more than any lock screen holds.
NOTIFY_WHEN_OFFLINE = 100


# Membership.


async def on_chats_created(events: list[ChatCreated], uow: Uow) -> None:
    for event in events:
        await uow.store.add_members(event.chat_id, event.members)


async def on_members_added(events: list[ChatMemberAdded], uow: Uow) -> None:
    for event in events:
        await uow.store.add_members(event.chat_id, [event.user_id], event.joined_seq)
        members = await uow.store.members(event.chat_id)
        _announce(uow.outbox, "member_joined", event, members)


async def on_members_removed(events: list[ChatMemberRemoved], uow: Uow) -> None:
    for event in events:
        # The members before the removal: the removed member hears of it too.
        members = await uow.store.remove_member(event.chat_id, event.user_id)
        _announce(uow.outbox, "member_left", event, members)


def _announce(
    outbox: Outbox, name: str, event: ChatMemberAdded | ChatMemberRemoved, members: list[str]
) -> None:
    """`member_joined` / `member_left` to every member's personal route.

    Live: a session catching up holds it in order with the messages, so "member_left, then no
    more messages from that chat" arrives in that order.
    """
    frame = encode_frame(name, {"chat_id": str(event.chat_id), "user_id": event.user_id, "by": event.by})
    users = member_frame_recipients(members, event.user_id)
    if isinstance(event, ChatMemberRemoved):
        others = tuple(user for user in users if user != event.user_id)
        if others:
            outbox.route(Live(frame, others))
        # The removed user's gateway takes their sessions out of the chat's typing room.
        outbox.route(Live(frame, (event.user_id,), left_chat=str(event.chat_id)))
    else:
        outbox.route(Live(frame, tuple(users)))


async def on_users_online(events: list[UserWentOnline], uow: Uow) -> None:
    await uow.store.set_online([event.user_id for event in events], [])


async def on_users_offline(events: list[UserWentOffline], uow: Uow, *, preview_chars: int) -> None:
    """Offline now (presence's grace period is over): what is still unacknowledged was routed
    while they were online, and had no notification; now it needs one."""
    await uow.store.set_online([], [event.user_id for event in events])
    for event in events:
        missed = await uow.store.unnotified(event.user_id, NOTIFY_WHEN_OFFLINE)
        requests = [(m.message_id, m.chat_id, m.seq, m.user_id) for m in missed]
        recorded = set(await uow.store.request_notifications(requests))
        for m in missed:
            if (m.message_id, m.user_id) in recorded:
                # The text is in the frame kept for the catch-up (read only when a preview is on).
                content = from_json(m.frame)["data"]["content"] if preview_chars else ""
                uow.outbox.emit(
                    NotificationRequested(
                        recipient_id=m.user_id,
                        chat_id=m.chat_id,
                        message_id=m.message_id,
                        seq=m.seq,
                        sender_id=m.sender_id,
                        preview=preview(content, preview_chars),
                    )
                )


# Messages.


async def on_messages_stored(events: list[MessageStored], uow: Uow, *, preview_chars: int) -> None:
    """Queue each message for its recipients and route it: one `new_message` frame for all of
    them (and the sender's other devices), the sender's `message_sent` and
    `message_delivery_info`, all in the batch's one broker message. Recipients no presence
    counts online get a push notification."""
    store, outbox = uow.store, uow.outbox
    frames: list[tuple[MessageStored, dict[str, object], bytes]] = []
    for event in events:
        body = event.message.model_dump(mode="json")
        frames.append((event, body, encode_frame("new_message", body)))
    partitions = outbox.partitions
    queued = await store.queue_messages(
        [
            ToQueue(
                event.message.id,
                event.message.chat_id,
                event.message.seq,
                event.message.sender_id,
                frame,
                partition_of(str(event.message.chat_id), partitions),
            )
            for event, _, frame in frames
        ]
    )
    notify: list[tuple[MessageStored, str]] = []
    for (event, body, frame), q in zip(frames, queued, strict=True):
        message, origin = event.message, event.origin
        ids = (str(message.id), str(message.chat_id), message.seq)
        # The sender's answers first: a group larger than one broker message's keys is split
        # over several (routing.py), and the sender need not wait behind all of them.
        sent = encode_frame("message_sent", {"tempId": event.temp_id, "message": body})
        outbox.route(Reply(sent, origin.gateway_id, origin.session_id))
        online = set(q.online)
        # Delivered: acknowledged already (a repeat), or held by a gateway now.
        delivered = len(q.recipients) - len(q.pending) + sum(1 for user in q.pending if user in online)
        info = encode_frame("message_delivery_info", delivery_info(message.id, len(q.recipients), delivered))
        outbox.route(Reply(info, origin.gateway_id, origin.session_id))
        if q.pending:
            outbox.route(Live(frame, tuple(q.pending), *ids))
        # The sender's other devices see their own message too; the sending session does not.
        outbox.route(Live(frame, (message.sender_id,), *ids, except_session=origin.session_id))
        if q.fresh:
            notify += [(event, user) for user in q.pending if user not in online]
    if notify:
        requests = [(e.message.id, e.message.chat_id, e.message.seq, user) for e, user in notify]
        recorded = set(await store.request_notifications(requests))
        for event, user in notify:
            if (event.message.id, user) in recorded:
                outbox.emit(
                    NotificationRequested(
                        recipient_id=user,
                        chat_id=event.message.chat_id,
                        message_id=event.message.id,
                        seq=event.message.seq,
                        sender_id=event.message.sender_id,
                        preview=preview(event.message.content, preview_chars),
                    )
                )


# Acknowledgements and reads: the receipts.


async def on_deliveries_acked(events: list[DeliveryAcked], uow: Uow) -> None:
    """Drop the acknowledged deliveries; each sender gets one `message_status` per message of
    theirs that moved, with its totals, however many recipients acknowledged it in this batch."""
    done = await uow.store.acknowledge([(event.user_id, m) for event in events for m in event.message_ids])
    moved: dict[UUID, list[str]] = defaultdict(list)
    for ack in done.acked:
        moved[ack.message_id].append(ack.user_id)
    for status in done.statuses:
        _tell_sender(uow.outbox, status, moved[status.message_id], "delivered")
    _cancel(uow.outbox, done.cancelled, "delivered")


async def on_messages_read(events: list[MessagesRead], uow: Uow) -> None:
    """The reader's marker moves (messages checked it); each sender concerned hears once."""
    store = uow.store
    for event in events:
        marked = await store.mark_read(event.chat_id, event.user_id, event.up_to_seq)
        if marked is not None:
            before, after = marked
            for status in await store.newest_read(event.chat_id, event.user_id, before, after):
                _tell_sender(uow.outbox, status, [event.user_id], "read", after)
        _cancel(uow.outbox, await store.cancel_read(event.chat_id, event.user_id, event.up_to_seq), "read")


def _tell_sender(
    outbox: Outbox,
    status: Status,
    users: list[str],
    kind: Literal["delivered", "read"],
    up_to_seq: int | None = None,
) -> None:
    if not status.sender_is_member:
        return
    update = StatusUpdate(
        status.message_id,
        status.chat_id,
        status.sender_id,
        users,
        status.delivered,
        status.read,
        status.total,
    )
    outbox.route(
        Signal(encode_frame("message_status", status_frame(update, kind, up_to_seq)), (status.sender_id,))
    )


def _cancel(outbox: Outbox, cancelled: list[Cancelled], reason: Literal["delivered", "read"]) -> None:
    for c in cancelled:
        outbox.emit(
            NotificationCancelled(
                recipient_id=c.user_id, chat_id=c.chat_id, message_id=c.message_id, reason=reason
            )
        )


# Catch-up.


async def on_sessions_registered(events: list[SessionRegistered], uow: Uow, *, limits: FlushPage) -> None:
    """A session opened: send it what its user has not acknowledged, first page."""
    pages = [
        await _flush_page(uow, limits, event.user_id, event.session_id, event.flush_id, 0, "")
        for event in events
    ]
    _send_pages(uow.outbox, [event.gateway_id for event in events], pages, limits.bytes)


async def on_flushes_requested(events: list[FlushRequested], uow: Uow, *, limits: FlushPage) -> None:
    pages = [
        await _flush_page(
            uow,
            limits,
            event.user_id,
            event.session_id,
            event.flush_id,
            event.after_position,
            event.after_cursor,
        )
        for event in events
    ]
    _send_pages(uow.outbox, [event.gateway_id for event in events], pages, limits.bytes)


async def _flush_page(
    uow: Uow,
    limits: FlushPage,
    user_id: str,
    session_id: str,
    flush_id: str,
    after_position: int,
    after_cursor: str,
) -> tuple[PageHead, bytes]:
    """One page of the flush, in order, and whether more is queued after it."""
    partitions = uow.outbox.partitions
    cursor = decode_cursor(after_cursor, after_position, partitions)
    page = await uow.store.backlog_page(user_id, cursor, limits.messages, limits.bytes)
    head = PageHead(session_id, flush_id, after_position, len(page.rows))
    if page.more and page.rows:
        more = advance_cursor(cursor, ((r.part, r.position) for r in page.rows))
        head = replace(head, more_after=page.rows[-1].position, cursor=encode_cursor(more))
    body = pack_page([PageEntry(str(r.message_id), str(r.chat_id), r.seq, r.frame) for r in page.rows])
    return head, body


def _send_pages(
    outbox: Outbox, gateways: list[str], pages: list[tuple[PageHead, bytes]], max_bytes: int
) -> None:
    """A gateway's pages of this batch as one broker message (up to about a page's bytes), a
    lone page as a `flush-page` whose headers say what it is."""
    by_gateway: dict[str, list[list[tuple[PageHead, bytes]]]] = defaultdict(list)
    group_bytes: dict[str, int] = {}
    for gateway_id, page in zip(gateways, pages, strict=True):
        groups = by_gateway[gateway_id]
        if not groups or group_bytes[gateway_id] + len(page[1]) > max_bytes:
            groups.append([])
            group_bytes[gateway_id] = 0
        groups[-1].append(page)
        group_bytes[gateway_id] += len(page[1])
    for gateway_id, groups in by_gateway.items():
        key = Topology.gateway_key(gateway_id)
        for group in groups:
            if len(group) > 1:
                outbox.publish(key, pack_pages(group), {Headers.KIND: Kind.FLUSH_PAGES})
                continue
            [(head, body)] = group
            headers: dict[str, object] = {
                Headers.KIND: Kind.FLUSH_PAGE,
                Headers.SESSION: head.session_id,
                Headers.FLUSH: head.flush_id,
                Headers.AFTER: head.after,
                Headers.COUNT: head.count,
            }
            if head.more_after is not None:
                headers[Headers.MORE] = head.more_after
                headers[Headers.CURSOR] = head.cursor
            outbox.publish(key, body, headers)


def handlers_for(limits: FlushPage, *, preview_chars: int = 0) -> dict[type[Event], Handler]:
    return {
        ChatCreated: on_chats_created,
        ChatMemberAdded: on_members_added,
        ChatMemberRemoved: on_members_removed,
        MessageStored: functools.partial(on_messages_stored, preview_chars=preview_chars),
        DeliveryAcked: on_deliveries_acked,
        MessagesRead: on_messages_read,
        SessionRegistered: functools.partial(on_sessions_registered, limits=limits),
        FlushRequested: functools.partial(on_flushes_requested, limits=limits),
        UserWentOnline: on_users_online,
        UserWentOffline: functools.partial(on_users_offline, preview_chars=preview_chars),
    }
