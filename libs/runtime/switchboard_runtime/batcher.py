"""Group commit for events a process publishes directly (the gateway's sends, acknowledgements,
session events): one publish in flight per routing key, and whatever gathers meanwhile goes
out together in the next.

At low load a batch is one event and leaves at once (within the event-loop turn that produced
it); under load the confirm of one publish takes long enough for the next batch to grow by
itself. No timer decides when a batch leaves.

While the broker is out of reach, a batch is tried again until it is back, for up to
`hold_seconds`; what gathers behind it waits, in order. Past the bound its events fail with the
broker's error (`amqp.broker_unavailable` says which errors those are).
"""

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import structlog

from switchboard_contracts.events import Envelope, Event
from switchboard_contracts.partitions import event_routing_key

from .amqp import Bus, broker_unavailable, encode_envelope
from .retry import hold_retrying

__all__ = ["EventBatcher", "MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "in_partition_order"]

log = structlog.get_logger()

# Events and bytes per published batch. A thousand acknowledgements or sends is a few hundred
# KB and a millisecond or two of a consumer's time; 4 MiB bounds a batch of long messages
# (65,536 characters each) to what the broker and a consumer take in comfortably.
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024


def in_partition_order(events: Iterable[tuple[str, bytes]]) -> list[tuple[str, list[bytes]]]:
    """Cut a relay's events (routing key, body), in log order, into publishable batches that keep
    each partition's order: an event joins its partition's open batch when that batch has its
    routing key (and room), and starts a new one otherwise.

    A partition's events of every type reach its consumers through one queue, and an event's
    meaning can depend on the one before it in another type (a member added, then a message
    they must receive): grouping all of a key's events of a pass into one batch would let the
    message overtake the membership. Published in the order returned, on one channel, the
    batches reach each queue in that order.
    """
    batches: list[tuple[str, list[bytes]]] = []
    # Per partition: the index of its open batch, and that batch's size in bytes.
    open_batches: dict[str, tuple[int, int]] = {}
    for key, body in events:
        if not key:
            continue  # an event of a type no consumer knows any more
        partition = key.rpartition(".")[2]
        current = open_batches.get(partition)
        if current is not None:
            index, size = current
            batch_key, bodies = batches[index]
            if batch_key == key and len(bodies) < MAX_BATCH_EVENTS and size + len(body) <= MAX_BATCH_BYTES:
                bodies.append(body)
                open_batches[partition] = (index, size + len(body))
                continue
        open_batches[partition] = (len(batches), len(body))
        batches.append((key, [body]))
    return batches


@dataclass
class _Stream:
    """The events waiting for the next publish of one routing key, or of one partition of a
    group of types that must keep their order: (routing key, body, future) each."""

    pending: list[tuple[str, bytes, asyncio.Future[None]]] = field(default_factory=list)
    busy: bool = False
    scheduled: bool = False


class EventBatcher:
    """`in_order`: groups of event types whose events must reach their consumers in the order
    they were emitted (per partition), although their routing keys differ; each group shares
    one publish in flight per partition. Other types each have their own stream per routing
    key, so that, say, sends never wait behind acknowledgements.

    `hold_seconds`: how long a batch waits for a broker that is out of reach (0: not at all)."""

    def __init__(
        self, bus: Bus, source: str, in_order: Iterable[Collection[str]] = (), hold_seconds: float = 0.0
    ) -> None:
        self.bus = bus
        self.source = source
        self.hold_seconds = hold_seconds
        self._groups = {
            event_type: f"in-order-{n}" for n, types in enumerate(in_order) for event_type in types
        }
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Events not yet handed to the broker."""
        return sum(len(stream.pending) for stream in self._streams.values())

    def emit(self, event: Event) -> asyncio.Future[None]:
        """Publish `event`; the future is done when the broker confirmed its batch, or failed.

        The caller must look at the future (await it, or use `emit_logged`): a failure nobody
        looked at is reported by asyncio as an error.
        """
        envelope = Envelope.wrap(event, self.source)
        key = event_routing_key(envelope.type, envelope.data, self.bus.topology.partitions)
        group = self._groups.get(envelope.type)
        stream = key if group is None else f"{group}.{key.rpartition('.')[2]}"
        return self._add(stream, key, encode_envelope(envelope))

    def emit_logged(self, event: Event, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Publish `event` without waiting; a failure is logged (and passed to `on_error`)."""
        future = self.emit(event)

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled():
                return
            if (exc := f.exception()) is not None:
                log.warning("event not published", event_type=event.TYPE, error=repr(exc))
                if on_error is not None:
                    on_error(exc)

        future.add_done_callback(done)

    def add(self, routing_key: str, body: bytes) -> asyncio.Future[None]:
        """Publish an encoded envelope under `routing_key`, in that key's stream."""
        return self._add(routing_key, routing_key, body)

    def _add(self, name: str, routing_key: str, body: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        stream.pending.append((routing_key, body, future))
        if not stream.busy and not stream.scheduled:
            # At the end of this event-loop turn: everything the turn produces for this stream
            # (the frames of every socket that was readable) leaves in one publish.
            stream.scheduled = True
            loop.call_soon(self._start, name)
        return future

    def _start(self, name: str) -> None:
        stream = self._streams[name]
        stream.scheduled = False
        if stream.busy or not stream.pending:
            return
        # The longest run at the head of the stream with one routing key (a stream of one key
        # takes everything, up to the limits).
        key = stream.pending[0][0]
        taken, size = 0, 0
        for event_key, body, _ in stream.pending:
            full = taken == MAX_BATCH_EVENTS or size + len(body) > MAX_BATCH_BYTES
            if taken and (event_key != key or full):
                break
            taken += 1
            size += len(body)
        batch, stream.pending = stream.pending[:taken], stream.pending[taken:]
        stream.busy = True
        task = asyncio.create_task(self._publish(name, stream, key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(
        self, name: str, stream: _Stream, key: str, batch: list[tuple[str, bytes, asyncio.Future[None]]]
    ) -> None:
        try:
            await self._send(key, [body for _, body, _ in batch])
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)
        finally:
            stream.busy = False
            if stream.pending:
                self._start(name)
            elif not stream.scheduled:
                # Nothing waits on this stream: forget it, so keys seen once do not accumulate.
                del self._streams[name]

    async def _send(self, key: str, bodies: list[bytes]) -> None:
        # The first try outside any retry machinery: it is every batch's path, and the hold only
        # the path of a broker that went away.
        try:
            await self.bus.publish_batch(key, bodies)
            return
        except Exception as exc:
            if self.hold_seconds <= 0 or not broker_unavailable(exc):
                raise
        # A batch sent again after a failure that came after the broker took it is a repeat of
        # the same event ids, which consumers drop.
        async for attempt in hold_retrying(self.hold_seconds, broker_unavailable):
            with attempt:
                await self.bus.publish_batch(key, bodies)

    async def close(self) -> None:
        """Wait for the publishes in flight (what waits behind them fails with the bus)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
