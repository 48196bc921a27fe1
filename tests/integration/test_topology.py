"""The broker topology is whole as soon as any one service connects."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from switchboard_contracts.events import ChatCreated, Envelope
from switchboard_contracts.partitions import event_routing_key, partition_key, partition_of
from switchboard_contracts.topology import PARTITIONED, SUBSCRIPTIONS, Topology
from switchboard_runtime.amqp import Bus


@pytest.fixture
async def bus(infra_urls: tuple[str, str]) -> AsyncIterator[Bus]:
    bus = Bus(infra_urls[0], Topology(f"sbtest-{uuid.uuid4().hex[:10]}"), source="test")
    await bus.connect()
    yield bus
    topo = bus.topology
    channel = await bus.connection.channel()
    for service in SUBSCRIPTIONS:
        for queue in (*topo.queues(service), topo.dead_letter_queue(service)):
            await channel.queue_delete(queue)
    for name in (topo.events_exchange, topo.route_exchange, topo.dead_letter_exchange):
        await channel.exchange_delete(name)
    await bus.close()


async def test_every_event_type_is_routed_before_any_consumer_started(bus: Bus) -> None:
    for service, types in SUBSCRIPTIONS.items():
        for event_type in types:
            for partition in range(bus.topology.partitions):
                key = f"{event_type}.{partition}"
                routed = await bus.publish("events", key, b"{}", mandatory=True)
                assert routed, f"{key} would be dropped: no {service} queue bound yet"


async def test_an_event_published_before_its_consumer_waits_for_it(bus: Bus) -> None:
    event = ChatCreated(
        chat_id=uuid.uuid4(),
        chat_type="group",
        title=None,
        members=["a"],
        created_by="a",
        created_at="2026-01-01T00:00:00Z",
    )
    envelope = Envelope.wrap(event, "test")
    await bus.publish_event(envelope)
    assert "delivery" in PARTITIONED
    partition = partition_of(str(event.chat_id), bus.topology.partitions)
    assert partition_key(envelope.type, envelope.data) == str(event.chat_id)
    key = event_routing_key(envelope.type, envelope.data, bus.topology.partitions)
    assert key == f"{event.TYPE}.{partition}"
    channel = await bus.connection.channel()
    queue = await channel.declare_queue(bus.topology.partition_queue("delivery", partition), passive=True)
    async with asyncio.timeout(10), queue.iterator() as messages:
        async for message in messages:
            assert Envelope.model_validate_json(message.body).id == envelope.id
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            await message.ack()
            break
