"""This gateway's route queue: frames the broker routed here, handed to the right sessions."""

from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.topology import Kind

from .registry import Registry
from .rooms import Rooms
from .routed import Routed

__all__ = ["RouteConsumer"]


class RouteConsumer:
    def __init__(self, registry: Registry, rooms: Rooms) -> None:
        self.registry = registry
        self.rooms = rooms

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        # Handing a frame to a session's buffer cannot fail or block, so the delivery is acked
        # at once; what a crash loses here is still pending in delivery and is resent on reconnect.
        routed = Routed.from_message(message)
        if routed.kind == Kind.ROOM:
            self.rooms.deliver(routed)
        elif routed.session_id is not None:
            self.registry.to_session(routed.session_id, routed)
        elif routed.user_id is not None:
            self.registry.to_user(routed.user_id, routed.except_session, routed)
            if routed.left_chat is not None:
                sessions = set(self.registry.by_user.members(routed.user_id))
                await self.rooms.evict(routed.user_id, routed.left_chat, sessions)
        await message.ack()
