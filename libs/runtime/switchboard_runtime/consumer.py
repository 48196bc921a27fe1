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
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiormq.exceptions
import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from prometheus_client import Counter, Histogram
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
from switchboard_contracts.topology import SUBSCRIPTIONS

from .amqp import Bus, declare_service_queue
from .db import Conn
from .outbox import OutboxWriter
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
        self.prefetch = prefetch
        self.batch_size = batch_size
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None

    async def declare(self) -> AbstractQueue:
        """Open this consumer's channel and queue; refuse handlers the topology does not route."""
        unrouted = set(self.handlers) - set(SUBSCRIPTIONS[self.service])
        if unrouted:
            raise RuntimeError(
                f"{self.service} handles {sorted(unrouted)} but SUBSCRIPTIONS does not route them"
            )
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        self._channel = channel
        self._queue = await declare_service_queue(channel, self.bus.topology, self.service)
        return self._queue

    async def run(self) -> None:
        queue = self._queue or await self.declare()
        await queue.consume(self._inbox.put)
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < self.batch_size and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            started = time.perf_counter()
            await self._handle_batch(batch)
            BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)
            BATCH_SIZE.labels(self.service).observe(len(batch))

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
                # One frame acknowledges the whole batch: delivery tags on a channel only grow.
                await items[-1].message.ack(multiple=True)
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
            outbox = OutboxWriter(self.service)
            contexts = []
            for item, envelope, _, _ in runnable:
                first_time = envelope.id in fresh
                fresh.discard(envelope.id)  # a second copy in the same batch is a repeat
                item.failed = False
                item.ctx = HandlerContext(
                    conn, envelope, not first_time, OutboxWriter(self.service), self.bus, self.pool
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
