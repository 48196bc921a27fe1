"""Group commit: one publish in flight per routing key, what gathers meanwhile goes next."""

import asyncio
from datetime import UTC, datetime
from typing import cast

import aiormq.exceptions
import pytest

from switchboard_contracts.events import GatewayHeartbeat, SessionClosed, SessionOpened
from switchboard_contracts.topology import Topology
from switchboard_runtime.amqp import Bus
from switchboard_runtime.batcher import MAX_BATCH_EVENTS, EventBatcher


class Broker:
    """Stands in for the bus's publish: records each batch, confirms when the test says so."""

    def __init__(self) -> None:
        self.topology = Topology("test", 4)
        self.batches: list[tuple[str, list[bytes]]] = []
        self.confirm = asyncio.Event()
        self.fail: Exception | None = None
        self._published = asyncio.Event()

    async def publish_batch(self, routing_key: str, events: list[bytes]) -> None:
        self.batches.append((routing_key, list(events)))
        self._published.set()
        await self.confirm.wait()
        if self.fail is not None:
            raise self.fail

    async def published(self, count: int) -> None:
        """Until `count` batches have been handed to the broker."""
        async with asyncio.timeout(5):
            while len(self.batches) < count:
                self._published.clear()
                await self._published.wait()


def batcher(broker: Broker) -> EventBatcher:
    return EventBatcher(cast(Bus, broker), source="test")


async def test_a_lone_event_leaves_at_once_in_a_batch_of_one() -> None:
    broker = Broker()
    broker.confirm.set()
    await batcher(broker).add("k", b"1")
    assert broker.batches == [("k", [b"1"])]


async def test_events_of_one_turn_go_together_and_those_during_a_publish_go_next() -> None:
    broker = Broker()
    events = batcher(broker)
    first = [events.add("k", b"1"), events.add("k", b"2")]
    # The turn ends (a yield to the loop, not a wait for time): the first batch leaves and waits
    # for its confirm, which the test holds back.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert broker.batches == [("k", [b"1", b"2"])]
    later = [events.add("k", b"3"), events.add("k", b"4"), events.add("other", b"x")]
    broker.confirm.set()
    await asyncio.gather(*first, *later)
    by_key: dict[str, list[list[bytes]]] = {}
    for key, batch in broker.batches:
        by_key.setdefault(key, []).append(batch)
    assert by_key == {"k": [[b"1", b"2"], [b"3", b"4"]], "other": [[b"x"]]}


async def test_a_batch_holds_at_most_the_limit() -> None:
    broker = Broker()
    broker.confirm.set()
    events = batcher(broker)
    await asyncio.gather(*(events.add("k", b"e") for _ in range(MAX_BATCH_EVENTS + 1)))
    assert [len(batch) for _, batch in broker.batches] == [MAX_BATCH_EVENTS, 1]


async def test_a_failed_publish_fails_every_event_of_its_batch() -> None:
    broker = Broker()
    broker.fail = ConnectionError("broker away")
    broker.confirm.set()
    events = batcher(broker)
    futures = [events.add("k", b"1"), events.add("k", b"2")]
    for future in futures:
        with pytest.raises(ConnectionError):
            await future


async def test_emit_logged_reports_a_failure_to_its_callback() -> None:
    broker = Broker()
    broker.fail = ConnectionError("broker away")
    broker.confirm.set()
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    batcher(broker).emit_logged(GatewayHeartbeat(gateway_id="g", sessions=1), on_error=failed.set_result)
    assert isinstance(await asyncio.wait_for(failed, 5), ConnectionError)


def session_batches(broker: Broker) -> list[str]:
    """The event type of each batch published, heartbeats left out."""
    types = [key.rsplit(".", 1)[0] for key, _ in broker.batches]
    return [t for t in types if t != GatewayHeartbeat.TYPE]


async def test_types_that_keep_their_order_share_one_publish_in_flight_per_partition() -> None:
    broker = Broker()
    in_order = [{SessionOpened.TYPE, SessionClosed.TYPE}]
    events = EventBatcher(cast(Bus, broker), source="test", in_order=in_order)
    opened = SessionOpened(session_id="s1", user_id="ann", gateway_id="g")
    closed = SessionClosed(session_id="s1", user_id="ann", gateway_id="g", closed_at=datetime.now(UTC))
    first = events.emit(opened)
    await broker.published(1)
    # The opening is in flight; the closing, another routing key, waits behind it instead of
    # leaving on a stream of its own, and a second opening behind that. A heartbeat emitted
    # after them, on a stream of its own, leaves at once: by the time it is published, a
    # closing on a stream of its own would have been too.
    later = [events.emit(closed), events.emit(opened)]
    heartbeat = events.emit(GatewayHeartbeat(gateway_id="g", sessions=1))
    await broker.published(2)
    assert session_batches(broker) == [SessionOpened.TYPE]
    broker.confirm.set()
    await asyncio.gather(first, *later, heartbeat)
    assert session_batches(broker) == [
        SessionOpened.TYPE,
        SessionClosed.TYPE,
        SessionOpened.TYPE,
    ]


class AwayBroker(Broker):
    """Out of reach for its first `away` publishes (the connection being made again), then back."""

    def __init__(self, away: int, error: Exception) -> None:
        super().__init__()
        self.confirm.set()
        self.away = away
        self.error = error

    async def publish_batch(self, routing_key: str, events: list[bytes]) -> None:
        self.batches.append((routing_key, list(events)))
        self._published.set()
        if len(self.batches) <= self.away:
            raise self.error


async def test_a_batch_waits_for_the_broker_to_come_back_and_what_follows_keeps_its_order() -> None:
    broker = AwayBroker(away=3, error=ConnectionError("connection lost"))
    events = EventBatcher(cast(Bus, broker), source="test", hold_seconds=30)
    first = events.add("k", b"1")
    await broker.published(1)
    second = events.add("k", b"2")
    await asyncio.gather(first, second)
    # Three tries of the first batch, the fourth taken, then the one that waited behind it.
    assert broker.batches == [("k", [b"1"])] * 4 + [("k", [b"2"])]


async def test_past_the_hold_the_broker_error_is_raised() -> None:
    broker = AwayBroker(away=1_000_000, error=ConnectionError("connection lost"))
    events = EventBatcher(cast(Bus, broker), source="test", hold_seconds=0.2)
    with pytest.raises(ConnectionError):
        await events.add("k", b"1")
    assert len(broker.batches) > 1


async def test_an_error_that_is_not_the_broker_being_away_is_not_waited_for() -> None:
    broker = AwayBroker(away=1, error=aiormq.exceptions.ChannelNotFoundEntity("no exchange"))
    events = EventBatcher(cast(Bus, broker), source="test", hold_seconds=30)
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await events.add("k", b"1")
    assert len(broker.batches) == 1
