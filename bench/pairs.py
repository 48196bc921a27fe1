"""A first measurement of the whole pipeline: pairs of users in direct chats, open-loop sends.

Not the benchmark suite (that is a later issue): one scenario, one rate, to see where the
system stands. It starts its own system (one gateway unless told otherwise) with its own
database and broker namespace, like the integration tests, and prints one line of figures.

    .venv/bin/python -m bench.pairs --pairs 50 --rate 500 --seconds 10
    .venv/bin/python -m bench.pairs --pairs 100 --rate 150 --seconds 15 --gateways 2 --instances 2

`--instances N` runs N instances each of messages and delivery (the partitioned services).

Loopback only; bounded by --seconds and by the message count rate x seconds.
"""

import argparse
import asyncio
import os
import time
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.client import Api, Client, unique
from tests.integration.system import System, running_system


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(pairs: int, rate: float, seconds: float, gateways: int, instances: int = 1) -> None:
    amqp = os.environ.get("CHAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    database = os.environ.get(
        "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    )
    async with running_system(amqp, database, gateways=gateways) as system:
        for _ in range(instances - 1):
            await asyncio.gather(system.add_instance("messages"), system.add_instance("delivery"))
        users = [(unique("s"), unique("r")) for _ in range(pairs)]
        apis = [Api(system, sender) for sender, _ in users]
        chats = await asyncio.gather(
            *(api.create_chat([r], kind="direct") for api, (_, r) in zip(apis, users, strict=True))
        )
        senders = [await Client.connect(system.ws_url(i % gateways), s) for i, (s, _) in enumerate(users)]
        receivers = [
            await Client.connect(system.ws_url((i + 1) % gateways), r) for i, (_, r) in enumerate(users)
        ]
        for client in senders + receivers:
            await client.next("queue_flushed")

        total = int(rate * seconds)
        scheduled: dict[str, float] = {}
        start = time.perf_counter() + 0.5
        late = 0
        for n in range(total):
            # Open loop: message n is due at start + n / rate whatever happened before; a late
            # send is measured from when it was due, not from when it went out.
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late += 1
            i = n % pairs
            temp_id = f"{n}"
            scheduled[f"{chats[i]}/{temp_id}"] = due
            await senders[i].send_message(chats[i], f"m{n}", temp_id=temp_id)
        sent_at = time.perf_counter()

        expected = {i: total // pairs + (1 if i < total % pairs else 0) for i in range(pairs)}
        await asyncio.gather(
            *(receivers[i].wait_messages(expected[i], timeout=60) for i in range(pairs) if expected[i])
        )
        done = time.perf_counter()
        latencies, to_store = [], []
        # perf_counter and the wall clock differ by a constant; stored times are wall clock.
        offset = time.time() - time.perf_counter()
        for i in range(pairs):
            for message, arrived in zip(receivers[i].messages(), receivers[i].arrivals, strict=False):
                key = f"{message['chat_id']}/{int(message['content'][1:])}"
                if key in scheduled:
                    latencies.append(arrived - scheduled[key])
                    stored = datetime.fromisoformat(message["created_at"]).timestamp() - offset
                    to_store.append(stored - scheduled[key])
        print(
            f"pairs={pairs} gateways={gateways} instances={instances} target={rate:.0f}/s"
            f" sent={total} in {sent_at - start:.1f}s"
            f" (late sends {late}) all received after {done - start:.1f}s;"
            f" send->receive p50={percentile(latencies, 0.5) * 1000:.0f}ms"
            f" p99={percentile(latencies, 0.99) * 1000:.0f}ms max={max(latencies) * 1000:.0f}ms;"
            f" of which send->stored p50={percentile(to_store, 0.5) * 1000:.0f}ms"
            f" p99={percentile(to_store, 0.99) * 1000:.0f}ms"
        )
        await print_batches(system)
        for client in senders + receivers:
            await client.close()
        for api in apis:
            await api.aclose()


async def print_batches(system: System) -> None:
    """Batch sizes and times per service, from their own /metrics."""
    async with httpx.AsyncClient() as http:
        for name in [*system.instances("messages"), *system.instances("delivery"), "presence"]:
            text = (await http.get(f"{system.processes[name].url}/metrics")).text
            samples = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name.startswith("switchboard_batch")
            }
            batches = samples.get("switchboard_batch_size_count", 0)
            if batches:
                print(
                    f"  {name}: {batches:.0f} batches, {samples['switchboard_batch_size_sum'] / batches:.1f} events"
                    f" and {samples['switchboard_batch_seconds_sum'] / batches * 1000:.1f} ms each"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second, all pairs together")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument(
        "--instances", type=int, default=1, help="instances each of messages and delivery (at most 4)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.pairs, args.rate, min(args.seconds, 120.0), args.gateways, min(args.instances, 4)))


if __name__ == "__main__":
    main()
