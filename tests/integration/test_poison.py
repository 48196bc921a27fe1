"""A poison event is dead-lettered after a bounded number of deliveries, never blocks the
healthy events behind it, and can be listed and replayed with `switchboard-admin dlq`."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from structlog.testing import capture_logs
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from switchboard_contracts.events import ChatCreated, ChatMemberAdded, Envelope, Event
from switchboard_contracts.partitions import event_routing_key, partition_key, partition_of
from switchboard_contracts.topology import PARTITIONED, Topology
from switchboard_runtime.amqp import DELIVERY_LIMIT, Bus, declare_service_queues
from switchboard_runtime.consumer import BATCH_RETRY_SECONDS, EventConsumer
from switchboard_runtime.db import Conn, create_pool
from switchboard_runtime.outbox import OutboxTable
from switchboard_runtime.uow import Outbox, UnitOfWork, UnitsOfWork

from .broker import first_delivery
from .client import Api, Client, unique
from .system import BIN, System, running_system

HEALTHY = 40
# A poison event after every tenth message: they share batches with healthy events.
POISON_EVERY = 10
# PostgreSQL text cannot hold U+0000, so every handler that stores this member id fails with
# a DataError (22021), on every try: non-transient poison that still passes validation.
POISONED_USER = "poison\x00user"
# Copies reach the dead-letter queue and our watch queue separately (the first through the
# quorum queue's log), so a listing right after our copy arrived may miss it for a moment: a
# bounded re-run covers that, as polling /readyz covers a process that offers no event to await.
LISTING_SETTLES = 10.0


@dataclass
class DeadLetterWatch:
    """A queue of the test's own, bound to `<ns>.dead-letter` beside the services' dead-letter
    queues: the broker copies every dead letter to it, so the test waits for dead-lettering as it
    happens without taking anything out of the queues under test."""

    connection: AbstractRobustConnection
    seen: list[AbstractIncomingMessage] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @classmethod
    async def start(cls, amqp_url: str, topology: Topology, services: tuple[str, ...]) -> "DeadLetterWatch":
        watch = cls(await aio_pika.connect_robust(amqp_url))
        channel = await watch.connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for service in services:
            await queue.bind(topology.dead_letter_exchange, routing_key=service)
        await queue.consume(watch._on_message, no_ack=True)
        return watch

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with self.changed:
            self.seen.append(message)
            self.changed.notify_all()

    def of(self, service: str, message_id: str) -> list[AbstractIncomingMessage]:
        return [m for m in self.seen if m.routing_key == service and m.message_id == message_id]

    async def wait(self, service: str, message_id: str, copies: int = 1, timeout: float = 60) -> Any:
        """The headers of the `copies`-th dead letter of this message from this service."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.of(service, message_id)) >= copies)
        return self.of(service, message_id)[copies - 1].headers

    async def close(self) -> None:
        await self.connection.close()


async def publish(amqp_url: str, exchange: str, routing_key: str, envelope: Envelope) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key,
        )


async def admin(system: System, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "switchboard-admin"),
        *args,
        env=system.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def listing_until(system: System, service: str, done: Callable[[str], bool]) -> str:
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(LISTING_SETTLES), wait=wait_fixed(0.2), reraise=True
    ):
        with attempt:
            code, out = await admin(system, "dlq", "list", service)
            assert code == 0, out
            assert done(out), out
    return out


def queue_of(topology: Topology, service: str, envelope: Envelope) -> str:
    """The queue an event reaches in a service: its partition's, or the service's one queue."""
    if service not in PARTITIONED:
        return topology.service_queue(service)
    key = partition_key(envelope.type, envelope.data)
    return topology.partition_queue(service, partition_of(key, topology.partitions))


def poison(chat_members: list[str]) -> Envelope:
    event = ChatCreated(
        chat_id=uuid.uuid4(),
        chat_type="group",
        title=None,
        members=[*chat_members, POISONED_USER],
        created_by=chat_members[0],
        created_at=datetime.now(UTC),
    )
    return Envelope.wrap(event, "test")


@pytest.fixture
async def poison_system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """A system of its own: this test fills its dead-letter queues on purpose."""
    async with running_system(*infra_urls, gateways=1) as system:
        yield system


async def test_poison_is_dead_lettered_without_blocking_and_can_be_listed_and_replayed(
    poison_system: System,
) -> None:
    system = poison_system
    topology = system.topology
    a, b = unique("a"), unique("b")
    api = Api(system, a)
    chat = await api.create_chat([b])
    alice = await Client.connect(system.ws_url(), a)
    bob = await Client.connect(system.ws_url(), b)
    watch = await DeadLetterWatch.start(system.amqp_url, topology, ("delivery", "presence"))
    try:
        await alice.next("queue_flushed")
        await bob.next("queue_flushed")

        poisons: list[Envelope] = []
        for i in range(HEALTHY):
            await alice.send_message(chat, f"m{i}")
            if i % POISON_EVERY == POISON_EVERY // 2:
                poisons.append(poison([a, b]))
                key = event_routing_key(ChatCreated.TYPE, poisons[-1].data, topology.partitions)
                await publish(system.amqp_url, topology.events_exchange, key, poisons[-1])

        # Nothing healthy is held up behind the poison.
        await bob.wait_messages(HEALTHY, timeout=60)
        # Each poison event died once, on its first delivery, in both services that store members.
        for envelope in poisons:
            for service in ("delivery", "presence"):
                headers = await watch.wait(service, str(envelope.id))
                death = headers["x-death"][0]
                assert (death["reason"], death["count"]) == ("rejected", 1)
                assert death["queue"] == queue_of(topology, service, envelope)

        ids = [str(envelope.id) for envelope in poisons]
        listed = await listing_until(system, "delivery", lambda out: all(i in out for i in ids))
        for line in (line for line in listed.splitlines() if ids[0] in line):
            assert ChatCreated.TYPE in line and "rejected x1" in line
            assert f"first died in {queue_of(topology, 'delivery', poisons[0])}" in line
        # Listing took nothing away: a second listing still shows all of them.
        await listing_until(system, "delivery", lambda out: all(i in out for i in ids))

        # A healthy event dead-lettered by hand stands for one that failed for a reason since fixed.
        erin = unique("e")
        healthy = Envelope.wrap(ChatMemberAdded(chat_id=uuid.UUID(chat), user_id=erin, by=a), "test")
        await publish(system.amqp_url, topology.dead_letter_exchange, "delivery", healthy)
        await watch.wait("delivery", str(healthy.id))
        await listing_until(system, "delivery", lambda out: str(healthy.id) in out)

        code, out = await admin(system, "dlq", "replay", "delivery", "--id", ids[0], "--id", str(healthy.id))
        assert code == 0, out
        # Each back to the queue of its own partition (the chat's), not to one service queue.
        assert "2 event(s) replayed to" in out
        for envelope in (poisons[0], healthy):
            assert queue_of(topology, "delivery", envelope) in out
        # The healthy one is handled: its members hear that Erin joined.
        joined = await bob.next("member_joined", timeout=60)
        assert joined["user_id"] == erin
        # The poison is still poison: dead-lettered again, once more, its history kept.
        headers = await watch.wait("delivery", ids[0], copies=2)
        assert (headers["x-death"][0]["reason"], headers["x-death"][0]["count"]) == ("rejected", 2)
        final = await listing_until(
            system, "delivery", lambda out: all(i in out for i in ids) and "rejected x2" in out
        )
        assert str(healthy.id) not in final
        assert f"{len(poisons)} dead-lettered event(s) shown" in final

        code, out = await admin(system, "dlq", "replay", "delivery", "--id", str(uuid.uuid4()))
        assert code == 1 and "0 event(s) replayed" in out and "not found" in out
    finally:
        await watch.close()
        await alice.close()
        await bob.close()
        await api.aclose()


async def test_a_message_that_kills_its_consumer_every_time_is_dead_lettered_after_the_limit(
    infra_urls: tuple[str, str],
) -> None:
    """A consumer process that dies holding a message (its connection drops, no ack) gets it back;
    the quorum queue counts those returns and dead-letters it past `x-delivery-limit`."""
    amqp_url, database_url = infra_urls
    namespace_owner = System(amqp_url, database_url)  # unstarted: its namespace and clean-up only
    topology = Topology(namespace_owner.namespace)
    bus = Bus(amqp_url, topology, source="test")
    await bus.connect()
    watch = await DeadLetterWatch.start(amqp_url, topology, ("delivery",))
    try:
        deadly = poison(["a"])
        await bus.publish_event(deadly)
        deliveries = 0
        # One more than the limit is the most a healthy broker may hand out; the bound is the test.
        for _ in range(DELIVERY_LIMIT + 1):
            connection = await aio_pika.connect(amqp_url)
            channel = await connection.channel()
            queues = await declare_service_queues(channel, topology, "delivery")
            queue = next(q for q in queues if q.name == queue_of(topology, "delivery", deadly))
            message = await first_delivery(queue)
            deliveries += 1
            assert message.message_id == str(deadly.id)
            await connection.close()  # the "crash": gone without an ack
        headers = await watch.wait("delivery", str(deadly.id))
        assert deliveries == DELIVERY_LIMIT + 1
        assert headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        await watch.close()
        await bus.close()
        await namespace_owner.stop()


class RecordingUnits(UnitsOfWork[Conn]):
    """Units of work that tell the test what each committed (the titles its handler noted)."""

    def __init__(self, lone: "LoneConsumer") -> None:
        super().__init__(lone.pool, lambda conn: conn, lone.bus, OutboxTable(lone.pool, lone.bus), "test")
        self.lone = lone

    def committed(self, outbox: Outbox) -> None:
        super().committed(outbox)
        self.lone.record([message.body.decode() for message in outbox.messages])


@dataclass
class LoneConsumer:
    """The base consumer in this process, as delivery, on the real broker and database, with one
    handler: it notes each chat.created.v1 in its unit of work (what committed is recorded), and
    on the one titled "stuck" runs into a statement timeout (SQLSTATE 57014, classed as
    transient) every time."""

    system: System
    bus: Bus
    pool: asyncpg.Pool
    watch: DeadLetterWatch
    handled: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: "asyncio.Task[None] | None" = None

    async def on_created(self, events: list[ChatCreated], uow: UnitOfWork[Conn]) -> None:
        for event in events:
            if event.title == "stuck":
                await uow.store.execute("SET LOCAL statement_timeout = '10ms'")
                await uow.store.execute("SELECT pg_sleep(1)")
            # Published after commit to a key nothing is bound to: only the record counts.
            uow.outbox.publish("test-recorded", (event.title or "").encode(), {})

    def record(self, titles: list[str]) -> None:
        self.handled.extend(titles)
        self.changed.set()

    def start(self) -> None:
        handlers: dict[type[Event], Any] = {ChatCreated: self.on_created}
        consumer = EventConsumer(
            service="delivery", units=RecordingUnits(self), handlers=handlers, prefetch=100, batch_size=50
        )
        self.task = asyncio.create_task(consumer.run())

    async def publish(self, *titles: str) -> list[Envelope]:
        # One chat id for all: one partition, so published together they arrive as one batch.
        chat_id = uuid.uuid4()
        envelopes = [
            Envelope.wrap(
                ChatCreated(
                    chat_id=chat_id,
                    chat_type="group",
                    title=title,
                    members=["a", "b"],
                    created_by="a",
                    created_at=datetime.now(UTC),
                ),
                "test",
            )
            for title in titles
        ]
        for envelope in envelopes:
            await self.bus.publish_event(envelope)
        return envelopes

    async def wait_handled(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.handled) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def lone_consumer(infra_urls: tuple[str, str]) -> AsyncIterator[LoneConsumer]:
    amqp_url, database_url = infra_urls
    system = System(amqp_url, database_url)  # unstarted: its namespace, database and clean-up only
    topology = Topology(system.namespace)
    migrate = await asyncio.create_subprocess_exec(
        str(BIN / "switchboard-delivery"), "migrate", env=system.env(), stdout=asyncio.subprocess.DEVNULL
    )
    assert await migrate.wait() == 0
    bus = Bus(amqp_url, topology, source="test")
    await bus.connect()
    pool = await create_pool(system.database_url, schema="delivery")
    watch = await DeadLetterWatch.start(amqp_url, topology, ("delivery",))
    lone = LoneConsumer(system, bus, pool, watch)
    try:
        yield lone
    finally:
        if lone.task is not None:
            lone.task.cancel()
            await asyncio.gather(lone.task, return_exceptions=True)
        await watch.close()
        await bus.close()
        await pool.close()
        await system.stop()


async def test_an_event_that_always_fails_transiently_is_dead_lettered_not_retried_forever(
    lone_consumer: LoneConsumer,
) -> None:
    # Published before the consumer starts, so they come as one batch with the bad one inside.
    envelopes = await lone_consumer.publish("ok0", "ok1", "stuck", "ok3", "ok4", "ok5")
    lone_consumer.start()
    # The healthy ones commit after the bounded in-place retries, not never.
    await lone_consumer.wait_handled(5, timeout=BATCH_RETRY_SECONDS + 30)
    assert sorted(lone_consumer.handled) == ["ok0", "ok1", "ok3", "ok4", "ok5"]
    headers = await lone_consumer.watch.wait("delivery", str(envelopes[2].id))
    assert headers["x-death"][0]["reason"] == "rejected"


async def test_while_the_database_is_down_nothing_is_dead_lettered(lone_consumer: LoneConsumer) -> None:
    """The database refuses this consumer's connections (53300, transient) for longer than the
    bounded retries of a batch: its events wait, and are all handled once it is back."""
    system = lone_consumer.system
    database = urlsplit(system.database_url).path.lstrip("/")
    waiting = asyncio.Event()

    def on_log(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        # The consumer's own word that it is past its in-place retries and waiting on the database.
        if event.get("event") == "database unavailable; waiting to commit the batch":
            waiting.set()
        return event

    admin_db = await asyncpg.connect(
        urlunsplit(urlsplit(system.server_database_url)._replace(path="/postgres"))
    )
    try:
        with capture_logs(processors=[on_log]):
            lone_consumer.start()
            await lone_consumer.publish("before")
            await lone_consumer.wait_handled(1, timeout=30)
            # The role is no superuser, so a limit of 0 keeps it out of this database (only).
            await admin_db.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT 0')
            try:
                await admin_db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
                )
                await lone_consumer.publish("during0", "during1", "during2")
                async with asyncio.timeout(BATCH_RETRY_SECONDS + 30):
                    await waiting.wait()
            finally:
                await admin_db.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT -1')
            await lone_consumer.wait_handled(4, timeout=60)
    finally:
        await admin_db.close()
    assert sorted(lone_consumer.handled) == ["before", "during0", "during1", "during2"]
    # Every event of a batch is either committed (and recorded) or dead-lettered: none was.
    assert lone_consumer.watch.seen == []
