"""This gateway's route queue: frames the broker routed here, handed to the right sessions."""

from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.topology import Headers

from .registry import Registry

__all__ = ["RouteConsumer"]


def _header(message: AbstractIncomingMessage, name: str) -> str | None:
    value = message.headers.get(name)
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


class RouteConsumer:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        # Handing a frame to a session's buffer cannot fail or block, so the delivery is acked
        # at once; what a crash loses here is still pending in delivery and is resent on reconnect.
        kind = _header(message, Headers.KIND) or "live"
        message_id = _header(message, Headers.MESSAGE_ID)
        session_id = _header(message, Headers.SESSION)
        if session_id is not None:
            self.registry.to_session(session_id, kind, message.body, message_id)
        else:
            user_id = _header(message, Headers.USER)
            if user_id is not None:
                self.registry.to_user(
                    user_id, _header(message, Headers.EXCEPT_SESSION), kind, message.body, message_id
                )
        await message.ack()
