"""The event log as the outbox: a service that keeps an append-only log of its events publishes
them from the log itself, in its order, instead of writing each a second time to an outbox.

Writing (in the unit of work's transaction): `append_events`, a function of the service's schema,
takes a transaction-level advisory lock and appends the events. The lock is held until commit,
so transactions append and commit in one order: the committed part of the log is always a prefix
of its positions (a gap is a position a rolled-back transaction took, never a row still to come).
That is what lets the relay keep a cursor instead of marking each event published.

Publishing: one relay per database is the leader (a session advisory lock on a connection it
holds); the others wait for that lock and take over as soon as it goes. The leader publishes
everything after its cursor, in position order, per routing key one batch at a time
(`batches.py`). The events a unit of work of its own process just committed are handed to it in
memory, so while they follow on from the cursor it publishes them without reading the database
at all; anything else (another instance's commits, which say so by NOTIFY, a gap, a restart) it
reads from the log. The cursor is written back about once a second: after a crash the new
leader publishes again what followed it (consumers are idempotent), never skips anything.
"""

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import orjson
import structlog
from pydantic_core import to_json

from switchboard_contracts.partitions import event_routing_key

from .amqp import Bus
from .batcher import in_partition_order
from .db import Conn
from .uow import Outbox

__all__ = ["EventLog"]

log = structlog.get_logger()

# The NOTIFY channel on which writers that are not the leader wake it.
NOTIFY_CHANNEL = "switchboard_event_log"
# Events read from the log per query when the memory does not have them.
READ_ROWS = 1000
# How often the leader looks at the log although nobody woke it (a NOTIFY lost while its
# connection was being replaced): a second at most of delay.
POLL_SECONDS = 1.0
# How often the leader writes its cursor back: what a new leader would publish again.
SAVE_SECONDS = 1.0
# Back-off after a failed pass or a lost connection (broker or database away).
RETRY_SECONDS = 1.0

APPEND = (
    "SELECT appended FROM append_events($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[],"
    " $6::timestamptz[], $7::text[], $8::boolean)"
)


class EventLog:
    """Writes a unit of work's events to the log, and relays the log to the broker."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, source: str) -> None:
        self.pool = pool
        self.bus = bus
        self.source = source
        self.leader = False
        self._cursor = 0
        # (position, routing key, body) of events this process committed, not yet published.
        self._handed: list[tuple[int, str, bytes]] = []
        self._wake = asyncio.Event()

    async def write(self, conn: Conn, outbox: Outbox) -> None:
        if not outbox.keys:
            return
        if len(outbox.streams) != len(outbox.keys):
            raise RuntimeError("every event of an event log names its stream and version")
        envelopes = outbox.envelopes
        rows = await conn.fetch(
            APPEND,
            [e.id for e in envelopes],
            [stream for stream, _ in outbox.streams],
            [version for _, version in outbox.streams],
            [e.type for e in envelopes],
            [to_json(e.data).decode() for e in envelopes],
            [e.time for e in envelopes],
            outbox.keys,
            # The leader in this process learns of the events in memory; another needs waking.
            not self.leader,
        )
        outbox.positions = [row[0] for row in rows]

    def committed(self, outbox: Outbox) -> None:
        if outbox.positions and self.leader:
            self._handed.extend(zip(outbox.positions, outbox.keys, outbox.bodies, strict=True))
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event log relay failed; starting over")
            finally:
                self.leader = False
                self._handed.clear()
            await asyncio.sleep(RETRY_SECONDS)

    async def _lead(self) -> None:
        async with self.pool.acquire() as conn:
            # Waits while another instance leads; its session ending (it stopped, or died) hands
            # the lock over at once.
            await conn.execute("SELECT pg_advisory_lock(hashtext(current_schema() || '.relay'))")
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                self._cursor = await conn.fetchval("SELECT position FROM relay_cursor")
                saved, saved_at = self._cursor, time.monotonic()
                self.leader = True
                log.info("event log relay leads", cursor=self._cursor)
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                    self._wake.clear()
                    try:
                        await self._pass(conn)
                    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                        raise
                    except Exception:
                        # The broker is away: nothing moved, the next pass (after the back-off)
                        # publishes the same events again.
                        log.exception("event log relay pass failed; retrying")
                        await asyncio.sleep(RETRY_SECONDS)
                        self._wake.set()
                    if self._cursor != saved and time.monotonic() - saved_at >= SAVE_SECONDS:
                        await conn.execute("UPDATE relay_cursor SET position = $1", self._cursor)
                        saved, saved_at = self._cursor, time.monotonic()
            finally:
                self.leader = False
                await self._step_down(conn)

    async def _step_down(self, conn: "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]") -> None:
        """Save the cursor (if the database lets it) and release the lead. A connection whose
        unlock did not go through is terminated, since its session ending is what releases the
        lock: back in the pool still holding it, it would block this process's next attempt to
        lead, and every other instance's, for good."""
        unlocked = False
        try:
            with contextlib.suppress(Exception):
                await conn.remove_listener(NOTIFY_CHANNEL, self._notified)
            with contextlib.suppress(Exception):
                await conn.execute("UPDATE relay_cursor SET position = $1", self._cursor)
            with contextlib.suppress(Exception):
                unlocked = bool(
                    await conn.fetchval("SELECT pg_advisory_unlock(hashtext(current_schema() || '.relay'))")
                )
        finally:
            if not unlocked:
                conn.terminate()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _pass(self, conn: Conn) -> None:
        """Publish everything committed after the cursor, from memory while it follows on."""
        handed = sorted(entry for entry in self._handed if entry[0] > self._cursor)
        run: list[tuple[int, str, bytes]] = []
        for entry in handed:
            if entry[0] != (run[-1][0] if run else self._cursor) + 1:
                break
            run.append(entry)
        if handed and len(run) == len(handed):
            await self._publish(run)
            self._handed = []
            return
        # Something else was committed (another instance, or a gap a rollback left): the log has
        # it all, in order, and what this process handed over is in it too.
        while True:
            rows = await conn.fetch(
                "SELECT position, routing_key, event_id, type, data, recorded_at FROM event_log"
                " WHERE position > $1 ORDER BY position LIMIT $2",
                self._cursor,
                READ_ROWS,
            )
            if not rows:
                break
            await self._publish([_from_row(row, self.source, self.bus.topology.partitions) for row in rows])
            if len(rows) < READ_ROWS:
                break
        self._handed = [entry for entry in self._handed if entry[0] > self._cursor]

    async def _publish(self, events: list[tuple[int, str, bytes]]) -> None:
        """The events as batches in each partition's log order (`in_partition_order`), written
        in that order on the one channel, all confirms awaited together; the cursor moves past
        them only when every one was confirmed."""
        batches = in_partition_order((key, body) for _, key, body in events)
        await asyncio.gather(*(self.bus.publish_batch(key, bodies) for key, bodies in batches))
        self._cursor = events[-1][0]


def _from_row(row: asyncpg.Record, source: str, partitions: int) -> tuple[int, str, bytes]:
    """A logged event as the relay publishes it: its envelope, and its routing key (computed for
    rows from before the log kept it)."""
    data: Any = orjson.loads(row["data"])
    body = to_json(
        {
            "id": str(row["event_id"]),
            "type": row["type"],
            "source": source,
            "time": row["recorded_at"],
            "specversion": "1.0",
            "data": data,
        }
    )
    key = row["routing_key"]
    if key is None:
        try:
            key = event_routing_key(row["type"], data, partitions)
        except KeyError:
            key = ""
    return row["position"], key, body
