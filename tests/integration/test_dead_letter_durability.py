"""Dead-lettering cannot lose an event: a service queue hands an event to its dead-letter queue
at least once (quorum queues' `x-dead-letter-strategy: at-least-once`), keeping it until the
dead-letter queue has confirmed it, across a broker restart.

The test makes the hand-over wait on purpose: the dead-letter queue is unbound, so the rejected
event has nowhere to go. At most once, the broker would drop it there and then. At least once,
the source queue keeps it through a broker restart (`rabbitmqctl stop_app` / `start_app`, as the
chaos run does); the binding comes back, and the event arrives in the dead-letter queue. It needs
the local RabbitMQ on loopback with `rabbitmqctl` at hand; every other system of the test run is
idle meanwhile and reconnects by itself.
"""

import contextlib
import uuid
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.events import ChatCreated, Envelope
from switchboard_contracts.partitions import partition_key, partition_of
from switchboard_contracts.topology import Topology
from switchboard_runtime.amqp import Bus
from tests.chaos.faults import Infra

from .broker import first_delivery
from .system import System

SERVICE = "delivery"
# How long the dead-letter queue is watched after each restart, and how many restarts are tried.
HAND_OVER_SECONDS = 10.0
HAND_OVER_RESTARTS = 3


def chat_created() -> Envelope:
    event = ChatCreated(
        chat_id=uuid.uuid4(),
        chat_type="group",
        title="dead letter",
        members=["a", "b"],
        created_by="a",
        created_at=datetime.now(UTC),
    )
    return Envelope.wrap(event, "test")


async def test_an_event_on_its_way_to_the_dead_letter_queue_survives_a_broker_restart(
    infra_urls: tuple[str, str],
) -> None:
    amqp_url, database_url = infra_urls
    infra = Infra(amqp_url, database_url)
    namespace_owner = System(amqp_url, database_url)  # unstarted: its namespace and clean-up only
    topology = Topology(namespace_owner.namespace)
    bus = Bus(amqp_url, topology, source="test")
    await bus.connect()  # declares every service's queues, as a service does at start
    envelope = chat_created()
    source = topology.partition_queue(
        SERVICE, partition_of(partition_key(envelope.type, envelope.data), topology.partitions)
    )
    dead = topology.dead_letter_queue(SERVICE)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        dead_queue = await channel.get_queue(dead, ensure=False)
        await dead_queue.unbind(topology.dead_letter_exchange, routing_key=SERVICE)
        await bus.publish_event(envelope)
        # Nothing more to publish: its reconnections would only restore bindings meanwhile.
        await bus.close()
        message = await first_delivery(await channel.get_queue(source, ensure=False))
        assert message.message_id == str(envelope.id)
        await message.reject(requeue=False)  # dead-lettered now, with no route to take

        # A broker restart with the event still unroutable: at most once it would be gone now.
        await connection.close()
        await infra.stop_broker()
        await infra.start_broker()

        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel()
        dead_queue = await channel.get_queue(dead, ensure=False)
        await dead_queue.bind(topology.dead_letter_exchange, routing_key=SERVICE)
        await connection.close()
        got = await handed_over(infra, amqp_url, dead)
        assert got.message_id == str(envelope.id)
        assert got.headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]
    finally:
        await connection.close()
        await bus.close()
        await namespace_owner.stop()


async def handed_over(infra: Infra, amqp_url: str, dead: str) -> AbstractIncomingMessage:
    """Restart the broker and take the first message of the dead-letter queue.

    The source queue hands over what it holds for dead-lettering when its leader starts. If the
    dead-letter queue is not ready to take it at that moment, the broker tries again only every
    few minutes, so this restarts again, a few times at most: a lost event arrives after none.
    """
    for _ in range(HAND_OVER_RESTARTS):
        await infra.stop_broker()
        await infra.start_broker()
        async with await aio_pika.connect(amqp_url) as connection:
            channel = await connection.channel()
            with contextlib.suppress(TimeoutError):
                got = await first_delivery(await channel.get_queue(dead, ensure=False), HAND_OVER_SECONDS)
                await got.ack()
                return got
    raise AssertionError("the dead-lettered event was lost")
