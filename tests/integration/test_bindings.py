"""A gateway's route queue bindings on the real broker: what `bind` returned for is routed, what
was let go stops being routed, a key taken back before its unbind stays, and a refused bind
fails only its own batch."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustQueue

from switchboard_runtime.bindings import Bindings


@dataclass
class Route:
    connection: AbstractRobustConnection
    channel: AbstractRobustChannel
    exchange: aio_pika.abc.AbstractExchange
    queue: AbstractRobustQueue
    bindings: Bindings

    async def routed(self, key: str) -> bool:
        """Whether the exchange routes `key` anywhere (a mandatory publish that came back was not)."""
        returned: list[str] = []
        self.channel.return_callbacks.add(lambda _, message: returned.append(message.routing_key or ""))
        try:
            await self.exchange.publish(aio_pika.Message(b"x"), key, mandatory=True)
        finally:
            self.channel.return_callbacks.clear()
        await self.queue.purge()
        return key not in returned


@pytest.fixture
async def route(infra_urls: tuple[str, str]) -> AsyncIterator[Route]:
    name = f"sbtest-bindings-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect_robust(infra_urls[0])
    # Publisher confirms: a mandatory publish is confirmed after its return, if any.
    channel = await connection.channel(publisher_confirms=True)
    # Not auto-deleted: that would take the exchange away with its last binding.
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
    queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
    bindings = Bindings(connection, queue.name, name)
    task = asyncio.create_task(bindings.run())
    yield Route(connection, channel, exchange, queue, bindings)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await exchange.delete()
    await connection.close()


async def test_every_key_is_routed_once_its_bind_returns(route: Route) -> None:
    keys = [f"user.{n}" for n in range(300)]
    # Asked for together: they go out in a few batches, not 300 round trips in a row.
    async with asyncio.timeout(30):
        await asyncio.gather(*(route.bindings.bind(key) for key in keys))
    assert route.bindings.bound == frozenset(keys)
    for key in (keys[0], keys[150], keys[-1]):
        assert await route.routed(key), key
    assert not await route.routed("user.never-bound")


async def test_a_key_let_go_stops_being_routed(route: Route) -> None:
    await route.bindings.bind("user.a")
    await route.bindings.bind("user.b")
    route.bindings.unbind("user.a")
    async with asyncio.timeout(10):
        await route.bindings.settled()
    assert not await route.routed("user.a")
    assert await route.routed("user.b")
    assert route.bindings.bound == frozenset({"user.b"})


async def test_a_key_wanted_again_before_its_unbind_stays_bound(route: Route) -> None:
    await route.bindings.bind("user.a")
    route.bindings.unbind("user.a")
    await route.bindings.bind("user.a")  # at once: the unbind had not been sent yet
    # And once its unbind has gone through: it is bound again.
    route.bindings.unbind("user.a")
    async with asyncio.timeout(10):
        await route.bindings.settled()
    await route.bindings.bind("user.a")
    async with asyncio.timeout(10):
        await route.bindings.settled()
    assert await route.routed("user.a")


async def test_a_refused_bind_fails_its_batch_and_the_next_one_binds(route: Route) -> None:
    # A bind to an exchange that does not exist is refused by the broker, which closes the
    # channel: the binds of that batch fail, and the next batch opens a new channel.
    name = f"sbtest-bindings-missing-{uuid.uuid4().hex[:10]}"
    missing = Bindings(route.connection, route.queue.name, name)
    task = asyncio.create_task(missing.run())
    try:
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            async with asyncio.timeout(10):
                await missing.bind("user.a")
        assert missing.bound == frozenset()
        exchange = await route.channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT)
        try:
            async with asyncio.timeout(10):
                await missing.bind("user.a")
            assert missing.bound == frozenset({"user.a"})
        finally:
            await exchange.delete()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The other bindings, on their own channel, never noticed.
    await route.bindings.bind("user.b")
    assert await route.routed("user.b")


async def test_restore_binds_every_key_again(route: Route) -> None:
    await asyncio.gather(*(route.bindings.bind(f"user.{n}") for n in range(20)))
    # What a reconnect leaves: the queue without those bindings.
    for n in range(20):
        await route.queue.unbind(route.exchange, f"user.{n}")
    assert not await route.routed("user.3")
    async with asyncio.timeout(10):
        await route.bindings.restore()
    assert all([await route.routed(f"user.{n}") for n in range(20)])
