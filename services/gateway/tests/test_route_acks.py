"""The route consumer's acknowledgements: one per burst, never a delivery tag twice."""

from dataclasses import dataclass, field
from typing import Any, cast

from switchboard_gateway.routes import Acknowledger
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
