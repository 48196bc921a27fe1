"""The queues a consumer waits on, and for a partitioned service which partitions it keeps.

Partitions (messages, delivery; docs/scaling.md): the consumer waits, as single-active-consumer
standby or active, on every partition queue of its service, each on a channel of its own, so the
broker moves a dead instance's partitions to another one at once. The instances agree by
rendezvous hashing over their live set (membership.py) which one should be active where; one
active on a partition it does not own hands it over: it stops taking that partition's
deliveries, lets the batch in progress commit and be acknowledged, and closes the partition's
channel. RabbitMQ puts the deliveries it held back at the head of the queue, in order, and makes
the next consumer in line active; this one subscribes again, at the back.

A service that is not partitioned (presence, the webhook) has one queue and the same machinery
minus the handovers: its standbys wait in line.
"""

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractRobustChannel
from prometheus_client import Counter, Gauge

from switchboard_contracts.topology import PARTITIONED

from .amqp import Bus, queue_arguments
from .delivery import Delivery, consume
from .membership import Membership
from .ownership import should_hand_over

__all__ = ["Subscriptions"]

log = structlog.get_logger()

PARTITIONS_OWNED = Gauge(
    "switchboard_partitions_owned",
    "Partitions this instance owns by its view of the live instances",
    ["service"],
)
PARTITIONS_ACTIVE = Gauge(
    "switchboard_partitions_active",
    "Partition queues this instance has had deliveries from since subscribing",
    ["service"],
)
PARTITION_MOVES = Counter(
    "switchboard_partition_moves_total",
    "Partition subscriptions closed and renewed: `handover` gave up an active partition, `requeue`"
    " moved a standby subscription to the back of the line",
    ["service", "kind"],
)

# How long a stopping instance waits for its batch in progress before closing its channels
# anyway (the batch is then redelivered, as after a crash).
STOP_TIMEOUT_SECONDS = 20.0
# Back-off while a partition cannot be subscribed to again (the broker is away).
RESUBSCRIBE_SECONDS = 1.0


@dataclass
class _Subscription:
    """One queue this instance waits on: a partition queue, or a service's one queue."""

    index: int
    queue: str
    channel: AbstractRobustChannel | None = None
    # Renewed with each subscription; deliveries of an earlier one are left alone (the broker
    # took them back when that channel closed).
    generation: int = 0
    # False while handing over or stopping: deliveries stay unacknowledged and go back.
    accepting: bool = False
    # When the first delivery of the current subscription came: from then on this instance is
    # the active consumer (RabbitMQ 3.x does not say so otherwise).
    active_since: float | None = None
    # A handover or re-subscription is under way.
    moving: bool = False


Waiting = tuple[_Subscription, int, Delivery]


class Subscriptions:
    def __init__(self, bus: Bus, service: str, prefetch: int) -> None:
        self.bus = bus
        self.service = service
        topology = bus.topology
        self._subs = [_Subscription(i, name) for i, name in enumerate(topology.queues(service))]
        # The window is shared out over the queues: an instance that owns every partition has
        # about `prefetch` deliveries in flight, and a handover returns at most this many.
        self.queue_prefetch = max(1, math.ceil(prefetch / len(self._subs)))
        self.membership = Membership(bus, service) if service in PARTITIONED else None
        self._inbox: asyncio.Queue[Waiting] = asyncio.Queue()
        # The subscriptions with deliveries in the batch being handled, and a condition notified
        # when a batch is settled: a handover waits for its partition's batch.
        self._in_batch: set[int] = set()
        self._settled = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def instance_id(self) -> str | None:
        return self.membership.id if self.membership else None

    async def start(self) -> None:
        if self.membership is not None:
            await self.membership.start()
        for sub in self._subs:
            await self._subscribe(sub)

    async def run(self) -> None:
        """Keep to the partitions this instance owns (announced only once it waits on every
        partition: nobody hands it one before)."""
        if self.membership is None:
            await asyncio.Event().wait()
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.membership.run())
                group.create_task(self._rebalance(self.membership))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from group_error
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def next_batch(self, size: int) -> list[tuple[str, Delivery]]:
        """Everything waiting, up to `size` messages, of subscriptions still taking deliveries,
        each with the queue it came from; marks their subscriptions as in a batch until
        `settled()`.

        Deliveries of a partition being handed over are skipped: they stay unacknowledged and
        the broker puts them back when its channel closes. Nothing awaits between taking and
        recording the batch, so a handover sees either the batch with its partition or none.
        """
        batch: list[Waiting] = []
        while not batch:
            item = await self._inbox.get()
            if self._current(item[0], item[1]):
                batch.append(item)
        while len(batch) < size and not self._inbox.empty():
            item = self._inbox.get_nowait()
            if self._current(item[0], item[1]):
                batch.append(item)
        self._in_batch = {sub.index for sub, _, _ in batch}
        return [(sub.queue, message) for sub, _, message in batch]

    async def settled(self) -> None:
        self._in_batch = set()
        async with self._settled:
            self._settled.notify_all()

    async def stop(self) -> None:
        """Hand every partition to the other instances: say goodbye, let the batch in progress
        finish (bounded), close the channels. Deliveries not yet handled go back, in order."""
        self._stopping = True
        if self.membership is not None:
            await self.membership.leave()
        for sub in self._subs:
            sub.accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS), self._settled:
                await self._settled.wait_for(lambda: not self._in_batch)
        for sub in self._subs:
            await self._close(sub)

    def _current(self, sub: _Subscription, generation: int) -> bool:
        return sub.accepting and sub.generation == generation

    async def _subscribe(self, sub: _Subscription) -> None:
        """Wait on `sub`'s queue, at the back of its line of consumers, on a new channel."""
        while True:
            try:
                channel = await self.bus.connection.channel()
                await channel.set_qos(prefetch_count=self.queue_prefetch)
                queue = await channel.declare_queue(
                    sub.queue, durable=True, arguments=queue_arguments(self.bus.topology, self.service)
                )
                sub.generation += 1
                sub.channel, sub.active_since, sub.accepting = channel, None, True
                await consume(channel, queue.name, self._deliverer(sub, sub.generation))
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.warning("could not subscribe; retrying", queue=sub.queue, exc_info=True)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)  # back-off while the broker is away

    def _deliverer(self, sub: _Subscription, generation: int) -> Callable[[Delivery], None]:
        def deliver(message: Delivery) -> None:
            if not self._current(sub, generation):
                return  # left unacknowledged: it goes back when this channel closes
            if sub.active_since is None:
                sub.active_since = time.monotonic()
                self._count_partitions()
            self._inbox.put_nowait((sub, generation, message))

        return deliver

    async def _close(self, sub: _Subscription) -> None:
        channel, sub.channel = sub.channel, None
        sub.accepting, sub.active_since = False, None
        self._count_partitions()
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _move(self, sub: _Subscription, kind: str) -> None:
        """Give up `sub` (active or standby) and wait on it again at the back of the line.

        The partition's batch in progress, if any, is committed and acknowledged first; its
        deliveries not yet handled go back to the head of the queue when the channel closes,
        ahead of newer ones, and the next consumer in line gets them. Closing the channel, not
        cancelling the consumer: RabbitMQ 3.10 makes the next consumer active as soon as the
        active one cancels, while the cancelled one still holds unacknowledged deliveries.
        """
        sub.moving = True
        try:
            sub.accepting = False
            async with self._settled:
                await self._settled.wait_for(lambda: sub.index not in self._in_batch)
            await self._close(sub)
            PARTITION_MOVES.labels(self.service, kind).inc()
            log.info("partition subscription renewed", queue=sub.queue, kind=kind)
            if not self._stopping:
                await self._subscribe(sub)
        finally:
            sub.moving = False

    async def _rebalance(self, membership: Membership) -> None:
        """Keep to the partitions this instance owns, on every change and every heartbeat."""
        while True:
            changed = membership.changed.is_set()
            membership.changed.clear()
            for sub in self._subs:
                if sub.moving or self._stopping:
                    continue
                owner = membership.owner(sub.index)
                if owner == membership.id:
                    continue
                if sub.active_since is None:
                    # Standby here (or active on an idle queue): behind the owner in the line,
                    # so that the next handover lands there rather than on another standby.
                    if changed:
                        self._spawn(self._move(sub, "requeue"))
                elif should_hand_over(membership.id, owner, sub.active_since, membership.last_seen(owner)):
                    self._spawn(self._move(sub, "handover"))
            self._count_partitions()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(membership.changed.wait(), membership.heartbeat_seconds)

    def _count_partitions(self) -> None:
        if self.membership is not None:
            me = self.membership.id
            PARTITIONS_OWNED.labels(self.service).set(
                sum(1 for sub in self._subs if self.membership.owner(sub.index) == me)
            )
        PARTITIONS_ACTIVE.labels(self.service).set(
            sum(1 for sub in self._subs if sub.active_since is not None)
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        """A handover or re-subscription, beside the batches. One that fails leaves its
        subscription closed and is logged; the next change or heartbeat tries it again."""

        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("partition subscription not renewed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
