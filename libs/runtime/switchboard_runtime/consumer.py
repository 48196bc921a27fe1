"""The one base consumer: it owns ack, batching, retries, dead-lettering and metrics.

A service gives it a routing table `{EventModel: handler}`. Handlers hold business logic only:
`async def on_<event>(events, uow)` takes, in order, every event of its type in a run of the
batch, and sees only `uow.store` and `uow.outbox` (uow.py).

How a batch goes:
1. Deliveries (each an AMQP message of one or more events, batches.py) arrive under a prefetch
   window and wait in a local queue; the worker takes every message waiting (up to
   `batch_size`), so batches form by themselves under load and a lone message is handled at once.
2. One unit of work covers the batch: one transaction, optimistically without savepoints. If a
   handler raises an error that is not transient, the transaction rolls back and the batch is
   redone event by event, each in a savepoint: the event that fails again rolls back alone and
   is dead-lettered (a handler that failed once on the same input fails again); the rest commits.
3. After commit the unit's frames are published, their confirms awaited; what failed is retried
   in place, and only then is the batch acknowledged. A crash anywhere before the ack redelivers
   the batch: every handler is idempotent (docs/architecture.md section 8), so the redelivery
   changes nothing twice and redoes the publishes.
4. Database or broker outages are not poison: the batch is retried with backoff, unacknowledged,
   a bounded number of times. If it still fails, its events are tried one by one, each in a
   savepoint, for as long as the database is down; an event that fails with an error that looks
   transient while the database answers is its own fault (a statement that always times out)
   and is dead-lettered, so it cannot hold up the healthy events behind it for ever.

Dead-lettering: an AMQP message all of whose events failed is rejected, and the queue's
dead-letter exchange takes it (with the broker's `x-death` history). An event that failed in a
batch with healthy ones is published alone to the dead-letter exchange, with `sb-death-*`
headers saying why and where, before its batch is acknowledged.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiormq.exceptions
import asyncpg
import structlog
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from pydantic_core import to_json
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from switchboard_contracts.batches import EVENT_CONTENT_TYPE, decode_events
from switchboard_contracts.events import Event
from switchboard_contracts.topology import SUBSCRIPTIONS

from .amqp import declare_service_queues
from .delivery import Delivery
from .subscriptions import Subscriptions
from .transient import is_transient
from .uow import Outbox, UnitOfWork, UnitsOfWork, publish_after_commit

__all__ = ["DeathHeaders", "EventConsumer", "Handler", "batch_retrying", "database_writable"]

log = structlog.get_logger()

Handler = Callable[[list[Any], UnitOfWork[Any]], Awaitable[None]]

EVENTS = Counter("switchboard_events_total", "Events handled, by outcome", ["service", "type", "outcome"])
BATCH_SECONDS = Histogram(
    "switchboard_batch_seconds", "Time to handle one batch, commit, publish and ack", ["service"]
)
BATCH_SIZE = Histogram(
    "switchboard_batch_size",
    "Events per batch",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
# From 1 ms to 10 s: a healthy hop is a few milliseconds, a backlog seconds.
EVENT_LAG = Histogram(
    "switchboard_event_lag_seconds",
    "From an event's creation (its envelope time) to the start of the batch that handles it",
    ["service", "type"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)

BATCH_PHASE = Histogram(
    "switchboard_batch_phase_seconds",
    "Time a batch spent in each phase: parse the events, commit the unit of work (the handlers"
    " and the transaction), publish what it routes to clients, settle it with the broker",
    ["service", "phase"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5),
)

# After-commit publishes are retried in place this long before the batch goes back to the
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


class DeathHeaders:
    """Headers on an event the consumer dead-lettered itself (one failed event of a batch)."""

    REASON = "sb-death-reason"
    QUEUE = "sb-death-queue"
    TIME = "sb-death-time"
    ERROR = "sb-death-error"


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
class _Item:
    """One event of a delivered AMQP message."""

    message: Delivery
    # The event as it came (its envelope, as JSON), its type once read, and its payload.
    raw: Any = None
    type: str = "unreadable"
    event: Event | None = None
    handler: Handler | None = None
    failed: bool = False
    error: str = ""


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        units: UnitsOfWork[Any],
        handlers: Mapping[type[Event], Handler],
        prefetch: int,
        batch_size: int,
    ) -> None:
        self.service = service
        self.units = units
        self.bus = units.bus
        self.handlers = {model.TYPE: (model, handler) for model, handler in handlers.items()}
        self.batch_size = batch_size
        self.subscriptions = Subscriptions(units.bus, service, prefetch)
        self._declared = False
        self._phases = {
            phase: BATCH_PHASE.labels(service, phase) for phase in ("parse", "commit", "publish", "settle")
        }

    @property
    def instance_id(self) -> str | None:
        return self.subscriptions.instance_id

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
        await self.subscriptions.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._work())
                group.create_task(self.subscriptions.run())
        except BaseExceptionGroup as group_error:
            # The first failure of the worker or the membership loops: the process stops on it.
            raise group_error.exceptions[0] from group_error

    async def stop(self) -> None:
        await self.subscriptions.stop()

    async def _work(self) -> None:
        while True:
            delivered = await self.subscriptions.next_batch(self.batch_size)
            started = time.perf_counter()
            try:
                items = await self._handle_batch(delivered)
            finally:
                await self.subscriptions.settled()
            BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)
            BATCH_SIZE.labels(self.service).observe(len(items))

    def _parse(self, message: Delivery, now: datetime) -> list[_Item]:
        try:
            raw_events = decode_events(message.body, message.content_type)
        except ValueError:
            log.exception("unreadable message dead-lettered", routing_key=message.routing_key)
            return [_Item(message, failed=True, error="unreadable message")]
        items = []
        for raw in raw_events:
            item = _Item(message, raw)
            try:
                # The payload is validated against its type's model; of the envelope around it
                # only what is used is read (its id for the logs, its time for the lag).
                model, handler = self.handlers[raw["type"]]
                item.event, item.handler = model.model_validate(raw["data"]), handler
                item.type = raw["type"]
                created = datetime.fromisoformat(raw["time"])
                EVENT_LAG.labels(self.service, item.type).observe(max(0.0, (now - created).total_seconds()))
            except (ValidationError, KeyError, ValueError, TypeError) as exc:
                log.exception("unreadable event dead-lettered", routing_key=message.routing_key)
                item.failed, item.error = True, f"unreadable event: {exc!r}"[:500]
            items.append(item)
        return items

    async def _handle_batch(self, delivered: list[tuple[str, Delivery]]) -> list[_Item]:
        now = datetime.now(UTC)
        started = time.perf_counter()
        messages = [message for _, message in delivered]
        queues = {id(message): queue for queue, message in delivered}
        items = [item for message in messages for item in self._parse(message, now)]
        parsed = time.perf_counter()
        outbox = await self._commit_with_retries(items)
        self.units.committed(outbox)
        committed = time.perf_counter()
        if await self._after_commit(outbox):
            published = time.perf_counter()
            await self._settle(messages, items, queues)
        else:
            # The state is committed; the redelivery redoes the publishes (handlers are idempotent).
            published = time.perf_counter()
            await self._requeue(messages)
        phases = self._phases
        phases["parse"].observe(parsed - started)
        phases["commit"].observe(committed - parsed)
        phases["publish"].observe(published - committed)
        phases["settle"].observe(time.perf_counter() - published)
        return items

    async def _commit_with_retries(self, items: list[_Item]) -> Outbox:
        try:
            async for attempt in batch_retrying():
                with attempt:
                    try:
                        return await self._commit(items, isolate=False)
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        # Some event in the batch is bad: run it again, each event in a savepoint.
                        return await self._commit(items, isolate=True)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("batch still not committed; trying its events one by one", error=repr(exc))
        return await self._commit_one_by_one(items)

    async def _commit_one_by_one(self, items: list[_Item]) -> Outbox:
        """The last resort for a batch that keeps failing with transient errors.

        Each event runs in its own savepoint, and one whose error looks transient while the
        database is healthy is dead-lettered. While the database is really down, this waits
        (unbounded, unacknowledged) and dead-letters nothing: an outage is nobody's fault.
        """
        pool = self.units.pool
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=_backoff(),
            before_sleep=_log_retry("database unavailable; waiting to commit the batch"),
            reraise=True,
        ):
            with attempt:
                return await self._commit(items, isolate=True, probe=lambda: database_writable(pool))
        raise AssertionError("unreachable: the retrying loop returns or raises")

    async def _commit(
        self,
        items: list[_Item],
        *,
        isolate: bool,
        probe: Callable[[], Awaitable[bool]] | None = None,
    ) -> Outbox:
        """Run the handlers of a batch in one transaction; returns what they emitted.

        Optimistically without savepoints (two round trips per event saved). With `isolate`,
        the retry after a failure, each event runs in its own savepoint so the one that fails is
        rolled back and dead-lettered alone. A transient error fails the whole batch, unless
        `probe` is given and says the database is healthy: then it is that event's fault too.
        """
        runnable = [
            (item, item.handler, item.event)
            for item in items
            if item.handler is not None and item.event is not None
        ]
        outbox = self.units.outbox()
        async with self.units.pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(self.units.store(conn), outbox)
            for item, _, _ in runnable:
                item.failed = False
            if not isolate:
                for handler, events in _runs([(handler, event) for _, handler, event in runnable]):
                    await handler(events, uow)
            else:
                for item, handler, event in runnable:
                    mark = outbox.mark()
                    try:
                        async with conn.transaction():
                            await handler([event], uow)
                    except Exception as exc:
                        outbox.rewind(mark)
                        if conn.is_closed():
                            raise ConnectionError("database connection lost during the batch") from exc
                        if is_transient(exc) and (probe is None or not await probe()):
                            raise
                        log.exception(
                            "handler failed; event dead-lettered",
                            event_type=item.type,
                            event_id=str(item.raw.get("id")),
                        )
                        item.failed, item.error = True, repr(exc)[:500]
            await self.units.outgoing.write(conn, outbox)
        return outbox

    async def _after_commit(self, outbox: Outbox) -> bool:
        """Publish the batch's frames; retry in place. False if that never succeeded."""
        if not outbox.after_commit:
            return True
        try:
            async for attempt in AsyncRetrying(
                wait=_backoff(), stop=stop_after_delay(AFTER_COMMIT_RETRY_SECONDS), reraise=True
            ):
                with attempt:
                    await publish_after_commit(self.bus, outbox)
        except Exception:
            log.exception("publishing after commit failed; batch goes back to the queue")
            return False
        return True

    async def _requeue(self, messages: list[Delivery]) -> None:
        try:
            for message in messages:
                await message.nack(requeue=True)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            log.warning("channel closed before requeueing a batch; the broker redelivers it")

    async def _settle(self, messages: list[Delivery], items: list[_Item], queues: dict[int, str]) -> None:
        for item in items:
            outcome = "dead_lettered" if item.failed else "ok"
            EVENTS.labels(self.service, item.type, outcome).inc()
        failed: dict[int, list[_Item]] = {}
        for item in items:
            if item.failed:
                failed.setdefault(id(item.message), []).append(item)
        try:
            if not failed:
                # One frame per channel acknowledges the batch: delivery tags on a channel only
                # grow, and each channel's deliveries are in the batch in the order they came.
                last = {id(message.channel): message for message in messages}
                for message in last.values():
                    await message.ack(multiple=True)
                return
            count = {id(m): 0 for m in messages}
            for item in items:
                count[id(item.message)] += 1
            for message in messages:
                bad = failed.get(id(message), [])
                if not bad:
                    await message.ack()
                elif len(bad) == count[id(message)]:
                    # Every event of it failed: the queue's dead-letter exchange takes it whole.
                    await message.reject(requeue=False)
                elif await self._dead_letter(message, bad, queues[id(message)]):
                    await message.ack()
                else:
                    await message.nack(requeue=True)
        except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            # The channel these deliveries came on is gone (broker restart, connection loss);
            # the broker has already put them back, and the work is idempotent.
            log.warning("channel closed before settling a batch; the broker redelivers it")

    async def _dead_letter(self, message: Delivery, bad: list[_Item], queue: str) -> bool:
        """Publish these failed events of `message` alone to the dead-letter exchange; False if
        the broker did not take every one (the message is then requeued, the healthy events in
        it redone as repeats)."""
        try:
            for item in bad:
                body = to_json(item.raw) if isinstance(item.raw, dict) else message.body
                await self.bus.publish(
                    "dead-letter",
                    self.service,
                    body,
                    headers={
                        DeathHeaders.REASON: "rejected",
                        DeathHeaders.QUEUE: queue,
                        DeathHeaders.TIME: datetime.now(UTC).isoformat(),
                        DeathHeaders.ERROR: item.error,
                    },
                    message_id=str(item.raw.get("id")) if isinstance(item.raw, dict) else message.message_id,
                    persistent=True,
                    content_type=EVENT_CONTENT_TYPE,
                )
        except Exception:
            log.exception("dead-lettering an event failed; its batch goes back to the queue")
            return False
        return True


def _runs(pairs: list[tuple[Handler, Event]]) -> list[tuple[Handler, list[Event]]]:
    """Consecutive events with the same handler, grouped in order."""
    runs: list[tuple[Handler, list[Event]]] = []
    for handler, event in pairs:
        if runs and runs[-1][0] is handler:
            runs[-1][1].append(event)
        else:
            runs.append((handler, [event]))
    return runs
