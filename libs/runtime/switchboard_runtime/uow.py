"""The unit of work: one transaction, what it emits, and the one publish step after commit.

Every entry point of a service runs its work in one: a batch of events (the consumer), an
internal HTTP request, a timer. Handlers see only `uow.store` (the service's SQL, bound to the
transaction) and `uow.outbox` (what to emit):

* `emit(event)`: a domain event, written to the outbox table in the same transaction and
  published by the relay after commit (outbox.py): never lost once committed, never sent for work
  that rolled back.
* `route(frame)`: a frame for clients (routing.py), and `publish(...)` a whole message for the
  route exchange (a catch-up page): published after commit, all of a unit's frames as one
  message (per thousand routing keys). They are not kept in the database: what they carry is
  either kept elsewhere until acknowledged (a message stays pending in delivery) or is about the
  present and worthless later (presence, receipts, answers the client can ask again for).

A unit of work with a store that keeps its data in memory is how handlers are unit-tested: the
outbox is plain data either way.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import asyncpg

from switchboard_contracts.events import Envelope, Event
from switchboard_contracts.partitions import event_routing_key
from switchboard_contracts.routing import RouteFrame, route_messages

from .amqp import Bus, encode_envelope
from .db import Conn

__all__ = ["Outbox", "Outgoing", "RouteMessage", "UnitOfWork", "UnitsOfWork", "publish_after_commit"]

Store = TypeVar("Store")


@dataclass(frozen=True)
class RouteMessage:
    """A message for the route exchange as it is (a catch-up page, a resync request)."""

    routing_key: str
    body: bytes
    headers: Mapping[str, Any]


@dataclass
class Outbox:
    source: str
    # The deployment's partition count (CHAT_PARTITIONS): an event's routing key,
    # `<type>.<partition>`, is decided when it is emitted.
    partitions: int
    envelopes: list[Envelope] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    # For a service whose event log is its outbox: each event's stream and version in the log,
    # and after the write, its position.
    streams: list[tuple[UUID, int]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    frames: list[RouteFrame] = field(default_factory=list)
    messages: list[RouteMessage] = field(default_factory=list)

    def emit(self, event: Event, stream: tuple[UUID, int] | None = None) -> Envelope:
        """Emit `event`; in a service with an event log, as version `stream[1]` of stream
        `stream[0]` (a chat's events, one member's receipts)."""
        envelope = Envelope.wrap(event, self.source)
        self.envelopes.append(envelope)
        self.keys.append(event_routing_key(envelope.type, envelope.data, self.partitions))
        self.bodies.append(encode_envelope(envelope))
        if stream is not None:
            self.streams.append(stream)
        return envelope

    def route(self, frame: RouteFrame) -> None:
        self.frames.append(frame)

    def publish(self, routing_key: str, body: bytes, headers: Mapping[str, Any]) -> None:
        self.messages.append(RouteMessage(routing_key, body, headers))

    def mark(self) -> tuple[int, int, int]:
        """Where the outbox stands, for `rewind` (an event whose work rolled back to a savepoint)."""
        return len(self.keys), len(self.frames), len(self.messages)

    def rewind(self, mark: tuple[int, int, int]) -> None:
        events, frames, messages = mark
        del self.envelopes[events:], self.keys[events:], self.bodies[events:], self.streams[events:]
        del self.frames[frames:], self.messages[messages:]

    @property
    def after_commit(self) -> bool:
        """Whether anything is to be published straight after commit."""
        return bool(self.frames or self.messages)


class Outgoing(Protocol):
    """Where a service's events go on their way to the broker: an outbox table (outbox.py) or
    its event log (eventlog.py). It writes them in the unit of work's transaction, hears when
    that committed, and runs the relay that publishes them."""

    async def write(self, conn: Conn, outbox: Outbox) -> None: ...

    def committed(self, outbox: Outbox) -> None: ...

    async def run(self) -> None: ...


@dataclass
class UnitOfWork(Generic[Store]):
    store: Store
    outbox: Outbox


async def publish_after_commit(bus: Bus, outbox: Outbox) -> None:
    """The frames and route messages of a committed unit of work, in the order they were added
    (frames first), their confirms awaited together."""
    publishes: list[Awaitable[object]] = [
        bus.publish_route(keys, body, frames) for keys, body, frames in route_messages(outbox.frames)
    ]
    publishes += [
        bus.publish("route", message.routing_key, message.body, headers=message.headers)
        for message in outbox.messages
    ]
    await asyncio.gather(*publishes)


class UnitsOfWork(Generic[Store]):
    """Makes units of work on one pool for one service: `async with units() as uow: ...` commits
    when the block ends without an error, then publishes what the unit emitted."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: Callable[[Conn], Store],
        bus: Bus,
        outgoing: Outgoing,
        source: str,
    ) -> None:
        self.pool = pool
        self.store = store
        self.bus = bus
        self.outgoing = outgoing
        self.source = source

    def outbox(self) -> Outbox:
        return Outbox(self.source, self.bus.topology.partitions)

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[UnitOfWork[Store]]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                uow = UnitOfWork(self.store(conn), self.outbox())
                yield uow
                await self.outgoing.write(conn, uow.outbox)
        self.committed(uow.outbox)
        if uow.outbox.after_commit:
            await publish_after_commit(self.bus, uow.outbox)

    def committed(self, outbox: Outbox) -> None:
        self.outgoing.committed(outbox)
