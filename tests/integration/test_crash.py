"""Done-when point 8: kill -9 of messages, then of delivery, while 500 messages are being sent."""

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from .client import Api, Client, unique
from .system import System, running_system

TOTAL = 500
# The load's shape, not a synchronisation: an open-loop pace of about 200 msg/s, so the kills
# land while messages are in flight.
SEND_INTERVAL = 0.005


@pytest.fixture
async def crashing_system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """A system of its own: this test breaks it on purpose."""
    async with running_system(*infra_urls) as system:
        yield system


def in_order_once(messages: list[dict[str, object]]) -> list[object]:
    """Seqs as a client that drops ids it has already seen would show them."""
    seen: set[object] = set()
    seqs = []
    for message in messages:
        if message["id"] not in seen:
            seen.add(message["id"])
            seqs.append(message["seq"])
    return seqs


async def test_kill9_messages_then_delivery_loses_and_doubles_nothing(crashing_system: System) -> None:
    system = crashing_system
    a, b, c, d = unique("a"), unique("b"), unique("c"), unique("d")
    api = Api(system, a)
    # d is offline throughout and catches up from the queue at the end.
    group = await api.create_chat([b, c, d])
    direct = await api.create_chat([b], kind="direct")
    alice = await Client.connect(system.ws_url(0), a)
    bob = await Client.connect(system.ws_url(0), b)
    carol = await Client.connect(system.ws_url(1), c)
    clients = (alice, bob, carol)
    try:
        for client in clients:
            await client.next("queue_flushed")

        async def send_all() -> None:
            for i in range(TOTAL):
                await alice.send_message(group if i % 2 else direct, f"m{i}", temp_id=f"t{i}")
                await asyncio.sleep(SEND_INTERVAL)

        sender = asyncio.create_task(send_all())
        await alice.wait(lambda _: len(alice.of("message_sent")) >= 100, timeout=60)
        system.kill("messages")
        await system.restart("messages")
        await alice.wait(lambda _: len(alice.of("message_sent")) >= 300, timeout=60)
        system.kill("delivery")
        await system.restart("delivery")
        await sender

        await alice.wait(lambda _: len({s["tempId"] for s in alice.of("message_sent")}) == TOTAL, timeout=120)
        sent = {s["tempId"]: s["message"] for s in alice.of("message_sent")}
        half = TOTAL // 2
        await bob.wait_messages(TOTAL, timeout=120)
        await carol.wait_messages(half, timeout=120)

        assert {m["id"] for m in bob.messages()} == {m["id"] for m in sent.values()}
        assert {m["id"] for m in carol.messages()} == {
            m["id"] for m in sent.values() if m["chat_id"] == group
        }
        dana = await Client.connect(system.ws_url(1), d)
        clients = (*clients, dana)
        flushed = await dana.next("queue_flushed", timeout=120)
        assert flushed == {"count": half}
        assert [m["seq"] for m in dana.messages(group)] == list(range(1, half + 1))
        for client in (bob, carol):
            for chat in (group, direct):
                seqs = in_order_once(client.messages(chat))
                assert seqs == sorted(seqs), f"{client.user_id} saw chat {chat} out of order"
                assert seqs == list(range(1, len(seqs) + 1))
        for chat in (group, direct):
            stored: list[dict[str, object]] = []
            before: int | None = None
            while True:
                params = {"limit": 200, **({"before_seq": before} if before else {})}
                page = (await api.history(chat, **params)).json()
                stored = page["messages"] + stored
                if (before := page["next_before_seq"]) is None:
                    break
            assert [m["seq"] for m in stored] == list(range(1, half + 1))
            assert len({m["content"] for m in stored}) == half, "a message was stored twice"
    finally:
        for client in clients:
            await client.close()
        await api.aclose()


async def test_a_gateway_that_dies_or_stops_loses_no_message(crashing_system: System) -> None:
    """kill -9 of a gateway: nothing sent meanwhile is lost, its users get everything on reconnect,
    and count as queued once presence has declared the gateway dead. SIGTERM of a gateway: its
    clients are told to go away and reconnect elsewhere."""
    system = crashing_system
    a, b = unique("a"), unique("b")
    api = Api(system, a)
    chat = await api.create_chat([b], kind="direct")
    alice = await Client.connect(system.ws_url(0), a)
    bob = await Client.connect(system.ws_url(1), b)
    clients = [alice, bob]
    try:
        await bob.next("queue_flushed")
        await alice.send_message(chat, "before")
        await bob.next("new_message")

        system.kill("gateway-1")
        await bob.wait_closed()
        # The dead gateway's exclusive queue went with its connection: nothing reaches Bob now,
        # and what is sent stays queued for him, while presence still counts him online.
        for i in range(5):
            await alice.send_message(chat, f"while gone {i}")
        await alice.wait(lambda _: len(alice.of("message_delivery_info")) == 6)

        # Once presence has missed the gateway's heartbeats, Bob is offline: Alice, his contact,
        # hears it, and a send counts him queued. The offline reaches delivery on its own path,
        # so the first send after the frame may still beat it; a few are allowed for that.
        def offline(_: object) -> bool:
            return any(p["user_id"] == b and p["status"] == "offline" for p in alice.of("presence"))

        await alice.wait(offline, timeout=60)
        later = 0
        while later < 3:
            later += 1
            await alice.send_message(chat, f"while gone {4 + later}")
            infos = 6 + later
            await alice.wait(lambda _, infos=infos: len(alice.of("message_delivery_info")) == infos)
            if alice.of("message_delivery_info")[-1]["queued"] == 1:
                break
        assert alice.of("message_delivery_info")[-1]["queued"] == 1

        bob_again = await Client.connect(system.ws_url(0), b)
        clients.append(bob_again)
        # "before" was never acknowledged: it comes again, with everything sent while he was gone.
        assert await bob_again.next("queue_flushed") == {"count": 6 + later}
        assert [m["content"] for m in bob_again.messages()] == ["before"] + [
            f"while gone {i}" for i in range(5 + later)
        ]
        await bob_again.send("message_received", {"message_ids": [m["id"] for m in bob_again.messages()]})

        await system.restart("gateway-1")
        carol_user = unique("c")
        carol = await Client.connect(system.ws_url(1), carol_user)
        clients.append(carol)
        await carol.next("queue_flushed")
        system.processes["gateway-1"].send_signal(signal.SIGTERM)
        # 1001 "going away" or 1012 "service restart": either way the client reconnects elsewhere.
        assert await carol.wait_closed() in {1001, 1012}
    finally:
        for client in clients:
            await client.close()
        await api.aclose()
