"""This gateway's route queue: what the broker routed here, handed to the right sessions."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from switchboard_contracts.pages import unpack_pages
from switchboard_contracts.routing import Live, Reply, unpack_route
from switchboard_contracts.topology import Kind
from switchboard_runtime.delivery import Delivery

from .registry import Registry
from .rooms import Rooms
from .routed import Page, RoomFrame, header_text

__all__ = ["RouteConsumer"]

log = structlog.get_logger()


class RouteConsumer:
    def __init__(
        self,
        gateway_id: str,
        registry: Registry,
        rooms: Rooms,
        resync: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.gateway_id = gateway_id
        self.registry = registry
        self.rooms = rooms
        self.resync = resync
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, message: Delivery) -> None:
        # Handing a frame to a session's buffer cannot fail or block, so the runtime acknowledges
        # the delivery as soon as this returns (consume_acked); what a crash loses here is still
        # pending in delivery and is resent on reconnect.
        headers = message.headers
        kind = header_text(headers, "sb-kind")
        if kind == Kind.BATCH:
            await self._batch(message.body)
        elif kind == Kind.FLUSH_PAGE:
            page = Page.from_message(message.body, headers)
            if page is not None:
                self.registry.to_session(page.session_id, page)
        elif kind == Kind.FLUSH_PAGES:
            self._pages(message.body)
        elif kind == Kind.ROOM:
            room = RoomFrame.from_message(message.body, headers)
            if room is not None:
                self.rooms.deliver(room)
        elif kind == Kind.RESYNC:
            # In the background: it publishes once per session, the route queue must not wait.
            task = asyncio.create_task(self.resync())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pages(self, body: bytes) -> None:
        try:
            pages = unpack_pages(body)
        except ValueError:
            log.exception("unreadable flush pages dropped")
            return
        for head, page in pages:
            self.registry.to_session(head.session_id, Page.from_head(head, page))

    async def _batch(self, body: bytes) -> None:
        try:
            frames = unpack_route(body)
        except ValueError:
            log.exception("unreadable route batch dropped")
            return
        registry = self.registry
        for frame in frames:
            if isinstance(frame, Reply):
                if frame.gateway_id == self.gateway_id:
                    registry.to_session(frame.session_id, frame)
                continue
            except_session = frame.except_session if isinstance(frame, Live) else None
            for user in frame.users:
                registry.to_user(user, except_session, frame)
            if isinstance(frame, Live) and frame.left_chat is not None:
                for user in frame.users:
                    sessions = set(registry.by_user.members(user))
                    if sessions:
                        await self.rooms.evict(user, frame.left_chat, sessions)
