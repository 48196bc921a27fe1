"""Live membership frames, and notification events for offline members with their webhook."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aio_pika
import pytest
import uvicorn
from aio_pika.abc import AbstractIncomingMessage
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard_contracts.batches import decode_events
from switchboard_contracts.events import (
    Envelope,
    NotificationCancelled,
    NotificationRequested,
    SessionClosed,
)

from .client import WAIT, unique
from .conftest import Connector
from .system import System, running_system


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


T = TypeVar("T")


class Recorder(Generic[T]):
    """Items as they arrive; `wait_for` awaits a predicate over them instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Condition()

    async def add(self, item: T) -> None:
        async with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[T], bool], count: int = 1) -> list[T]:
        def matching() -> list[T]:
            return [item for item in self.items if predicate(item)]

        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(matching()) >= count)
        return matching()


class Receiver(Recorder[Call]):
    """The webhook's receiver: a real HTTP server (uvicorn) on 127.0.0.1 that answers 204."""

    async def _hook(self, request: Request) -> Response:
        await self.add(Call(request.method, request.url.path, dict(request.headers), await request.body()))
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = Starlette(routes=[Route("/hooks/switchboard", self._hook, methods=["POST"])])
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
        # Listening before uvicorn starts: a POST that comes early waits in the backlog.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/switchboard"
        finally:
            server.should_exit = True
            await serving
            sock.close()

    def keyed(self, event_id: object) -> list[Call]:
        return [call for call in self.items if keyed(event_id)(call)]


@dataclass(frozen=True)
class Published:
    envelope: Envelope
    body: bytes


class Events(Recorder[Published]):
    """The bus as the test sees it: an exclusive queue of its own on `<ns>.events`."""

    @contextlib.asynccontextmanager
    async def observing(self, system: System, *event_types: str) -> AsyncIterator[None]:
        async with await aio_pika.connect(system.amqp_url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            for event_type in event_types:
                # Every partition: the routing key is `<type>.<partition>`.
                await queue.bind(f"{system.namespace}.events", routing_key=f"{event_type}.*")

            async def record(message: AbstractIncomingMessage) -> None:
                # A batch of events in one message: each is what the webhook posts on its own.
                for raw in decode_events(message.body, message.content_type):
                    await self.add(Published(Envelope.model_validate(raw), to_json(raw)))

            await queue.consume(record, no_ack=True)
            yield

    def of(self, event_type: str, chat_id: str) -> list[Envelope]:
        return [
            p.envelope
            for p in self.items
            if p.envelope.type == event_type and p.envelope.data.get("chat_id") == chat_id
        ]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with receiver.serving() as url:
        yield receiver, url


@pytest.fixture(scope="module")
async def webhook_system(
    infra_urls: tuple[str, str], receiver: tuple[Receiver, str]
) -> AsyncIterator[System]:
    async with running_system(*infra_urls, gateways=1, CHAT_WEBHOOK_URL=receiver[1]) as system:
        yield system


@pytest.fixture
async def events(webhook_system: System) -> AsyncIterator[Events]:
    events = Events()
    async with events.observing(webhook_system, "chat.notification.#", SessionClosed.TYPE):
        yield events


@pytest.fixture
async def clients(webhook_system: System) -> AsyncIterator[Connector]:
    connector = Connector(webhook_system)
    yield connector
    await connector.close()


def keyed(event_id: object) -> Callable[[Call], bool]:
    """A webhook call carrying that event."""
    return lambda call: call.headers.get("idempotency-key") == str(event_id)


def is_(event_type: str, **data: Any) -> Callable[[Published], bool]:
    def matches(published: Published) -> bool:
        envelope = published.envelope
        return envelope.type == event_type and all(envelope.data.get(k) == v for k, v in data.items())

    return matches


async def test_offline_member_gets_one_notification_cancelled_once_delivered(
    clients: Connector, events: Events, receiver: tuple[Receiver, str]
) -> None:
    webhook, url = receiver
    a, b, c = unique("a"), unique("b"), unique("c")
    chat = await clients.api(a).create_chat([b, c])
    alice, carol = await clients(a), await clients(c)
    await alice.next("queue_flushed")
    await carol.next("queue_flushed")

    # Bob is offline: the first message is notified, once.
    await alice.send_message(chat, "first")
    first = (await alice.next("message_sent"))["message"]
    [requested] = await events.wait_for(is_(NotificationRequested.TYPE, message_id=first["id"]))
    assert requested.envelope.source == "delivery"
    assert requested.envelope.data == {
        "recipient_id": b,
        "chat_id": chat,
        "message_id": first["id"],
        "seq": 1,
        "sender_id": a,
        # CHAT_NOTIFICATION_PREVIEW_CHARS is 0 by default: no text for push providers.
        "preview": None,
    }
    # ... and posted as it is, keyed by its id.
    [call] = await webhook.wait_for(keyed(requested.envelope.id))
    assert call.method == "POST" and url.endswith(call.path)
    assert call.headers["content-type"] == "application/json"
    assert call.body == requested.body

    # A later notification passed everything before it: the first still went out only once.
    await alice.send_message(chat, "second")
    second = (await alice.next("message_sent"))["message"]
    [requested_second] = await events.wait_for(is_(NotificationRequested.TYPE, message_id=second["id"]))
    await webhook.wait_for(keyed(requested_second.envelope.id))
    notified = [
        (e.data["message_id"], e.data["recipient_id"]) for e in events.of(NotificationRequested.TYPE, chat)
    ]
    # Carol is online and Alice sent them: neither is notified.
    assert notified == [(first["id"], b), (second["id"], b)]
    assert len(webhook.keyed(requested.envelope.id)) == 1

    # Bob connects and acknowledges: each notification is cancelled, once.
    bob = await clients(b)
    assert await bob.next("queue_flushed") == {"count": 2}
    ids = [first["id"], second["id"]]
    await bob.send("message_received", {"message_ids": ids})
    cancelled = await events.wait_for(is_(NotificationCancelled.TYPE, chat_id=chat), count=2)
    assert sorted(e.envelope.data["message_id"] for e in cancelled) == sorted(ids)
    assert all(e.envelope.data["recipient_id"] == b for e in cancelled)
    assert all(e.envelope.data["reason"] == "delivered" for e in cancelled)
    for e in cancelled:
        [call] = await webhook.wait_for(keyed(e.envelope.id))
        assert call.body == e.body

    # The same acknowledgement again cancels nothing more. Bob goes offline, so a third message
    # is notified (once presence's grace period has passed), after the repeat was handled.
    await bob.send("message_received", {"message_ids": ids})
    await bob.close()
    await events.wait_for(is_(SessionClosed.TYPE, session_id=bob.session_id))
    await alice.send_message(chat, "third")
    third = (await alice.next("message_sent"))["message"]
    [requested_third] = await events.wait_for(is_(NotificationRequested.TYPE, message_id=third["id"]))
    await webhook.wait_for(keyed(requested_third.envelope.id))
    assert len(events.of(NotificationCancelled.TYPE, chat)) == 2
    assert len(events.of(NotificationRequested.TYPE, chat)) == 3
    for published in events.items:
        if published.envelope.data.get("chat_id") == chat:
            assert len(webhook.keyed(published.envelope.id)) == 1


async def test_reading_cancels_a_notification_and_a_later_ack_does_not_again(
    clients: Connector, events: Events
) -> None:
    a, b = unique("a"), unique("b")
    chat = await clients.api(a).create_chat([b], kind="direct")
    alice = await clients(a)
    await alice.send_message(chat, "read me")
    message = (await alice.next("message_sent"))["message"]
    await events.wait_for(is_(NotificationRequested.TYPE, message_id=message["id"]))

    bob = await clients(b)
    await bob.next("queue_flushed")
    await bob.send("mark_read", {"chat_id": chat, "seq": message["seq"]})
    [cancelled] = await events.wait_for(is_(NotificationCancelled.TYPE, message_id=message["id"]))
    assert cancelled.envelope.data == {
        "recipient_id": b,
        "chat_id": chat,
        "message_id": message["id"],
        "reason": "read",
    }

    # Acknowledged after it was read: nothing is left to cancel. Proven by what comes after it.
    await bob.send("message_received", {"message_ids": [message["id"]]})
    await bob.close()
    await events.wait_for(is_(SessionClosed.TYPE, session_id=bob.session_id))
    await alice.send_message(chat, "later")
    later = (await alice.next("message_sent"))["message"]
    await events.wait_for(is_(NotificationRequested.TYPE, message_id=later["id"]))
    assert len(events.of(NotificationCancelled.TYPE, chat)) == 1


async def test_members_hear_of_each_other_joining_and_leaving(connect: Connector) -> None:
    a, b, c, d = unique("a"), unique("b"), unique("c"), unique("d")
    api = connect.api(a)
    chat = await api.create_chat([b, c])
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=1)
    carol, dave = await connect(c, gateway=1), await connect(d, gateway=0)
    for client in (alice, bob, carol, dave):
        await client.next("queue_flushed")

    assert (await api.http.delete(f"/chats/{chat}/members/{c}")).status_code == 204
    assert (await api.http.post(f"/chats/{chat}/members", json={"user_id": d})).status_code == 201

    left = {"chat_id": chat, "user_id": c, "by": a}
    joined = {"chat_id": chat, "user_id": d, "by": a}
    assert await carol.next("member_left") == left
    assert await dave.next("member_joined") == joined
    for member in (alice, bob):
        await member.wait(lambda frames: any(f["event"] == "member_joined" for f in frames))
        changes = [f for f in member.frames if f["event"] in ("member_joined", "member_left")]
        assert changes == [{"event": "member_left", "data": left}, {"event": "member_joined", "data": joined}]
    # Dave was no member when Carol left; that frame would have come before his own.
    assert dave.of("member_left") == []
