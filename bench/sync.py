"""How fast a device catches up: `sync` replay against the per-user queue flush, same backlog.

A sender stores `--messages` messages spread over `--chats` group chats while the recipient is
offline; then one device of the recipient connects and takes the queue flush, and another
connects and syncs from nothing. Both are timed from connecting to `queue_flushed` / `sync_done`
with every message in hand; compare the two figures of one run, not figures across runs.

    .venv/bin/python -m bench.sync --messages 2000 --chats 4

Loopback only; bounded by --messages (at most 20,000).
"""

import argparse
import asyncio
import os
import time

from tests.integration.client import Api, Client, unique
from tests.integration.system import running_system


def check(got: int, expected: int, what: str) -> None:
    if got != expected:
        raise SystemExit(f"{what} brought {got} messages, not {expected}: the figures would be wrong")


async def run(messages: int, chats: int) -> None:
    amqp = os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    database = os.environ.get(
        "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    )
    # Pages as in production (not the tests' small ones), and no compaction: all is replayed.
    settings = {"CHAT_FLUSH_PAGE_MESSAGES": "1000", "CHAT_SYNC_COMPACTION_LIMIT": "10000"}
    async with running_system(amqp, database, gateways=1, **settings) as system:
        sender, recipient = unique("s"), unique("r")
        api = Api(system, sender)
        chat_ids = [await api.create_chat([recipient]) for _ in range(chats)]
        writer = await Client.connect(system.ws_url(), sender)
        started = time.perf_counter()
        for n in range(messages):
            await writer.send_message(chat_ids[n % chats], f"message {n} " + "x" * 100)
        await writer.wait(lambda _: len(writer.of("message_sent")) == messages, timeout=600)
        stored = time.perf_counter() - started

        started = time.perf_counter()
        flushed = await Client.connect(system.ws_url(), recipient)
        await flushed.next("queue_flushed", timeout=600)
        flush_seconds = time.perf_counter() - started
        check(len(flushed.messages()), messages, "queue flush")
        await flushed.close()

        started = time.perf_counter()
        synced = await Client.connect(system.ws_url(), recipient)
        await synced.send("sync", {"chats": {chat: 0 for chat in chat_ids}})
        await synced.next("sync_done", timeout=600)
        sync_seconds = time.perf_counter() - started
        check(len(synced.messages()), messages, "sync")
        await synced.close()
        await writer.close()
        await api.aclose()
    print(
        f"messages={messages} chats={chats} store={messages / stored:.0f} msg/s "
        f"queue_flush={flush_seconds:.2f}s ({messages / flush_seconds:.0f} msg/s) "
        f"sync={sync_seconds:.2f}s ({messages / sync_seconds:.0f} msg/s) "
        f"sync/flush={sync_seconds / flush_seconds:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000, choices=range(1, 20_001), metavar="1..20000")
    parser.add_argument("--chats", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.chats))


if __name__ == "__main__":
    main()
