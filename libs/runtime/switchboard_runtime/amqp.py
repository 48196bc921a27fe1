"""The broker connection every service shares: one robust connection, one confirming channel."""

from collections.abc import Mapping, Sequence
from typing import Any, cast
from uuid import uuid4

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp.commands import Basic
from prometheus_client import Counter

from switchboard_contracts.batches import BATCH_CONTENT_TYPE, EVENT_CONTENT_TYPE, encode_batch
from switchboard_contracts.events import Envelope
from switchboard_contracts.partitions import event_routing_key
from switchboard_contracts.topology import OPTIONAL_SUBSCRIPTIONS, SUBSCRIPTIONS, Headers, Kind, Topology

from . import frames
from .retry import connect_retrying

__all__ = [
    "DELIVERY_LIMIT",
    "Bus",
    "broker_unavailable",
    "declare_service_queues",
    "encode_envelope",
    "queue_arguments",
]

log = structlog.get_logger()

PUBLISHED = Counter(
    "switchboard_published_messages_total", "Broker messages published, by exchange", ["exchange"]
)
PUBLISHED_EVENTS = Counter(
    "switchboard_published_events_total",
    "Events (or frames, on the route exchange) those messages carried, by exchange",
    ["exchange"],
)

# A message that kills its consumer before it can be acked comes back on every restart; quorum
# queues count redeliveries and dead-letter it past this limit instead of crash-looping. 20 is
# RabbitMQ 4's default: high enough that a few broker or consumer restarts mid-batch do not
# dead-letter healthy events.
DELIVERY_LIMIT = 20

# AMQP delivery modes: 2 is written to disk (events), 1 is not (frames for clients).
PERSISTENT, NOT_PERSISTENT = 2, 1

# What a broker restart or an unreachable broker raises while connecting.
CONNECT_ERRORS = (ConnectionError, OSError, aiormq.exceptions.AMQPConnectionError)


def broker_unavailable(exc: BaseException) -> bool:
    """A publish failed because the broker is out of reach or the connection to it is being
    made again: worth waiting for. A channel the broker closed for a reason of its own (a missing
    exchange, a refused permission: a subclass of ChannelClosed) is not; nor is a nack."""
    if isinstance(exc, aiormq.exceptions.ChannelClosed):
        return type(exc) is aiormq.exceptions.ChannelClosed
    return isinstance(exc, (*CONNECT_ERRORS, aiormq.exceptions.ChannelInvalidStateError))


def encode_envelope(envelope: Envelope) -> bytes:
    return envelope.__pydantic_serializer__.to_json(envelope)


def queue_arguments(topology: Topology, service: str) -> dict[str, Any]:
    """The arguments of every service queue (a partition queue or a service's one queue)."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-dead-letter-routing-key": service,
        # The queue keeps a dead-lettered event until the dead-letter queue has confirmed it, so
        # one on its way there survives a broker restart or a dead-letter queue that is away
        # (the default, at most once, drops it). RabbitMQ applies this only to a queue that
        # rejects publishes when full rather than dropping its oldest; the queues have no length
        # limit, so nothing is ever rejected for that.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        # One consumer at a time, the others on standby: per-chat order holds because one
        # process at a time handles a queue. A partitioned service's instances all wait on
        # every partition queue, so the broker hands a dead instance's partitions on at once,
        # and share the partitions out among themselves by handing over (consumer.py).
        "x-single-active-consumer": True,
    }


async def declare_service_queues(
    channel: AbstractChannel, topology: Topology, service: str
) -> list[AbstractQueue]:
    """A service's durable quorum queues, its dead-letter queue and their bindings (idempotent).

    One queue per partition for a partitioned service (`PARTITIONED`), bound with
    `<type>.<partition>`; one queue bound with `<type>.*` for any other. `service` names an entry
    of SUBSCRIPTIONS or of OPTIONAL_SUBSCRIPTIONS (e.g. "webhook"). One dead-letter queue per
    service, whatever its partitions: `switchboard-admin dlq replay` sends each event back to
    the queue of its partition.
    """
    dead = await channel.declare_queue(
        topology.dead_letter_queue(service), durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(topology.dead_letter_exchange, routing_key=service)
    event_types = {**SUBSCRIPTIONS, **OPTIONAL_SUBSCRIPTIONS}[service]
    queues = []
    for index, name in enumerate(topology.queues(service)):
        queue = await channel.declare_queue(name, durable=True, arguments=queue_arguments(topology, service))
        for key in topology.binding_keys(service, index, event_types):
            await queue.bind(topology.events_exchange, routing_key=key)
        queues.append(queue)
    return queues


class Bus:
    """Publishing with publisher confirms on a robust connection.

    Every publish waits for the broker's confirm, but many publishes may be in flight on the one
    channel at once: callers that have several to send gather them, so confirms are pipelined
    rather than paid one round trip each.
    """

    def __init__(self, url: str, topology: Topology, source: str) -> None:
        self.url = url
        self.topology = topology
        self.source = source
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._connection

    @property
    def channel(self) -> AbstractRobustChannel:
        if self._channel is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._channel

    async def connect(self) -> None:
        frames.install()
        async for attempt in connect_retrying("rabbitmq", CONNECT_ERRORS):
            with attempt:
                # 10 s heartbeats notice a dead broker or a stalled peer within about 20 s,
                # well before clients give up on a send. A lost broker is tried again every
                # second (aio-pika's default is 5 s): a restarted broker is found within a
                # second, while sends wait for it (batcher.py); each try is one refused connect.
                self._connection = await aio_pika.connect_robust(
                    self.url,
                    client_properties={"connection_name": self.source},
                    heartbeat=10,
                    reconnect_interval=1,
                )
        self._channel = await self.connection.channel(publisher_confirms=True)
        topo = self.topology
        channel = self.channel
        self._exchanges = {
            "events": await channel.declare_exchange(
                topo.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
            ),
            "route": await channel.declare_exchange(
                topo.route_exchange, aio_pika.ExchangeType.DIRECT, durable=True
            ),
            "dead-letter": await channel.declare_exchange(
                topo.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
            ),
        }
        try:
            for service in SUBSCRIPTIONS:
                await declare_service_queues(channel, topo, service)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise RuntimeError(
                f"RabbitMQ holds queues of namespace {topo.namespace!r} declared with other arguments by an"
                f" older version ({exc}). Drain and delete them, or set CHAT_NAMESPACE to a new name:"
                " see 'Operations notes' in docs/architecture.md."
            ) from exc

    def exchange(self, name: str) -> AbstractExchange:
        return self._exchanges[name]

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def is_ready(self) -> bool:
        return self._connection is not None and not self._connection.is_closed and self._channel is not None

    async def publish_event(self, envelope: Envelope) -> None:
        """To `<ns>.events` with routing key `<type>.<partition>` (partitions.py)."""
        await self.publish(
            "events",
            event_routing_key(envelope.type, envelope.data, self.topology.partitions),
            encode_envelope(envelope),
            message_id=str(envelope.id),
            persistent=True,
        )

    async def publish_batch(self, routing_key: str, events: Sequence[bytes]) -> None:
        """Encoded envelopes of one routing key as one persistent message on `<ns>.events`."""
        await self.publish(
            "events",
            routing_key,
            encode_batch(events),
            message_id=uuid4().hex,
            persistent=True,
            content_type=BATCH_CONTENT_TYPE,
            events=len(events),
        )

    async def publish_route(self, keys: Sequence[str], body: bytes, frames: int = 1) -> None:
        """A packed batch of frames (routing.py) to every gateway bound to any of `keys`.

        The first key is the routing key, the others go in `BCC`: the broker routes on all of
        them, delivers one copy per queue, and strips `BCC` before delivery.
        """
        headers: dict[str, Any] = {Headers.KIND: Kind.BATCH}
        if len(keys) > 1:
            headers["BCC"] = list(keys[1:])
        await self.publish("route", keys[0], body, headers=headers, events=frames)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        persistent: bool = False,
        mandatory: bool = False,
        content_type: str = EVENT_CONTENT_TYPE,
        events: int = 1,
    ) -> bool:
        """Publish and wait for the confirm; True when the broker routed it to at least one queue
        (with `mandatory`, an unroutable message comes back, ahead of the confirm).

        As aio-pika's Exchange.publish, but without its `Message` (the properties are made
        directly, a third of a publish's CPU saved) and without waiting for the frame to be
        written before the next publish may queue its own (`wait=False`): publishes gathered by
        a caller then queue together and go out in one socket write (frames.py). The confirm is
        still awaited.
        """
        properties = Basic.Properties(
            content_type=content_type,
            delivery_mode=PERSISTENT if persistent else NOT_PERSISTENT,
            headers=dict(headers) if headers else None,
            message_id=message_id,
        )
        if self.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{self.channel!r} closed")
        # aiormq's abstract channel does not declare `wait`; its one implementation has it.
        channel = cast(aiormq.Channel, await self.channel.get_underlay_channel())
        PUBLISHED.labels(exchange).inc()
        PUBLISHED_EVENTS.labels(exchange).inc(events)
        result = await channel.basic_publish(
            body,
            exchange=self._exchanges[exchange].name,
            routing_key=routing_key,
            properties=properties,
            mandatory=mandatory,
            wait=False,
        )
        return not mandatory or isinstance(result, Basic.Ack)
