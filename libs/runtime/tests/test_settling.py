"""A consumer that says what became of each delivery: the runtime settles it accordingly, one
delivery at a time, in queue order."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractQueue

from switchboard_runtime.settling import InOrderQueue, Outcome, Received

# What happened, in order: ("handle", body) for the callback, (verb, body, requeue) for the broker.
Log = list[tuple[object, ...]]


@dataclass
class Message:
    body: bytes
    log: Log
    closed: bool = False
    content_type: str | None = None
    routing_key: str | None = "key"

    def _settle(self, verb: str, requeue: bool) -> None:
        if self.closed:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")
        self.log.append((verb, self.body, requeue))

    async def ack(self) -> None:
        self._settle("ack", False)

    async def reject(self, requeue: bool = False) -> None:
        self._settle("reject", requeue)

    async def nack(self, requeue: bool = True) -> None:
        self._settle("nack", requeue)


@dataclass
class Queue:
    messages: list[Message]

    @contextlib.asynccontextmanager
    async def iterator(self) -> AsyncIterator[AsyncIterator[Message]]:
        async def each() -> AsyncIterator[Message]:
            for message in self.messages:
                yield message

        yield each()


async def consume(messages: list[Message], outcomes: dict[bytes, Outcome], log: Log) -> None:
    async def callback(message: Received) -> Outcome:
        log.append(("handle", message.body))
        return outcomes[message.body]

    await InOrderQueue(cast(AbstractQueue, Queue(messages))).consume(callback)


async def test_each_outcome_settles_its_delivery_before_the_next_is_handled() -> None:
    log: Log = []
    messages = [Message(body, log) for body in (b"a", b"b", b"c")]
    await consume(messages, {b"a": Outcome.HANDLED, b"b": Outcome.DEAD_LETTER, b"c": Outcome.REQUEUE}, log)
    assert log == [
        ("handle", b"a"),
        ("ack", b"a", False),
        ("handle", b"b"),
        ("reject", b"b", False),
        ("handle", b"c"),
        ("nack", b"c", True),
    ]


async def test_a_closed_channel_leaves_the_delivery_to_the_broker_and_goes_on() -> None:
    log: Log = []
    messages = [Message(b"a", log, closed=True), Message(b"b", log)]
    await consume(messages, {b"a": Outcome.HANDLED, b"b": Outcome.HANDLED}, log)
    assert log == [("handle", b"a"), ("handle", b"b"), ("ack", b"b", False)]


async def test_a_callback_that_raises_leaves_its_delivery_unsettled() -> None:
    log: Log = []

    async def callback(message: Received) -> Outcome:
        raise RuntimeError("handling failed")

    queue = InOrderQueue(cast(AbstractQueue, Queue([Message(b"a", log)])))
    with pytest.raises(RuntimeError):
        await queue.consume(callback)
    assert log == []
