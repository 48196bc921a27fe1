"""A queue's bindings, kept in line with what its owner holds (a gateway: its users and rooms).

Every binding is a write to the broker's routing tables and, done one by one, a round trip on
the channel. Sessions that arrive at a gateway together (a reconnect storm, a gateway put behind
a load balancer) would each wait for all the round trips queued before theirs. Instead, the binds asked
for while one batch is on its way go out together as the next batch: each a no-wait
`queue.bind`, then one passive `queue.declare` of the queue itself. A channel's methods are
handled in the order they were sent, so the answer to that declare says every bind before it has
been applied; only then does a waiting session count as connected. At low load a batch is one
bind and waits for nothing else.

Unbinding is never waited for: a binding left a little longer only routes copies the owner
drops. AMQP has no no-wait unbind, so they go one round trip at a time, only while no bind is
waiting, and a key wanted again before its unbind was sent simply stays bound.
"""

import asyncio
import contextlib
from collections.abc import Iterable

import aiormq.abc
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

__all__ = ["Bindings"]

log = structlog.get_logger()


class Bindings:
    """Routing keys bound from `exchange` to `queue`, on a channel of their own on `connection`
    (a bind the broker refuses closes that channel and no other). `run` does the work."""

    def __init__(self, connection: AbstractConnection, queue: str, exchange: str) -> None:
        self._connection = connection
        self._open: AbstractChannel | None = None
        self._queue = queue
        self._exchange = exchange
        # What the broker has, as far as is known here (a key is taken out before its unbind is
        # sent, so a bind asked for meanwhile waits for the unbind and binds again).
        self._bound: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._unwanted: dict[str, None] = {}  # in the order they were let go
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def bound(self) -> frozenset[str]:
        return frozenset(self._bound)

    async def bind(self, key: str) -> None:
        """Return once the broker routes `key` to the queue; raise if that failed."""
        # Let go but not unbound yet: it stays.
        self._unwanted.pop(key, None)
        if key in self._bound:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        self._idle.clear()
        self._wake.set()
        await waiter

    def unbind(self, key: str) -> None:
        """Let the key go, some time soon."""
        if key in self._bound:
            self._unwanted[key] = None
            self._idle.clear()
            self._wake.set()

    async def settled(self) -> None:
        """Until every bind and unbind asked for so far has been carried out (or failed)."""
        await self._idle.wait()

    async def restore(self) -> None:
        """Bind every key again: the connection came back with a new queue, which has none."""
        keys = self._bound.difference(self._unwanted)
        self._bound.clear()
        self._unwanted.clear()
        await asyncio.gather(*(self.bind(key) for key in keys))

    async def run(self) -> None:
        """Bind and unbind as asked, for as long as the owner runs."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._waiting or self._unwanted:
                    if self._waiting:
                        batch, self._waiting = self._waiting, {}
                        await self._bind_batch(batch)
                    else:
                        key = next(iter(self._unwanted))
                        del self._unwanted[key]
                        self._bound.discard(key)
                        await self._unbind(key)
                self._idle.set()
        finally:
            _cancel(self._waiting.values())

    async def _bind_batch(self, batch: dict[str, list[asyncio.Future[None]]]) -> None:
        try:
            await self._send_binds(batch)
        except asyncio.CancelledError:
            _cancel(batch.values())
            raise
        except Exception as exc:
            # A bind the broker refused closes the channel, and every bind of the batch fails
            # with it: their sessions are refused and reconnect.
            log.warning("binding routes failed", keys=len(batch), error=repr(exc))
            await self._reset()
            _settle(batch.values(), exc)
            return
        self._bound.update(batch)
        _settle(batch.values(), None)

    async def _send_binds(self, batch: dict[str, list[asyncio.Future[None]]]) -> None:
        channel = await self._channel()
        for key in batch:
            await channel.queue_bind(self._queue, self._exchange, key, nowait=True)
        await channel.queue_declare(self._queue, passive=True)

    async def _unbind(self, key: str) -> None:
        try:
            channel = await self._channel()
            await channel.queue_unbind(self._queue, self._exchange, key)
        except Exception as exc:
            # Left bound, it routes copies that nobody here takes: harmless.
            log.warning("unbinding a route failed", key=key, error=repr(exc))
            await self._reset()

    async def _channel(self) -> aiormq.abc.AbstractChannel:
        if self._open is None:
            self._open = await self._connection.channel()
        return await self._open.get_underlay_channel()

    async def _reset(self) -> None:
        """After a failure: the next batch opens a new channel (this one may be closed)."""
        channel, self._open = self._open, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()


def _cancel(waiters: Iterable[list[asyncio.Future[None]]]) -> None:
    for futures in waiters:
        for future in futures:
            future.cancel()


def _settle(waiters: Iterable[list[asyncio.Future[None]]], error: Exception | None) -> None:
    for futures in waiters:
        for future in futures:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
