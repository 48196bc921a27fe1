"""Consuming a queue straight from aiormq, under aio-pika's robust connection.

aio-pika hands a consumer each delivery as an `IncomingMessage` (a dozen properties copied one by
one through a checking `__setattr__`) and runs the consumer's callback in a task of its own, on
top of the task aiormq already makes per delivery. On a busy service that was a larger share of
a consumer's CPU than decoding the batch the message carries (docs/benchmarks.md). Here the
callback gets aiormq's own delivered message in a thin wrapper, called directly from aiormq's
task; aio-pika still owns the connection and the channel, and so their recovery after a broker
restart: the consumer is registered again whenever its robust channel reopens.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import AbstractChannel, DeliveredMessage

__all__ = ["Delivery", "consume"]


@dataclass(slots=True, eq=False)
class Delivery:
    """One delivery, with what consumers read of it and the three ways to settle it."""

    message: DeliveredMessage

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def content_type(self) -> str | None:
        return self.message.header.properties.content_type

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.header.properties.headers or {}

    @property
    def message_id(self) -> str | None:
        return self.message.header.properties.message_id

    @property
    def routing_key(self) -> str | None:
        return self.message.routing_key

    @property
    def delivery_tag(self) -> int:
        return self.message.delivery_tag or 0

    @property
    def channel(self) -> AbstractChannel:
        """The channel it came on: a tag means something only there."""
        return self.message.channel

    async def ack(self, multiple: bool = False) -> None:
        await self.message.channel.basic_ack(self.delivery_tag, multiple=multiple)

    async def nack(self, requeue: bool = True) -> None:
        await self.message.channel.basic_nack(self.delivery_tag, requeue=requeue)

    async def reject(self, requeue: bool = False) -> None:
        await self.message.channel.basic_reject(self.delivery_tag, requeue=requeue)


async def consume(channel: AbstractRobustChannel, queue: str, callback: Callable[[Delivery], Any]) -> None:
    """Deliver `queue`'s messages to `callback` (called in aiormq's reader, so it must not block),
    and again on the channel aio-pika reopens after a lost connection."""

    def deliver(message: DeliveredMessage) -> Any:
        return callback(Delivery(message))

    async def register(*_: object) -> None:
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(queue, deliver)

    channel.reopen_callbacks.add(register)
    await register()
