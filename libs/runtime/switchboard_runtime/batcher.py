"""Group commit for events a process publishes directly (the gateway's sends, acknowledgements,
session events): one publish in flight per routing key, and whatever gathers meanwhile goes
out together in the next.

At low load a batch is one event and leaves at once (within the event-loop turn that produced
it); under load the confirm of one publish takes long enough for the next batch to grow by
itself. No timer decides when a batch leaves.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from switchboard_contracts.events import Envelope, Event
from switchboard_contracts.partitions import event_routing_key

from .amqp import Bus, encode_envelope

__all__ = ["EventBatcher", "MAX_BATCH_BYTES", "MAX_BATCH_EVENTS"]

log = structlog.get_logger()

# Events and bytes per published batch. A thousand acknowledgements or sends is a few hundred
# KB and a millisecond or two of a consumer's time; 4 MiB bounds a batch of long messages
# (65,536 characters each) to what the broker and a consumer take in comfortably.
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class _Stream:
    """The events of one routing key waiting for the next publish."""

    pending: list[tuple[bytes, asyncio.Future[None]]] = field(default_factory=list)
    busy: bool = False
    scheduled: bool = False


class EventBatcher:
    def __init__(self, bus: Bus, source: str) -> None:
        self.bus = bus
        self.source = source
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
        return self.add(key, encode_envelope(envelope))

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        stream = self._streams.get(routing_key)
        if stream is None:
            stream = self._streams[routing_key] = _Stream()
        stream.pending.append((body, future))
        if not stream.busy and not stream.scheduled:
            # At the end of this event-loop turn: everything the turn produces for this key (the
            # frames of every socket that was readable) leaves in one publish.
            stream.scheduled = True
            loop.call_soon(self._start, routing_key)
        return future

    def _start(self, routing_key: str) -> None:
        stream = self._streams[routing_key]
        stream.scheduled = False
        if stream.busy or not stream.pending:
            return
        taken, size = 0, 0
        for body, _ in stream.pending:
            if taken and (taken == MAX_BATCH_EVENTS or size + len(body) > MAX_BATCH_BYTES):
                break
            taken += 1
            size += len(body)
        batch, stream.pending = stream.pending[:taken], stream.pending[taken:]
        stream.busy = True
        task = asyncio.create_task(self._publish(routing_key, stream, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(
        self, routing_key: str, stream: _Stream, batch: list[tuple[bytes, asyncio.Future[None]]]
    ) -> None:
        try:
            await self.bus.publish_batch(routing_key, [body for body, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        finally:
            stream.busy = False
            if stream.pending:
                self._start(routing_key)
            elif not stream.scheduled:
                # Nothing waits on this key: forget it, so keys seen once do not accumulate.
                del self._streams[routing_key]

    async def close(self) -> None:
        """Wait for the publishes in flight (what waits behind them fails with the bus)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
