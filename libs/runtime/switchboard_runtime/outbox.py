"""Transactional outbox: what a unit of work emits is written in its transaction, as one row, and
published after commit by the relay.

Nothing is published for a transaction that rolled back, and nothing committed is left
unpublished: the relay publishes committed rows in id order and deletes them only after the
broker confirmed. A crash between confirm and delete publishes them twice, which consumers
absorb (every handler is idempotent, docs/architecture.md section 8).

One row per unit of work, whatever it emitted: the routing keys and encoded envelopes in two
arrays. A relay pass takes every row waiting and publishes, per routing key, all their events
as one batch (`batches.py`), so the broker sees one message per key and pass however many
transactions committed meanwhile (group commit).
"""

import asyncio
import contextlib
from typing import TYPE_CHECKING

import asyncpg
import structlog

from .amqp import Bus
from .batcher import in_partition_order
from .db import Conn

if TYPE_CHECKING:
    from .uow import Outbox

__all__ = ["OutboxTable"]

log = structlog.get_logger()

# Rows (units of work) per relay pass: a pass then publishes at most a few thousand events,
# their confirms awaited together.
RELAY_ROWS = 200
# The slow poll that finds rows another process committed and could not publish (it crashed
# between commit and relay); the process that commits wakes its own relay at once.
RELAY_POLL_SECONDS = 1.0
# Back-off after a failed pass (broker or database away); the rows stay and go out later.
RELAY_RETRY_SECONDS = 1.0


class OutboxTable:
    """The `outbox` table of a service's schema, and its relay."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus) -> None:
        self.pool = pool
        self.bus = bus
        self._wake = asyncio.Event()

    async def write(self, conn: Conn, outbox: "Outbox") -> None:
        """One row for a unit of work's events, in its transaction."""
        if outbox.keys:
            await conn.execute(
                "INSERT INTO outbox (keys, bodies) VALUES ($1::text[], $2::bytea[])",
                outbox.keys,
                outbox.bodies,
            )

    def committed(self, outbox: "Outbox") -> None:
        """A transaction of this process committed outbox rows: publish them now."""
        if outbox.keys:
            self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RELAY_POLL_SECONDS)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database or the broker went away: the rows stay, and go out once they are
                # back (the next pass after the back-off, or the poll).
                log.exception("outbox relay pass failed; retrying")
                await asyncio.sleep(RELAY_RETRY_SECONDS)
                self._wake.set()

    async def drain(self) -> int:
        """Publish every committed row, oldest first. Returns how many events were published."""
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                # FOR UPDATE (not SKIP LOCKED): a second relay of the same service waits here
                # instead of publishing later rows first, which would break per-chat order.
                rows = await conn.fetch(
                    "SELECT id, keys, bodies FROM outbox ORDER BY id LIMIT $1 FOR UPDATE", RELAY_ROWS
                )
                if not rows:
                    return total
                batches = in_partition_order(
                    entry for row in rows for entry in zip(row["keys"], row["bodies"], strict=True)
                )
                # Written in each partition's order on the one channel, all confirms awaited
                # together. If any fails, the whole pass rolls back and goes out again, in the
                # same order: consumers see a repeat, never a gap or an earlier event after a
                # later one.
                await asyncio.gather(*(self.bus.publish_batch(key, bodies) for key, bodies in batches))
                await conn.execute(
                    "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows]
                )
                total += sum(len(bodies) for _, bodies in batches)
            if len(rows) < RELAY_ROWS:
                # Fewer rows than a pass takes: all of them are out. A row committed since wakes
                # the relay again.
                return total
