"""Acknowledgements of a consumer whose deliveries the runtime acknowledges: one per burst, never
a delivery tag twice, and only once the callback has returned."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractRobustChannel

from switchboard_runtime.acks import Acknowledger, consume_acked
from switchboard_runtime.delivery import Delivery as RouteDelivery


@dataclass
class Delivery:
    delivery_tag: int
    channel: object
    acks: list[tuple[int, bool]] = field(default_factory=list)

    async def ack(self, multiple: bool = False) -> None:
        self.acks.append((self.delivery_tag, multiple))


def delivered(tags: list[int], channel: object, acks: list[tuple[int, bool]]) -> list[Any]:
    return [Delivery(tag, channel, acks) for tag in tags]


async def settle(acker: Acknowledger, deliveries: list[Any]) -> None:
    for delivery in deliveries:
        acker.handled(cast(RouteDelivery, delivery))
    if acker._task is not None:
        await acker._task


async def test_a_burst_is_acknowledged_once_with_its_highest_tag() -> None:
    acks: list[tuple[int, bool]] = []
    await settle(Acknowledger(), delivered([1, 2, 3], "channel", acks))
    assert acks == [(3, True)]


async def test_a_delivery_finishing_after_a_later_one_is_not_acknowledged_again() -> None:
    acks: list[tuple[int, bool]] = []
    acker = Acknowledger()
    await settle(acker, delivered([1, 3], "channel", acks))
    await settle(acker, delivered([2], "channel", acks))  # 2 was still busy when 3 was acked
    await settle(acker, delivered([4], "channel", acks))
    assert acks == [(3, True), (4, True)]


async def test_a_new_channel_starts_counting_again() -> None:
    acks: list[tuple[int, bool]] = []
    acker = Acknowledger()
    await settle(acker, delivered([7, 8], "old", acks))
    await settle(acker, delivered([1, 2], "new", acks))
    assert acks == [(8, True), (2, True)]


@dataclass
class Message:
    """What `Delivery` reads of aiormq's delivered message."""

    delivery_tag: int
    channel: "Channel"


@dataclass
class Channel:
    """A robust channel and its underlying channel in one: it records the consumer and the acks."""

    reopen_callbacks: set[Callable[..., Any]] = field(default_factory=set)
    deliver: Callable[[Message], Any] | None = None
    acks: list[tuple[int, bool]] = field(default_factory=list)
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    async def get_underlay_channel(self) -> "Channel":
        return self

    async def basic_consume(self, queue: str, callback: Callable[[Message], Any]) -> None:
        self.deliver = callback

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.acks.append((delivery_tag, multiple))
        self.acked.set()

    async def delivered(self, tag: int) -> None:
        assert self.deliver is not None
        await self.deliver(Message(tag, self))


async def acked(channel: Channel) -> None:
    async with asyncio.timeout(5):
        await channel.acked.wait()


async def test_a_delivery_is_acknowledged_once_its_callback_has_returned() -> None:
    channel = Channel()
    entered, release = asyncio.Event(), asyncio.Event()

    async def callback(message: RouteDelivery) -> None:
        entered.set()
        await release.wait()

    await consume_acked(cast(AbstractRobustChannel, channel), "queue", callback)
    handling = asyncio.create_task(channel.delivered(1))
    async with asyncio.timeout(5):
        await entered.wait()
    assert channel.acks == []
    release.set()
    await handling
    await acked(channel)
    assert channel.acks == [(1, True)]


async def test_a_delivery_whose_callback_raised_is_not_acknowledged() -> None:
    channel = Channel()
    entered, release = asyncio.Event(), asyncio.Event()

    async def callback(message: RouteDelivery) -> None:
        if message.delivery_tag == 1:
            raise RuntimeError("handling failed")
        entered.set()
        await release.wait()

    await consume_acked(cast(AbstractRobustChannel, channel), "queue", callback)
    with pytest.raises(RuntimeError):
        await channel.delivered(1)
    # The next delivery's callback is under way: an acknowledgement of the first, had one been
    # started, would have gone out by the time it got there.
    handling = asyncio.create_task(channel.delivered(2))
    async with asyncio.timeout(5):
        await entered.wait()
    assert channel.acks == []
    # A later delivery's acknowledgement (multiple) still covers it: the consumer goes on.
    release.set()
    await handling
    await acked(channel)
    assert channel.acks == [(2, True)]
