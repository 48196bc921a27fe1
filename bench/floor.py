"""The floor: what the broker and the database alone do on this machine, with no Switchboard code.

The report gives Switchboard's knee as a fraction of this. Two measurements, each bounded in
count and time, loopback only:

- RabbitMQ: persistent messages of `--size` bytes published with publisher confirms (a window
  of `--window` unconfirmed at a time, as a pipelined publisher keeps) to a quorum queue, as
  the services' queues are, and consumed with manual acks (prefetch `--window`) by another
  process; the rate is from the first publish to the last ack, with each side's CPU, so that a
  client at a whole core says the client, not the broker, was the limit.
- PostgreSQL: rows shaped like a stored message (uuid, chat, seq, content of `--size` bytes,
  time) inserted one per transaction, and in transactions of `--batch` rows.

    .venv/bin/python -m bench.floor --messages 20000 --size 512

It prints one JSON object. The queue and table it makes are its own and are removed after.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import time
import uuid
from multiprocessing.connection import Connection
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

# No run waits longer than this for its messages, however slow the machine.
DEADLINE_SECONDS = 120.0


async def consume(url: str, name: str, messages: int, window: int, ready: Connection) -> None:
    """The consuming side, in a process of its own: declares the queue, says so, acks `messages`
    and sends back when the last was acked and the CPU it used."""
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=window)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        received = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == messages:
                done.set()

        tag = await queue.consume(on_message)
        cpu = time.process_time()
        ready.send("ready")
        await asyncio.wait_for(done.wait(), DEADLINE_SECONDS)
        ready.send((time.perf_counter(), time.process_time() - cpu))  # one monotonic clock system-wide
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


def _consume_process(url: str, name: str, messages: int, window: int, ready: Connection) -> None:
    asyncio.run(consume(url, name, messages, window, ready))


async def broker_rate(url: str, messages: int, size: int, window: int) -> dict[str, float]:
    """Messages a second from the first publish to the last ack, the publisher in this process
    and the consumer in another, and the CPU each used per second of it: near 1.0, that client
    and not the broker was the limit."""
    name = f"bench-floor-{uuid.uuid4().hex[:8]}"
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    consumer = multiprocessing.get_context("spawn").Process(
        target=_consume_process, args=(url, name, messages, window, theirs)
    )
    consumer.start()
    loop = asyncio.get_running_loop()
    try:
        if not await loop.run_in_executor(None, ours.poll, DEADLINE_SECONDS):
            raise TimeoutError("the consumer did not start")
        ours.recv()
        connection = await aio_pika.connect_robust(url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            body = os.urandom(size // 2).hex().encode()[:size]
            slots = asyncio.Semaphore(window)

            async def publish() -> None:
                async with slots:
                    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                    await channel.default_exchange.publish(message, routing_key=name)

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.wait_for(asyncio.gather(*(publish() for _ in range(messages))), DEADLINE_SECONDS)
            publisher_cpu = time.process_time() - cpu
        finally:
            await connection.close()
        if not await loop.run_in_executor(None, ours.poll, DEADLINE_SECONDS):
            raise TimeoutError("not every message was consumed in time")
        ended, consumer_cpu = ours.recv()
    finally:
        consumer.join(DEADLINE_SECONDS)
        if consumer.is_alive():
            consumer.kill()
    elapsed = ended - started
    return {
        "broker_messages_per_second": messages / elapsed,
        "broker_publisher_cpu_cores": publisher_cpu / elapsed,
        "broker_consumer_cpu_cores": consumer_cpu / elapsed,
    }


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
    return {
        **await broker_rate(amqp, messages, size, window),
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
