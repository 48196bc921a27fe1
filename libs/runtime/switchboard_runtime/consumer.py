"""The one base consumer: it owns ack, batching, idempotency, dead-lettering and metrics.

A service gives it a routing table `{EventModel: handler}`. Handlers hold business logic only:
`async def on_<event>(event, ctx)`, where `ctx` gives them the open transaction, the outbox and
whether this event id was already processed.

How a batch goes:
1. Deliveries arrive under a prefetch window and wait in a local queue; the worker takes all
   that are waiting (up to `batch_size`), so batches form by themselves under load and a lone
   message is handled at once.
2. One database transaction covers the batch; each event runs in its own savepoint, so a handler
   that raises rolls back only its own work. Its event goes to the dead-letter queue (no requeue:
   a handler that failed once on the same input fails again), the rest of the batch commits.
3. After commit, the handlers' after-commit actions run (publishes whose result they need), then
   the batch is acknowledged. A crash anywhere before the ack redelivers the batch; the
   `processed_events` row written in each savepoint tells handlers it is a repeat.
4. Database or broker outages are not poison: the batch is retried with backoff, unacknowledged,
   a bounded number of times. If it still fails, its events are tried one by one, each in a
   savepoint, for as long as the database is down; an event that fails with an error that looks
   transient while the database answers is its own fault (a statement that always times out)
   and is dead-lettered, so it cannot hold up the healthy events behind it for ever.

Partitions (messages, delivery; docs/scaling.md): the consumer waits, as single-active-consumer
standby or active, on every partition queue of its service, each on a channel of its own, so the
broker moves a dead instance's partitions to another one at once. The instances agree by
rendezvous hashing over their live set (membership.py) which one should be active where; one
active on a partition it does not own hands it over: it stops taking that partition's
deliveries, lets the batch in progress commit and be acknowledged, and closes the partition's
channel. RabbitMQ puts the deliveries it held back at the head of the queue, in order, and makes
the next consumer in line active; this one subscribes again, at the back. A batch may hold
events of several partitions; it is handled as one, in arrival order.
"""

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiormq.exceptions
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from switchboard_contracts.events import Envelope, Event
from switchboard_contracts.topology import PARTITIONED, SUBSCRIPTIONS

from .amqp import Bus, declare_service_queues, queue_arguments
from .db import Conn
from .membership import Membership
from .outbox import OutboxWriter
from .ownership import should_hand_over
from .transient import is_transient

__all__ = ["Batched", "EventConsumer", "Handler", "HandlerContext", "batch_retrying", "database_writable"]

log = structlog.get_logger()

EventHandler = Callable[[Any, "HandlerContext"], Awaitable[None]]


@dataclass(frozen=True)
class Batched:
    """A handler that takes, in one call and in order, every event of its type in a run of the
    batch, so it can read and write with a few set-based statements instead of a few per event.
    (When a batch is redone event by event to isolate a failure, it is called with one at a time.)
    """

    handle: Callable[[list[tuple[Any, "HandlerContext"]]], Awaitable[None]]


Handler = EventHandler | Batched

EVENTS = Counter("switchboard_events_total", "Events handled, by outcome", ["service", "type", "outcome"])
BATCH_SECONDS = Histogram(
    "switchboard_batch_seconds", "Time to handle one batch, commit and ack", ["service"]
)
BATCH_SIZE = Histogram(
    "switchboard_batch_size", "Events per batch", ["service"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)
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

# After-commit work (publishes) is retried in place this long before the batch goes back to the
# queue: a requeue counts towards the delivery limit, a short broker blip should not.
AFTER_COMMIT_RETRY_SECONDS = 30.0

# A batch that fails with a transient error is retried whole this many times, or for this long,
# before its events are tried one by one. A deadlock or serialization failure clears in a retry or
# two; five tries back off about 3 to 7 s in all (0.2 s doubling, plus up to 1 s of jitter each).
# A longer database outage needs no more: the one-by-one pass waits while the database is down.
# The time cap is for a batch whose every try is slow (a statement that runs into its timeout).
BATCH_RETRY_ATTEMPTS = 5
BATCH_RETRY_SECONDS = 30.0
# The same allowance as /readyz: a database that cannot answer `SELECT` in 2 s is not healthy.
PROBE_TIMEOUT_SECONDS = 2.0


def _backoff() -> wait_exponential_jitter:
    # From 0.2 s doubling up to 5 s, plus up to 1 s of jitter so that services do not retry in step.
    return wait_exponential_jitter(multiplier=0.2, max=5.0)


def _log_retry(message: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        log.warning(message, error=repr(state.outcome.exception() if state.outcome else None))

    return before_sleep


def batch_retrying() -> AsyncRetrying:
    """The in-place retries of a whole batch: transient errors only, and bounded."""
    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=_backoff(),
        stop=stop_after_attempt(BATCH_RETRY_ATTEMPTS) | stop_after_delay(BATCH_RETRY_SECONDS),
        before_sleep=_log_retry("batch not committed; retrying"),
        reraise=True,
    )


async def database_writable(pool: asyncpg.Pool) -> bool:
    """Whether the database answers and takes writes, on a connection of its own.

    More than `SELECT 1`: during a failover the old primary answers reads but fails writes with
    "read-only transaction" (transient), and that must not make every event look poison.
    """
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            return bool(
                await pool.fetchval(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
                )
            )
    except Exception:  # whatever keeps it from answering, it is not healthy
        return False


@dataclass
class HandlerContext:
    conn: Conn
    envelope: Envelope
    # True when this event id was committed before: the handler must not repeat its effects,
    # but may redo its after-commit work (a crash may have come between commit and publish).
    duplicate: bool
    outbox: OutboxWriter
    # For after-commit publishes whose outcome the handler needs (delivery's mandatory routing).
    bus: Bus
    # For after-commit work that needs a transaction of its own: `conn` is only valid during the
    # handler (delivery records a notification once it knows a publish was not routed).
    pool: asyncpg.Pool
    after_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass
class _Subscription:
    """One queue this instance waits on: a partition queue, or a service's one queue."""

    index: int
    queue: str
    channel: AbstractChannel | None = None
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


@dataclass
class _Item:
    message: AbstractIncomingMessage
    envelope: Envelope | None = None
    event: Event | None = None
    handler: Handler | None = None
    ctx: HandlerContext | None = None
    failed: bool = False


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        bus: Bus,
        pool: asyncpg.Pool,
        handlers: Mapping[type[Event], Handler],
        prefetch: int,
        batch_size: int,
    ) -> None:
        self.service = service
        self.bus = bus
        self.pool = pool
        self.handlers = {model.TYPE: (model, handler) for model, handler in handlers.items()}
        self.batch_size = batch_size
        topology = bus.topology
        self._subs = [_Subscription(i, name) for i, name in enumerate(topology.queues(service))]
        # The window is shared out over the queues: an instance that owns every partition has
        # about `prefetch` deliveries in flight, and a handover returns at most this many.
        self.queue_prefetch = max(1, math.ceil(prefetch / len(self._subs)))
        self.membership = Membership(bus, service) if service in PARTITIONED else None
        self._inbox: asyncio.Queue[tuple[_Subscription, int, AbstractIncomingMessage]] = asyncio.Queue()
        # The subscriptions with deliveries in the batch being handled, and a condition notified
        # when a batch is settled: a handover waits for its partition's batch.
        self._in_batch: set[int] = set()
        self._settled = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._declared = False

    @property
    def instance_id(self) -> str | None:
        return self.membership.id if self.membership else None

    async def declare(self) -> None:
        """Declare this service's queues; refuse handlers the topology does not route."""
        unrouted = set(self.handlers) - set(SUBSCRIPTIONS[self.service])
        if unrouted:
            raise RuntimeError(
                f"{self.service} handles {sorted(unrouted)} but SUBSCRIPTIONS does not route them"
            )
        channel = await self.bus.connection.channel()
        try:
            await declare_service_queues(channel, self.bus.topology, self.service)
        finally:
            await channel.close()
        self._declared = True

    async def run(self) -> None:
        """Wait on every queue, announce this instance, and handle batches until cancelled."""
        if not self._declared:
            await self.declare()
        if self.membership is not None:
            await self.membership.start()
        for sub in self._subs:
            await self._subscribe(sub)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._work())
                if self.membership is not None:
                    # Announced only once it waits on every partition: nobody hands it one before.
                    group.create_task(self.membership.run())
                    group.create_task(self._rebalance(self.membership))
        except BaseExceptionGroup as group_error:
            # The first failure of the worker or the membership loops: the process stops on it.
            raise group_error.exceptions[0] from group_error
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            self._in_batch = {sub.index for sub, _, _ in batch}
            started = time.perf_counter()
            try:
                await self._handle_batch([message for _, _, message in batch])
            finally:
                self._in_batch = set()
                async with self._settled:
                    self._settled.notify_all()
            BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)
            BATCH_SIZE.labels(self.service).observe(len(batch))

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

    async def _next_batch(self) -> list[tuple[_Subscription, int, AbstractIncomingMessage]]:
        """Everything waiting, up to the batch size, of subscriptions still taking deliveries.

        Deliveries of a partition being handed over are skipped: they stay unacknowledged and
        the broker puts them back when its channel closes. Nothing awaits between taking and
        recording the batch, so a handover sees either the batch with its partition or none.
        """
        batch: list[tuple[_Subscription, int, AbstractIncomingMessage]] = []
        while not batch:
            item = await self._inbox.get()
            if self._current(item[0], item[1]):
                batch.append(item)
        while len(batch) < self.batch_size and not self._inbox.empty():
            item = self._inbox.get_nowait()
            if self._current(item[0], item[1]):
                batch.append(item)
        return batch

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
                await queue.consume(self._deliverer(sub, sub.generation))
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    return
                log.warning("could not subscribe; retrying", queue=sub.queue, exc_info=True)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)  # back-off while the broker is away

    def _deliverer(
        self, sub: _Subscription, generation: int
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def deliver(message: AbstractIncomingMessage) -> None:
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

    def _parse(self, message: AbstractIncomingMessage) -> _Item:
        item = _Item(message)
        try:
            envelope = Envelope.model_validate_json(message.body)
            model, handler = self.handlers[envelope.type]
            item.envelope, item.event, item.handler = envelope, model.model_validate(envelope.data), handler
        except (ValidationError, KeyError, ValueError):
            log.exception("unreadable event dead-lettered", routing_key=message.routing_key)
            item.failed = True
        return item

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        items = [self._parse(message) for message in messages]
        try:
            async for attempt in batch_retrying():
                with attempt:
                    try:
                        await self._commit(items, isolate=False)
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        # Some event in the batch is bad: run it again, each event in a savepoint.
                        await self._commit(items, isolate=True)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("batch still not committed; trying its events one by one", error=repr(exc))
            await self._commit_one_by_one(items)
        if await self._after_commit(items):
            await self._settle(items)
        else:
            # The state is committed; redelivery re-runs the after-commit work as a duplicate.
            await self._settle(items, requeue=True)

    async def _commit_one_by_one(self, items: list[_Item]) -> None:
        """The last resort for a batch that keeps failing with transient errors.

        Each event runs in its own savepoint, and one whose error looks transient while the
        database is healthy is dead-lettered. While the database is really down, this waits
        (unbounded, unacknowledged) and dead-letters nothing: an outage is nobody's fault.
        """
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=_backoff(),
            before_sleep=_log_retry("database unavailable; waiting to commit the batch"),
            reraise=True,
        ):
            with attempt:
                await self._commit(items, isolate=True, probe=lambda: database_writable(self.pool))

    async def _after_commit(self, items: list[_Item]) -> bool:
        """Run the handlers' after-commit work; retry only what failed. False if it never succeeded."""
        pending = [
            action
            for item in items
            if item.ctx is not None and not item.failed
            for action in item.ctx.after_commit
        ]
        try:
            async for attempt in AsyncRetrying(
                wait=_backoff(),
                stop=stop_after_delay(AFTER_COMMIT_RETRY_SECONDS),
                reraise=True,
            ):
                with attempt:
                    # Started in batch order, so their publishes reach the channel in that order
                    # (its lock is FIFO) while all their confirms are awaited together.
                    results = await asyncio.gather(*(action() for action in pending), return_exceptions=True)
                    # BaseException: a cancelled publish is not a sent one.
                    failed = [
                        (a, r) for a, r in zip(pending, results, strict=True) if isinstance(r, BaseException)
                    ]
                    pending = [action for action, _ in failed]
                    if failed:
                        raise failed[0][1]
        except Exception:
            log.exception("after-commit work failed; batch goes back to the queue")
            return False
        return True

    async def _settle(self, items: list[_Item], *, requeue: bool = False) -> None:
        for item in items:
            outcome = (
                "dead_lettered" if item.failed else ("duplicate" if item.ctx and item.ctx.duplicate else "ok")
            )
            EVENTS.labels(self.service, item.envelope.type if item.envelope else "unreadable", outcome).inc()
        try:
            if requeue:
                for item in items:
                    if item.failed:  # poison stays poison: to the dead-letter queue, not back
                        await item.message.reject(requeue=False)
                    else:
                        await item.message.nack(requeue=True)
                return
            for item in items:
                if item.failed:
                    await item.message.reject(requeue=False)
            if not any(item.failed for item in items):
                # One frame per channel acknowledges the batch: delivery tags on a channel only
                # grow, and each channel's deliveries are in the batch in the order they came.
                last = {id(item.message.channel): item.message for item in items}
                for message in last.values():
                    await message.ack(multiple=True)
            else:
                for item in items:
                    if not item.failed:
                        await item.message.ack()
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            # The channel these deliveries came on is gone (broker restart, connection loss);
            # the broker has already put them back, and the work is idempotent.
            log.warning("channel closed before settling a batch; the broker redelivers it")

    async def _commit(
        self,
        items: list[_Item],
        *,
        isolate: bool,
        probe: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Run the handlers of a batch in one transaction.

        Optimistically without savepoints (two round trips per event saved). With `isolate`,
        the retry after a failure, each event runs in its own savepoint so the one that fails is
        rolled back and dead-lettered alone. A transient error fails the whole batch, unless
        `probe` is given and says the database is healthy: then it is that event's fault too.
        """
        runnable = [
            (item, item.envelope, item.event, item.handler)
            for item in items
            if item.envelope is not None and item.event is not None and item.handler is not None
        ]
        async with self.pool.acquire() as conn, conn.transaction():
            # One statement marks the whole batch processed; what it did not insert was done before.
            fresh = {
                row[0]
                for row in await conn.fetch(
                    "INSERT INTO processed_events (event_id) SELECT unnest($1::uuid[])"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    [envelope.id for _, envelope, _, _ in runnable],
                )
            }
            partitions = self.bus.topology.partitions
            outbox = OutboxWriter(self.service, partitions)
            contexts = []
            for item, envelope, _, _ in runnable:
                first_time = envelope.id in fresh
                fresh.discard(envelope.id)  # a second copy in the same batch is a repeat
                item.failed = False
                item.ctx = HandlerContext(
                    conn,
                    envelope,
                    not first_time,
                    OutboxWriter(self.service, partitions),
                    self.bus,
                    self.pool,
                )
                contexts.append(item.ctx)
            if not isolate:
                for handler, run in _runs(
                    [(h, (e, c)) for (_, _, e, h), c in zip(runnable, contexts, strict=True)]
                ):
                    if isinstance(handler, Batched):
                        await handler.handle(run)
                    else:
                        for event, ctx in run:
                            await handler(event, ctx)
            else:
                for (item, envelope, event, handler), ctx in zip(runnable, contexts, strict=True):
                    try:
                        async with conn.transaction():
                            if isinstance(handler, Batched):
                                await handler.handle([(event, ctx)])
                            else:
                                await handler(event, ctx)
                    except Exception as exc:
                        if conn.is_closed():
                            raise ConnectionError("database connection lost during the batch") from exc
                        if is_transient(exc) and (probe is None or not await probe()):
                            raise
                        log.exception(
                            "handler failed; event dead-lettered",
                            event_type=envelope.type,
                            event_id=str(envelope.id),
                        )
                        item.failed = True
                        if not ctx.duplicate:  # a replay from the dead-letter queue must not look done
                            await conn.execute(
                                "DELETE FROM processed_events WHERE event_id = $1", envelope.id
                            )
            for item in items:
                if item.ctx is not None and not item.failed:
                    outbox.rows.extend(item.ctx.outbox.rows)
            await outbox.flush(conn)


def _runs(
    pairs: list[tuple[Handler, tuple[Any, HandlerContext]]],
) -> list[tuple[Handler, list[tuple[Any, HandlerContext]]]]:
    """Consecutive events with the same handler, grouped in order."""
    runs: list[tuple[Handler, list[tuple[Any, HandlerContext]]]] = []
    for handler, pair in pairs:
        if runs and runs[-1][0] is handler:
            runs[-1][1].append(pair)
        else:
            runs.append((handler, [pair]))
    return runs
