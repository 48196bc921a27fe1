"""The floor: what the broker and the database alone do on this machine, with no Switchboard code.

Issue 6 reports Switchboard's knee as a fraction of this. Two measurements, each bounded in
count and time, loopback only:

- RabbitMQ: persistent messages of `--size` bytes published with publisher confirms (a window
  of `--window` unconfirmed at a time, as a pipelined publisher keeps) to a quorum queue, as
  the services' queues are, and consumed with manual acks (prefetch `--window`); the rate is
  from the first publish to the last ack.
- PostgreSQL: rows shaped like a stored message (uuid, chat, seq, content of `--size` bytes,
  time) inserted one per transaction, and in transactions of `--batch` rows.

    .venv/bin/python -m bench.floor --messages 20000 --size 512

It prints one JSON object. The queue and table it makes are its own and are removed after.
"""

import argparse
import asyncio
import json
import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

# No run waits longer than this for its messages, however slow the machine.
DEADLINE_SECONDS = 120.0


async def broker_rate(url: str, messages: int, size: int, window: int) -> tuple[float, float]:
    """Messages a second, and the CPU this client used per second of it (near 1.0: the client,
    not the broker, was the limit)."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=window)
        name = f"bench-floor-{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = os.urandom(size // 2).hex().encode()[:size]
        received = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == messages:
                done.set()

        started, cpu = time.perf_counter(), time.process_time()
        consumer_tag = await queue.consume(on_message)
        slots = asyncio.Semaphore(window)

        async def publish() -> None:
            async with slots:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name
                )

        await asyncio.wait_for(asyncio.gather(*(publish() for _ in range(messages))), DEADLINE_SECONDS)
        await asyncio.wait_for(done.wait(), DEADLINE_SECONDS)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await queue.cancel(consumer_tag)
        await queue.delete(if_unused=False, if_empty=False)
        return messages / elapsed, cpu / elapsed
    finally:
        await connection.close()


async def database_rates(url: str, rows: int, size: int, batch: int) -> dict[str, float]:
    """In a database of its own on the server `url` names, dropped after."""
    name = f"bench_floor_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path=f"/{name}")))
        try:
            return await _insert_rates(conn, rows, size, batch)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _insert_rates(conn: asyncpg.Connection, rows: int, size: int, batch: int) -> dict[str, float]:
    await conn.execute(
        "CREATE TABLE messages (id uuid PRIMARY KEY, chat_id uuid NOT NULL, seq bigint NOT NULL,"
        " content text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (chat_id, seq))"
    )
    chat = uuid.uuid4()
    content = "x" * size
    insert = "INSERT INTO messages (id, chat_id, seq, content) VALUES ($1, $2, $3, $4)"
    single = max(1, rows // 10)  # one per transaction is slow: a tenth of the rows is enough
    started = time.perf_counter()
    for seq in range(single):
        await conn.execute(insert, uuid.uuid4(), chat, seq, content)
    one_per_transaction = single / (time.perf_counter() - started)
    started = time.perf_counter()
    for first in range(single, single + rows, batch):
        async with conn.transaction():
            await conn.executemany(
                insert, [(uuid.uuid4(), chat, seq, content) for seq in range(first, first + batch)]
            )
    batched = rows / (time.perf_counter() - started)
    return {
        "inserts_per_second_one_per_transaction": one_per_transaction,
        "inserts_per_second_batched": batched,
    }


async def run(messages: int, size: int, window: int, batch: int) -> dict[str, float]:
    amqp = os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    database = os.environ.get(
        "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    )
    rate, client_cpu = await broker_rate(amqp, messages, size, window)
    return {
        "broker_messages_per_second": rate,
        "broker_client_cpu_cores": client_cpu,
        **await database_rates(database, messages, size, batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument(
        "--messages", type=int, default=20_000, choices=range(100, 200_001), metavar="100..200000"
    )
    parser.add_argument("--size", type=int, default=512, help="bytes of each message body / content")
    parser.add_argument("--window", type=int, default=256, help="unconfirmed publishes and prefetch")
    parser.add_argument("--batch", type=int, default=100, help="rows per transaction, batched")
    args = parser.parse_args()
    figures = asyncio.run(run(args.messages, args.size, args.window, args.batch))
    print(json.dumps({"size": args.size, **{k: round(v, 2) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
