"""How the instances of a partitioned service know each other: heartbeats on a fanout exchange.

Each instance has an exclusive queue bound to `<ns>.<service>.instances` and publishes
`{"instance": id}` there every HEARTBEAT_SECONDS; every instance hears every heartbeat, its own
included. An instance not heard from for EXPIRY_SECONDS is taken for dead; one stopping on
purpose says so (`"leaving": true`) and is dropped at once. The live set feeds rendezvous
ownership (ownership.py); views of different instances may differ for a moment, which costs
balance, never order (consumer.py).
"""

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from .amqp import Bus
from .ownership import owner

__all__ = ["EXPIRY_SECONDS", "HEARTBEAT_SECONDS", "Membership"]

log = structlog.get_logger()

# A heartbeat a second: a new instance gets its partitions, and a partition the broker handed to
# the wrong standby moves on, within about a second.
HEARTBEAT_SECONDS = 1.0
# Five missed heartbeats: a busy two-core machine can stall an event loop for a while without
# that looking like a death. A killed instance's partitions do not wait for this (the broker
# moves them at once); only the balance of who keeps them does.
EXPIRY_SECONDS = 5.0


class Membership:
    def __init__(
        self,
        bus: Bus,
        service: str,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        expiry_seconds: float = EXPIRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.service = service
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_seconds = heartbeat_seconds
        self.expiry_seconds = expiry_seconds
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._live: tuple[str, ...] = (self.id,)
        # Set whenever the live set changes; the consumer clears it when it has looked.
        self.changed = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def live(self) -> tuple[str, ...]:
        """The instances taken for alive, this one always among them, sorted."""
        return self._live

    def owner(self, partition: int) -> str:
        return owner(partition, self._live)

    def last_seen(self, instance: str) -> float | None:
        return self._seen.get(instance)

    async def start(self) -> None:
        """Listen for the others (before this instance is announced by `run`)."""
        topo = self.bus.topology
        channel = await self.bus.connection.channel()
        self._channel = channel
        self._exchange = await channel.declare_exchange(
            topo.instances_exchange(self.service), aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(
            f"{topo.instances_exchange(self.service)}.{self.id}", exclusive=True, auto_delete=True
        )
        await queue.bind(self._exchange)
        await queue.consume(self._on_heartbeat, no_ack=True)

    async def run(self) -> None:
        """Announce this instance every heartbeat period and expire the silent ones."""
        while True:
            try:
                await self._announce(leaving=False)
            except Exception:  # the broker is away: the robust connection comes back by itself
                log.warning("heartbeat not published")
            self._update()
            await asyncio.sleep(self.heartbeat_seconds)  # the heartbeat's clock

    async def leave(self) -> None:
        """Tell the others this instance is stopping, so they rebalance without waiting."""
        with contextlib.suppress(Exception):
            await self._announce(leaving=True)

    async def _announce(self, *, leaving: bool) -> None:
        if self._exchange is None:
            return
        body = orjson.dumps({"instance": self.id, "leaving": leaving})
        await self._exchange.publish(aio_pika.Message(body), routing_key="")

    async def _on_heartbeat(self, message: AbstractIncomingMessage) -> None:
        try:
            data = orjson.loads(message.body)
            instance, leaving = str(data["instance"]), bool(data.get("leaving", False))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable heartbeat ignored")
            return
        if leaving:
            self._seen.pop(instance, None)
        else:
            self._seen[instance] = self._clock()
        self._update()

    def _update(self) -> None:
        now = self._clock()
        for instance, seen in list(self._seen.items()):
            if now - seen > self.expiry_seconds and instance != self.id:
                del self._seen[instance]
        live = tuple(sorted({self.id, *self._seen}))
        if live != self._live:
            log.info("instances changed", instances=list(live), me=self.id)
            self._live = live
            self.changed.set()
