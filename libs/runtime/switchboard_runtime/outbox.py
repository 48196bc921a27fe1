"""Transactional outbox: rows written in the handler's transaction, published after commit.

A handler never publishes directly. It writes what it wants sent into its service's `outbox`
table, in the same transaction as its own state, so nothing is published for a row that rolled
back and nothing committed is left unpublished: the relay publishes committed rows (woken by
NOTIFY on commit, with a slow poll as a safety net) and deletes them only after the broker
confirmed. A crash between confirm and delete publishes a row twice, which consumers absorb by
de-duplicating on the envelope id.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog

from switchboard_contracts.events import Envelope, Event
from switchboard_contracts.partitions import event_routing_key

from .amqp import Bus, encode_envelope
from .db import Conn

__all__ = ["OutboxRelay", "OutboxWriter"]

log = structlog.get_logger()

# LISTEN/NOTIFY channel every service's relay waits on; each service listens in its own database
# session with its own search_path, so the name only has to be unique per schema.
NOTIFY_CHANNEL = "switchboard_outbox"
# A relay pass publishes up to this many rows, with all their confirms in flight at once.
RELAY_BATCH = 500
# The poll that catches a NOTIFY lost while the listening connection was being re-established.
RELAY_POLL_SECONDS = 1.0


# The rows go in as arrays; ordinality keeps their order in the ids the relay publishes by.
FLUSH = """
WITH inserted AS (
    INSERT INTO outbox (exchange, routing_key, body, headers, message_id, persistent)
    SELECT exchange, routing_key, body, headers, message_id, persistent
    FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[], $5::text[], $6::boolean[])
        WITH ORDINALITY AS r (exchange, routing_key, body, headers, message_id, persistent, n)
    ORDER BY n
)
SELECT pg_notify($7, '')
"""


@dataclass
class OutboxWriter:
    """Collects the rows of one unit of work; `flush` writes them into the open transaction.

    `partitions` is the deployment's partition count (CHAT_PARTITIONS): an event's routing key,
    `<type>.<partition>`, is decided here, when it is emitted, and the relay publishes it as is.
    """

    source: str
    partitions: int
    rows: list[tuple[str, str, bytes, str | None, str | None, bool]] = field(default_factory=list)

    def emit(self, event: Event) -> Envelope:
        envelope = Envelope.wrap(event, self.source)
        key = event_routing_key(envelope.type, envelope.data, self.partitions)
        self.rows.append(("events", key, encode_envelope(envelope), None, str(envelope.id), True))
        return envelope

    def fresh(self) -> "OutboxWriter":
        """An empty writer for another unit of work, with this one's source and partitions."""
        return OutboxWriter(self.source, self.partitions)

    def send(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        """A frame for the `route` exchange (answers to a session): transient, not confirmed-routed."""
        self.rows.append(("route", routing_key, body, orjson.dumps(headers).decode(), None, False))

    async def flush(self, conn: Conn) -> None:
        """Insert the rows, in order, and notify the relay (delivered at commit), in one round
        trip: a batch's transaction is a handful of round trips, and each costs the database
        and the service a system call or two either way."""
        if not self.rows:
            return
        columns = [list(column) for column in zip(*self.rows, strict=True)]
        await conn.execute(FLUSH, *columns, NOTIFY_CHANNEL)
        self.rows.clear()


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, bus: Bus) -> None:
        self.pool = pool
        self.bus = bus
        self._wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self._listen_and_drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database or broker went away; back off and start over (rows stay in the
                # table, so nothing is lost, only delayed).
                log.exception("outbox relay failed, restarting")
                await asyncio.sleep(1.0)

    async def _listen_and_drain(self) -> None:
        async with self.pool.acquire() as listener:
            await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            try:
                while True:
                    await self.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), RELAY_POLL_SECONDS)
                    self._wake.clear()
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Publish every committed row, oldest first. Returns how many were published."""
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                # FOR UPDATE (not SKIP LOCKED): a second relay of the same service waits here
                # instead of publishing later rows first, which would break per-chat order.
                rows = await conn.fetch(
                    "SELECT id, exchange, routing_key, body, headers, message_id, persistent"
                    " FROM outbox ORDER BY id LIMIT $1 FOR UPDATE",
                    RELAY_BATCH,
                )
                if not rows:
                    return total
                results = await asyncio.gather(*(self._publish(row) for row in rows), return_exceptions=True)
                # Only the confirmed prefix is done: if row k failed, rows after it are published
                # again after k on the next pass, so order is kept at the price of duplicates.
                errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
                done = errors[0][0] if errors else len(rows)
                await conn.execute(
                    "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows[:done]]
                )
                total += done
            if errors:
                raise errors[0][1]
            if len(rows) < RELAY_BATCH:
                # The table held fewer rows than a pass takes: all of them are out. A row
                # committed since sends its own NOTIFY, which wakes the relay again; asking the
                # table once more here would cost three round trips per pass for nothing.
                return total

    async def _publish(self, row: asyncpg.Record) -> None:
        await self.bus.publish(
            row["exchange"],
            row["routing_key"],
            row["body"],
            headers=orjson.loads(row["headers"]) if row["headers"] else None,
            message_id=row["message_id"],
            persistent=row["persistent"],
        )
