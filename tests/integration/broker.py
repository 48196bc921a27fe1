"""Reading the broker as a test: the first message a consumer of a queue is handed."""

import asyncio

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

__all__ = ["first_delivery"]


async def first_delivery(queue: AbstractQueue, timeout: float = 30) -> AbstractIncomingMessage:
    """The first message the broker hands a consumer of `queue` (a consumer, not basic.get:
    single-active-consumer quorum queues refuse basic.get)."""
    got: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def on_message(message: AbstractIncomingMessage) -> None:
        if not got.done():
            got.set_result(message)

    await queue.consume(on_message)
    async with asyncio.timeout(timeout):
        return await got
