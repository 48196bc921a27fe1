"""Recovered means back to full speed: after PostgreSQL or RabbitMQ restarts under a steady load,
send → receive p99 is back within 1.5x of its level before, within seconds, and every service's
relay works again: messages' event log (every message on its way to delivery), presence's outbox
(a user going offline, a catch-up on connecting) and delivery's (a notification for a user who
is offline).

The load and the latency measure are the chaos run's (tests/chaos): real clients on both
gateways that reconnect, resend unconfirmed sends and acknowledge, an open-loop sender, and the
p99 over windows of live deliveries (tests/chaos/speed.py). These tests stop and start the local
RabbitMQ and PostgreSQL, as test_broker_outage does; every other system of the test run is idle
meanwhile and reconnects by itself.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from switchboard_contracts.batches import decode_events
from switchboard_contracts.events import GatewayHeartbeat, NotificationRequested, UserWentOffline
from tests.chaos.faults import Infra
from tests.chaos.oracle import judge, lost_pairs
from tests.chaos.run import World, caught_up_since, load, round_trip, world
from tests.chaos.speed import BACK_FACTOR, SpeedLevel

from .client import WAIT
from .system import System, running_system

# Messages a second over the chaos world's chats (two groups of six, four direct chats): about
# a hundred live deliveries a second, so each 2 s window's p99 stands on some two hundred.
RATE = 40.0
WARMUP_SECONDS, LEVEL_SECONDS = 2.0, 6.0
# The promise under test: full speed again this soon after the infrastructure is back.
BACK_WITHIN = 10.0
# Within the gateway's default send hold (10 s): a stop this long must cost latency, no error.
BROKER_DOWN_SECONDS = 5.0
# Presence's grace before a user who left counts as offline (5 s by default): short, so that the
# test's user is offline, and notified about, soon.
PRESENCE_GRACE = "0.5"


class Loaded:
    def __init__(self, w: World) -> None:
        self.world = w
        self._stop = asyncio.Event()
        self._sender = asyncio.create_task(load(w, RATE, self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await self._sender


@contextlib.asynccontextmanager
async def under_load(infra_urls: tuple[str, str]) -> AsyncIterator[Loaded]:
    async with (
        running_system(*infra_urls, gateways=2, CHAT_PRESENCE_GRACE_SECONDS=PRESENCE_GRACE) as system,
        world(system) as w,
    ):
        assert await caught_up_since(w.users, 0.0, WAIT) is not None
        assert await round_trip(w, WAIT)
        loaded = Loaded(w)
        try:
            yield loaded
        finally:
            await loaded.stop()


async def level_before(w: World) -> SpeedLevel:
    start = time.perf_counter() + WARMUP_SECONDS
    await asyncio.sleep(WARMUP_SECONDS + LEVEL_SECONDS + 1.0)  # the load's own clock runs meanwhile
    level = w.latencies.level(start, start + LEVEL_SECONDS)
    assert level.samples > 100, level
    return level


async def assert_back_to_full_speed(w: World, level: SpeedLevel, since: float) -> None:
    limit = BACK_FACTOR * level.p99
    after = await w.latencies.back_within(limit, since, BACK_WITHIN)
    assert after is not None, (
        f"p99 not back within {limit * 1000:.0f} ms ({BACK_FACTOR}x {level.p99 * 1000:.0f} ms)"
        f" for any window of sends starting within {BACK_WITHIN} s"
    )


class Observed:
    """Events of some types as they are published, on a queue of the test's own."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []
        self.changed = asyncio.Condition()

    async def _record(self, message: AbstractIncomingMessage) -> None:
        async with self.changed:
            self.seen += decode_events(message.body, message.content_type)
            self.changed.notify_all()

    def of(self, event_type: str) -> list[dict[str, object]]:
        return [e["data"] for e in self.seen if e["type"] == event_type]  # type: ignore[misc]

    async def wait(self, event_type: str, **data: object) -> None:
        def found() -> bool:
            return any(all(e.get(k) == v for k, v in data.items()) for e in self.of(event_type))

        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(found)

    async def wait_distinct(self, event_type: str, field: str, count: int) -> None:
        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(lambda: len({e[field] for e in self.of(event_type)}) >= count)


@contextlib.asynccontextmanager
async def observing(system: System, *event_types: str) -> AsyncIterator[Observed]:
    observed = Observed()
    async with await aio_pika.connect(system.amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for event_type in event_types:
            await queue.bind(f"{system.namespace}.events", routing_key=f"{event_type}.*")
        await queue.consume(observed._record, no_ack=True)
        yield observed


async def assert_every_relay_works(w: World) -> None:
    """Both gateways' heartbeats reach the bus again (or presence would expire their sessions).
    The probe pair, away from the load: one of them goes offline (presence's relay tells
    delivery), gets a message and a notification for it (delivery's relay), and comes back to a
    catch-up with that message in it (presence's relay asks for the flush)."""
    sender, away, chat = w.probe
    types = GatewayHeartbeat.TYPE, UserWentOffline.TYPE, NotificationRequested.TYPE
    async with observing(w.system, *types) as observed:
        await observed.wait_distinct(GatewayHeartbeat.TYPE, "gateway_id", w.system.gateways)
        await away.go_offline()
        await observed.wait(UserWentOffline.TYPE, user_id=away.id)
        send = await sender.send(chat, time.perf_counter())
        assert await sender.wait(lambda: send.message_id is not None, WAIT)
        await observed.wait(NotificationRequested.TYPE, recipient_id=away.id, message_id=send.message_id)
    since = time.perf_counter()
    away.go_online()
    assert await caught_up_since([away], since, WAIT) is not None
    assert send.message_id in away.first_seen


async def assert_nothing_lost(loaded: Loaded) -> None:
    """Once the load stops, every confirmed message reaches every member, once, in order, and
    no send was ever answered with an error."""
    await loaded.stop()
    w = loaded.world
    await w.users[0].wait(lambda: not lost_pairs(w.users, w.members), WAIT)
    verdict = judge(w.users, w.members)
    assert verdict.passed, verdict
    assert [e for u in w.users for e in u.errors] == []


async def test_after_a_database_restart_under_load_the_load_is_back_to_full_speed(
    infra_urls: tuple[str, str],
) -> None:
    infra = Infra(*infra_urls)
    async with under_load(infra_urls) as loaded:
        level = await level_before(loaded.world)
        # Counted from the stop: the restart (down for a second) is inside the ten seconds.
        stopped = time.perf_counter()
        await infra.restart_database()
        await assert_back_to_full_speed(loaded.world, level, stopped)
        await assert_every_relay_works(loaded.world)
        await assert_nothing_lost(loaded)


async def test_after_a_broker_stop_of_seconds_under_load_no_send_failed_and_speed_is_back(
    infra_urls: tuple[str, str],
) -> None:
    infra = Infra(*infra_urls)
    async with under_load(infra_urls) as loaded:
        level = await level_before(loaded.world)
        await infra.stop_broker()
        try:
            await asyncio.sleep(BROKER_DOWN_SECONDS)  # the outage itself, not a wait for an event
        finally:
            await infra.start_broker()
        # Counted from the broker's return: the outage itself is meant to outlast the hold's
        # first seconds, and what is measured is how soon the system catches up after it.
        await assert_back_to_full_speed(loaded.world, level, time.perf_counter())
        await assert_every_relay_works(loaded.world)
        await assert_nothing_lost(loaded)
