"""Messages and delivery scale out and in under load: a second instance of each joins and takes
part of the partitions, one leaves with SIGTERM, one dies with kill -9; no message is lost, none
is stored twice, and every receiver sees each chat in seq order."""

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.load import User
from tests.chaos.oracle import judge, lost_pairs, rebuild_differences

from .client import Api, unique
from .system import System, running_system

USERS = 24
CHATS = 12
MEMBERS = 4
# Open loop, messages per second over all chats: steady work for four partitioned processes on
# two cores shared with the broker, the database, presence, two gateways and these clients.
RATE = 30.0
# Confirmed sends to wait for between steps, so each step happens under load.
BETWEEN_STEPS = 150
STEP_TIMEOUT = 90.0
SETTLE_TIMEOUT = 120.0


@pytest.fixture
async def scaling_system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """A system of its own: this test adds, stops and kills processes."""
    async with running_system(*infra_urls, gateways=2) as system:
        yield system


async def metrics(system: System, name: str) -> dict[str, float]:
    """This process's own counts: events handled (ok) and partitions it is active on."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{system.processes[name].url}/metrics", timeout=5)).text
    handled = active = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "switchboard_events_total" and sample.labels.get("outcome") == "ok":
                handled += sample.value
            elif sample.name == "switchboard_partitions_active":
                active = sample.value
    return {"handled": handled, "active": active}


async def both_work(system: System, service: str, before: dict[str, float], timeout: float) -> None:
    """Every instance of `service` handles events it did not handle before, and none is active
    on every partition. Polled: a process offers no event to await (like /readyz)."""
    deadline = time.monotonic() + timeout
    while True:
        now = {name: await metrics(system, name) for name in system.instances(service)}
        working = all(m["handled"] > before.get(name, 0) + 10 for name, m in now.items())
        shared = all(0 < m["active"] < system.topology.partitions for m in now.values())
        if working and shared:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{service} instances do not share the work: {now}\n{system.logs()}")
        await asyncio.sleep(0.5)  # polling /metrics


def confirmed(users: list[User]) -> int:
    return sum(1 for user in users for send in user.sends.values() if send.message_id is not None)


async def more_confirmed(users: list[User], count: int) -> None:
    target = confirmed(users) + count
    assert await users[0].wait(lambda: confirmed(users) >= target, STEP_TIMEOUT), "the load stalled"


async def load(users: list[User], chats_of: dict[str, list[str]], stop: asyncio.Event) -> None:
    """Open loop: message n is due at start + n / RATE whatever happened before."""
    start, n = time.perf_counter(), 0
    while not stop.is_set():
        due = start + n / RATE
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)  # the load's clock
        sender = random.choice(users)
        await sender.send(random.choice(chats_of[sender.id]), due)
        n += 1


async def test_instances_join_and_leave_under_load_without_loss_double_store_or_reorder(
    scaling_system: System,
) -> None:
    system = scaling_system
    rng = random.Random(7)
    names = [unique(f"u{i}") for i in range(USERS)]
    members: dict[str, set[str]] = {}
    for _ in range(CHATS):
        group = rng.sample(names, MEMBERS)
        api = Api(system, group[0])
        try:
            members[await api.create_chat(group[1:])] = set(group)
        finally:
            await api.aclose()
    chats_of = {name: sorted(c for c, m in members.items() if name in m) for name in names}
    changed = asyncio.Condition()
    urls = [system.ws_url(i) for i in range(system.gateways)]
    users = [User(name, urls, set(chats_of[name]), changed) for name in names if chats_of[name]]
    for user in users:
        user.start()
    stop = asyncio.Event()
    sender = None
    try:
        assert await users[0].wait(lambda: all(u.flushed_at for u in users), STEP_TIMEOUT), "not connected"
        sender = asyncio.create_task(load(users, chats_of, stop))
        await more_confirmed(users, BETWEEN_STEPS // 2)

        # Scale out: a second messages and a second delivery take part of the partitions.
        before = {name: (await metrics(system, name))["handled"] for name in ("messages", "delivery")}
        added = await asyncio.gather(system.add_instance("messages"), system.add_instance("delivery"))
        assert added == ["messages-2", "delivery-2"]
        for service in ("messages", "delivery"):
            await both_work(system, service, {service: before[service]}, STEP_TIMEOUT)
        await more_confirmed(users, BETWEEN_STEPS)

        # Scale in gracefully: the second messages hands its partitions back and exits cleanly.
        await asyncio.to_thread(system.terminate, "messages-2")
        leaver = system.processes["messages-2"]
        # uvicorn re-raises the SIGTERM once its shutdown is done: -15 is a clean exit here.
        assert leaver.popen is not None and leaver.popen.returncode in (0, -15), leaver.tail()
        assert '"service stopped"' in leaver.tail(), leaver.tail()
        await more_confirmed(users, BETWEEN_STEPS)

        # A crash: the first delivery dies holding deliveries; the broker gives them to the second.
        await asyncio.to_thread(system.kill, "delivery")
        await more_confirmed(users, BETWEEN_STEPS)
    finally:
        stop.set()
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender

    try:
        # Settled: every send confirmed (clients resend unconfirmed ones) and delivered to all.
        def settled() -> bool:
            everything_confirmed = all(s.message_id for u in users for s in u.sends.values())
            return everything_confirmed and not lost_pairs(users, members)

        await users[0].wait(settled, SETTLE_TIMEOUT)
        verdict = judge(users, members)
        report = f"{verdict}\n{system.logs()}"
        repeats = sum(len(u.received) - len({r.message_id for r in u.received}) for u in users)
        print(f"acknowledged {verdict.acknowledged}, deliveries {verdict.deliveries}, repeats {repeats}")
        assert verdict.unconfirmed == 0, report
        assert verdict.lost == 0, report
        assert verdict.stored_twice == 0, report
        assert verdict.reordered == 0, report
        assert verdict.to_non_members == 0, report
        # Exactly once by id, in seq order per chat, at each receiver (repeats dropped by id, as
        # clients do; after a kill -9 some are expected).
        for user in users:
            seen: set[str] = set()
            newest: dict[str, int] = {}
            for received in user.received:
                if received.message_id in seen:
                    continue
                seen.add(received.message_id)
                assert received.seq > newest.get(received.chat_id, 0), f"{user.id} reordered {received}"
                newest[received.chat_id] = received.seq
            due = {
                send.message_id
                for other in users
                for send in other.sends.values()
                if send.sender != user.id and user.id in members[send.chat_id]
            }
            assert seen == due, f"{user.id}: missing {due - seen}, unexpected {seen - due}"
        # The stored log: nothing stored twice, every confirmed message stored, log = tables.
        sends = [send for user in users for send in user.sends.values()]
        assert await rebuild_differences(system.database_url, sends) == []
        assert verdict.acknowledged >= 3 * BETWEEN_STEPS
    finally:
        for user in users:
            await user.stop()
