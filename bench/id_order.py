"""What the order of ids costs PostgreSQL after a checkpoint: random (UUIDv4) against
time-ordered (UUIDv7, `switchboard_contracts.ids`) keys.

For each kind, in a scratch database of its own: a table shaped like a stored message (its id
the primary key) and one like delivery's pending rows ((user, message) primary key, an index
on the message), both filled with `--rows` rows; then a CHECKPOINT, and `--messages` messages
written in transactions of `--batch`, as the services write them. It prints, per kind, the WAL
bytes and the full-page images written per message (from `pg_stat_wal`) and the time per
message. The first change to a page after a checkpoint writes the whole page to the WAL: with
random keys nearly every insert lands on a page no insert touched since, with ordered keys
the same few pages at the right edge of each index take them all.

    .venv/bin/python -m bench.id_order --url postgresql://root@127.0.0.1:5432/postgres

CHECKPOINT needs a superuser or a member of `pg_checkpoint`. Loopback only; bounded in rows
and time; the scratch databases are dropped after.
"""

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from switchboard_contracts.ids import new_id

# No kind's run waits longer than this, however slow the machine.
DEADLINE_SECONDS = 300.0
# Recipients the pending rows are spread over (the `pairs` scenario's 200 users).
USERS = 200

KINDS: dict[str, Callable[[], uuid.UUID]] = {"uuid4": uuid.uuid4, "uuid7": new_id}


def _database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _wal(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT wal_bytes::bigint, wal_fpi FROM pg_stat_wal")
    if row is None:
        raise RuntimeError("pg_stat_wal returned no row")
    return int(row[0]), int(row[1])


async def measure(url: str, kind: str, rows: int, messages: int, batch: int) -> dict[str, float]:
    make = KINDS[kind]
    name = f"bench_ids_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(_database(url, name))
        try:
            await conn.execute(
                "CREATE TABLE messages (id uuid PRIMARY KEY, chat_id uuid NOT NULL, content text NOT NULL)"
            )
            await conn.execute(
                "CREATE TABLE pending (user_id text, message_id uuid, position bigint,"
                " PRIMARY KEY (user_id, message_id))"
            )
            await conn.execute("CREATE INDEX pending_by_message ON pending (message_id)")

            async def write(ids: list[uuid.UUID], first: int) -> None:
                await conn.execute(
                    "INSERT INTO messages SELECT id, id, repeat('x', 150) FROM unnest($1::uuid[]) id", ids
                )
                await conn.execute(
                    "INSERT INTO pending SELECT 'u' || ((n + $2) % $3), id, n + $2"
                    " FROM unnest($1::uuid[]) WITH ORDINALITY AS t (id, n)",
                    ids,
                    first,
                    USERS,
                )

            await write([make() for _ in range(rows)], 0)
            await conn.execute("VACUUM ANALYZE")
            await conn.execute("CHECKPOINT")
            before = await _wal(conn)
            started = time.perf_counter()
            for first in range(rows, rows + messages, batch):
                async with conn.transaction():
                    await write([make() for _ in range(batch)], first)
            seconds = time.perf_counter() - started
            after = await _wal(conn)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()
    return {
        "wal_bytes_per_message": round((after[0] - before[0]) / messages),
        "full_page_images_per_message": round((after[1] - before[1]) / messages, 3),
        "us_per_message": round(1e6 * seconds / messages, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="a role that may CHECKPOINT, on the postgres database")
    parser.add_argument("--rows", type=int, default=200_000, help="rows in each table before the checkpoint")
    parser.add_argument("--messages", type=int, default=10_000, help="messages written after it")
    parser.add_argument("--batch", type=int, default=5, help="messages per transaction")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("loopback only")
    results = {}
    async with asyncio.timeout(DEADLINE_SECONDS * len(KINDS)):
        for kind in KINDS:
            results[kind] = await measure(args.url, kind, args.rows, args.messages, args.batch)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
