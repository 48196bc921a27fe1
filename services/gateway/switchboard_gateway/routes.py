"""This gateway's route queue: frames the broker routed here, handed to the right sessions."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.topology import Kind

from .registry import Registry
from .rooms import Rooms
from .routed import Routed

__all__ = ["RouteConsumer"]

log = structlog.get_logger()


class RouteConsumer:
    def __init__(
        self, registry: Registry, rooms: Rooms, resync: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self.registry = registry
        self.rooms = rooms
        self.resync = resync
        self._tasks: set[asyncio.Task[None]] = set()
        # The latest delivery not yet acknowledged, and whether an acknowledgement is on its way.
        self._unacked: AbstractIncomingMessage | None = None
        self._acking = False

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        # Handing a frame to a session's buffer cannot fail or block, so the delivery is acked
        # at once; what a crash loses here is still pending in delivery and is resent on reconnect.
        routed = Routed.from_message(message)
        if routed.kind == Kind.ROOM:
            self.rooms.deliver(routed)
        elif routed.kind == Kind.RESYNC:
            # In the background: it publishes once per session, the route queue must not wait.
            task = asyncio.create_task(self.resync())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif routed.session_id is not None:
            self.registry.to_session(routed.session_id, routed)
        elif routed.user_id is not None:
            self.registry.to_user(routed.user_id, routed.except_session, routed)
            if routed.left_chat is not None:
                sessions = set(self.registry.by_user.members(routed.user_id))
                await self.rooms.evict(routed.user_id, routed.left_chat, sessions)
        self._ack_soon(message)

    def _ack_soon(self, message: AbstractIncomingMessage) -> None:
        """Acknowledge every frame handled so far with one `basic.ack` (multiple) once this burst
        of deliveries is through, not one frame per delivery: a message makes about five route
        frames, and each acknowledgement is a write to the broker and a frame it must parse."""
        self._unacked = message
        if not self._acking:
            self._acking = True
            task = asyncio.create_task(self._ack())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ack(self) -> None:
        message, self._unacked, self._acking = self._unacked, None, False
        if message is None:
            return
        try:
            await message.ack(multiple=True)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            # The channel went away (broker restart); its deliveries went back with it, and the
            # new channel's are acknowledged on their own.
            log.debug("route channel closed before an acknowledgement")
