"""This gateway's route queue: frames the broker routed here, handed to the right sessions."""

from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.topology import Headers

from .registry import Registry
from .routed import Routed, header_text

__all__ = ["RouteConsumer"]


class RouteConsumer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        # Handing a frame to a session's buffer cannot fail or block, so the delivery is acked
        # at once; what a crash loses here is still pending in delivery and is resent on reconnect.
        routed = Routed.from_message(message)
        headers = dict(message.headers)
        session_id = header_text(headers, Headers.SESSION)
        if session_id is not None:
            self.registry.to_session(session_id, routed)
        elif (user_id := header_text(headers, Headers.USER)) is not None:
            self.registry.to_user(user_id, header_text(headers, Headers.EXCEPT_SESSION), routed)
        await message.ack()
