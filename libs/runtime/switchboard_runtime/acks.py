"""Consuming a queue whose every delivery is acknowledged once its callback has returned.

The callback only handles the delivery; acknowledging it is the runtime's business, so that no
service settles a broker delivery itself. Acknowledgements go out in bursts (`Acknowledger`).
"""

import asyncio
from collections.abc import Awaitable, Callable

import aiormq
import structlog
from aio_pika.abc import AbstractRobustChannel

from .delivery import Delivery, consume

__all__ = ["Acknowledger", "consume_acked"]

log = structlog.get_logger()


class Acknowledger:
    """Acknowledges a consumer's deliveries in bursts: one `basic.ack` (multiple) for the highest
    delivery tag handled since the last one, instead of a frame per delivery.

    Deliveries may finish out of order (one awaits, later ones do not), so a tag that an
    acknowledgement already covered is never acknowledged again: the broker closes the channel
    on an unknown delivery tag.
    """

    def __init__(self) -> None:
        self._channel: object = None
        # The highest tag acknowledged on the current channel, and the one to acknowledge next.
        self._acked = 0
        self._pending: Delivery | None = None
        self._task: asyncio.Task[None] | None = None

    def handled(self, message: Delivery) -> None:
        tag = message.delivery_tag or 0
        if message.channel is not self._channel:
            # A channel after a reconnect numbers its deliveries from 1 again.
            self._channel, self._acked, self._pending = message.channel, 0, None
        pending = self._pending.delivery_tag or 0 if self._pending is not None else 0
        if tag <= max(self._acked, pending):
            return
        self._pending = message
        if self._task is None:
            self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            while (message := self._pending) is not None:
                self._pending = None
                self._acked = message.delivery_tag or 0
                await message.ack(multiple=True)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            # The channel went away (broker restart); its deliveries went back with it, and the
            # new channel's are acknowledged on their own.
            log.debug("channel closed before an acknowledgement")
        finally:
            self._task = None


async def consume_acked(
    channel: AbstractRobustChannel, queue: str, callback: Callable[[Delivery], Awaitable[None]]
) -> None:
    """Deliver `queue`'s messages to `callback` as `consume` does, and acknowledge each once the
    callback has returned. One it raised for is not acknowledged itself; the acknowledgement of
    a later delivery (multiple) covers it, so the queue never stalls on it."""
    acks = Acknowledger()

    async def handle(message: Delivery) -> None:
        await callback(message)
        acks.handled(message)

    await consume(channel, queue, handle)
