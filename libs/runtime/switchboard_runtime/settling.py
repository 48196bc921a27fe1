"""Consuming a queue one delivery at a time, in queue order, where the callback says what became
of each delivery and the runtime settles it accordingly.

A service decides whether a delivery is done with, dead-lettered or to be tried again; telling the
broker is left to the runtime, so that no service acknowledges, rejects or requeues a delivery
itself.
"""

import enum
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

__all__ = ["InOrderQueue", "Outcome", "Received"]

log = structlog.get_logger()


class Outcome(enum.Enum):
    # Acknowledged: nothing more to do with it.
    HANDLED = "handled"
    # Rejected without requeueing: the queue's dead-letter exchange takes it.
    DEAD_LETTER = "dead_letter"
    # Handed back to the queue, to be delivered again.
    REQUEUE = "requeue"


class Received(Protocol):
    """What a callback reads of a delivery."""

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def routing_key(self) -> str | None: ...


class InOrderQueue:
    """A declared queue whose deliveries one callback handles one at a time, each settled before
    the next is handed over, so they are handled in the order the queue delivers them."""

    def __init__(self, queue: AbstractQueue) -> None:
        self._queue = queue

    async def consume(self, callback: Callable[[Received], Awaitable[Outcome]]) -> None:
        """Until cancelled. A delivery the callback raised for is left unsettled, and the
        exception ends the consumer; the broker redelivers it when the channel closes."""
        async with self._queue.iterator() as messages:
            async for message in messages:
                await _settle(message, await callback(message))


async def _settle(message: AbstractIncomingMessage, outcome: Outcome) -> None:
    try:
        if outcome is Outcome.HANDLED:
            await message.ack()
        elif outcome is Outcome.DEAD_LETTER:
            await message.reject(requeue=False)
        else:
            await message.nack(requeue=True)
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
        # The channel it came on is gone; the broker redelivers it.
        log.warning(
            "channel closed before settling a delivery; the broker redelivers it",
            outcome=outcome.value,
            routing_key=message.routing_key,
        )
