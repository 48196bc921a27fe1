"""What the partition handover (consumer.py, docs/scaling.md) takes from RabbitMQ, checked on the
real broker rather than assumed: a single-active-consumer quorum queue whose active consumer's
channel closes puts the unacknowledged deliveries back at the head, in order, and makes the next
consumer in subscription order active; a consumer that subscribes again waits at the back; each
return counts towards the delivery limit; and cancelling (instead of closing) would let the next
consumer start while the old one still holds deliveries, which is why the handover closes."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

PREFETCH = 5
TIMEOUT = 10.0


@dataclass
class Consumer:
    name: str
    channel: AbstractChannel
    queue: AbstractQueue
    tag: str = ""
    got: list[tuple[int, int | None]] = field(default_factory=list)
    held: list[AbstractIncomingMessage] = field(default_factory=list)


@dataclass
class Line:
    """Consumers of one SAC quorum queue, in subscription order, recording what each gets."""

    connection: AbstractRobustConnection
    name: str
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def subscribe(self, name: str) -> Consumer:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(self.name, passive=True)
        consumer = Consumer(name, channel, queue)

        async def on_message(message: AbstractIncomingMessage) -> None:
            count = (message.headers or {}).get("x-delivery-count")
            async with self.changed:
                consumer.got.append((int(message.body), count if isinstance(count, int) else None))
                consumer.held.append(message)
                self.changed.notify_all()

        consumer.tag = await queue.consume(on_message)
        return consumer

    async def until(self, consumer: Consumer, count: int) -> list[int]:
        async with asyncio.timeout(TIMEOUT), self.changed:
            await self.changed.wait_for(lambda: len(consumer.got) >= count)
        return [body for body, _ in consumer.got]


@pytest.fixture
async def line(infra_urls: tuple[str, str]) -> AsyncIterator[Line]:
    connection = await aio_pika.connect_robust(infra_urls[0])
    channel = await connection.channel(publisher_confirms=True)
    name = f"sbtest-sac-{uuid.uuid4().hex[:10]}"
    await channel.declare_queue(
        name,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-single-active-consumer": True, "x-delivery-limit": 20},
    )
    for i in range(30):
        await channel.default_exchange.publish(aio_pika.Message(str(i).encode(), delivery_mode=2), name)
    try:
        yield Line(connection, name)
    finally:
        await channel.queue_delete(name)
        await connection.close()


async def test_closing_the_active_channel_returns_its_deliveries_in_order_to_the_next_in_line(
    line: Line,
) -> None:
    a = await line.subscribe("a")
    assert await line.until(a, PREFETCH) == [0, 1, 2, 3, 4]
    b = await line.subscribe("b")
    c = await line.subscribe("c")
    # a hands over: 0 and 1 are done, 2..4 not yet handled.
    await a.held[1].ack(multiple=True)
    await a.channel.close()
    assert await line.until(b, PREFETCH) == [2, 3, 4, 5, 6]
    # Each return counts towards the delivery limit (5 and 6 may have reached a after its ack
    # freed the window, and come back too).
    assert [count for _, count in b.got][:3] == [1, 1, 1]
    assert c.got == []
    # a comes back at the back of the line; b hands over: c is next, not a.
    a_again = await line.subscribe("a again")
    await b.channel.close()
    assert await line.until(c, PREFETCH) == [2, 3, 4, 5, 6]
    assert [count for _, count in c.got][:3] == [2, 2, 2]
    await c.channel.close()
    assert await line.until(a_again, PREFETCH) == [2, 3, 4, 5, 6]
    assert a_again.got[0][1] == 3


async def test_cancelling_the_active_consumer_lets_the_next_start_while_it_still_holds_deliveries(
    line: Line,
) -> None:
    a = await line.subscribe("a")
    assert await line.until(a, PREFETCH) == [0, 1, 2, 3, 4]
    b = await line.subscribe("b")
    await a.queue.cancel(a.tag)
    # b starts with 5 while 0..4 are still unacknowledged at a: two consumers at once.
    assert await line.until(b, PREFETCH) == [5, 6, 7, 8, 9]
    assert len(a.held) == PREFETCH
