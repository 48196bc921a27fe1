"""Personal-route delivery: the issue's done-when points 1 to 6, over the real protocol."""

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .client import unique
from .conftest import Connector


async def test_online_recipient_gets_message_without_opening_chat(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice, bob = await connect(a), await connect(b)
    await bob.next("queue_flushed")

    temp_id = await alice.send_message(chat, "hello")

    received = await bob.next("new_message")
    sent = await alice.next("message_sent")
    info = await alice.next("message_delivery_info")
    assert sent["tempId"] == temp_id
    assert received == sent["message"]
    assert received["content"] == "hello" and received["seq"] == 1 and received["sender_id"] == a
    assert info == {"message_id": received["id"], "delivered": 1, "queued": 0, "total": 1}
    await bob.send_message(chat, "reply")
    await alice.wait(lambda _: bool(alice.messages()))
    # The sending session never got its own message: the first new_message it saw is Bob's.
    assert [m["content"] for m in alice.messages()] == ["reply"]


async def test_member_of_fifty_chats_receives_from_all(connect: Connector) -> None:
    b = unique("b")
    senders = [unique(f"s{i}") for i in range(50)]
    chats = await asyncio.gather(*(connect.api(s).create_chat([b], kind="direct") for s in senders))
    bob = await connect(b)
    await bob.next("queue_flushed")
    clients = await asyncio.gather(*(connect(s, gateway=i % 2) for i, s in enumerate(senders)))

    for client, chat in zip(clients, chats, strict=True):
        await client.send_message(chat, f"hi from {chat}")

    messages = await bob.wait_messages(50)
    assert {m["chat_id"] for m in messages} == set(chats)


async def test_offline_recipient_gets_queue_in_order_then_nothing_after_ack(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice = await connect(a)

    for i in range(100):
        await alice.send_message(chat, f"m{i}")
    await alice.wait(lambda _: len(alice.of("message_delivery_info")) == 100)
    assert all(info["queued"] == 1 and info["delivered"] == 0 for info in alice.of("message_delivery_info"))

    bob = await connect(b)
    flushed = await bob.next("queue_flushed")
    got = bob.messages(chat)
    assert flushed == {"count": 100}
    assert [m["seq"] for m in got] == list(range(1, 101))
    assert [m["content"] for m in got] == [f"m{i}" for i in range(100)]
    assert len({m["id"] for m in got}) == 100

    await bob.send("message_received", {"message_ids": [m["id"] for m in got]})
    await bob.close()
    again = await connect(b)
    assert await again.next("queue_flushed") == {"count": 0}
    assert again.messages() == []


async def test_many_users_reconnecting_at_once_each_get_their_own_backlog(connect: Connector) -> None:
    # Their first pages are made in the same batches and travel together to the gateway that
    # holds them (flush-pages); each session takes its own, in order, and nobody else's.
    a = unique("a")
    users = [unique("r") for _ in range(40)]
    chats = await asyncio.gather(*(connect.api(a).create_chat([u], kind="direct") for u in users))
    alice = await connect(a)
    for n, chat in enumerate(chats):
        for i in range(n % 3 + 1):
            await alice.send_message(chat, f"{n}.{i}")
    await alice.wait(lambda _: len(alice.of("message_delivery_info")) == sum(n % 3 + 1 for n in range(40)))

    clients = await asyncio.gather(*(connect(u) for u in users))
    flushed = await asyncio.gather(*(client.next("queue_flushed") for client in clients))
    for n, (client, chat, done) in enumerate(zip(clients, chats, flushed, strict=True)):
        assert done == {"count": n % 3 + 1}
        assert [m["content"] for m in client.messages()] == [f"{n}.{i}" for i in range(n % 3 + 1)]
        assert {m["chat_id"] for m in client.messages()} == {chat}


async def test_users_on_different_gateways_exchange_messages(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=1)
    await bob.next("queue_flushed")
    await alice.next("queue_flushed")

    await alice.send_message(chat, "from gateway 0")
    assert (await bob.next("new_message"))["content"] == "from gateway 0"
    await bob.send_message(chat, "from gateway 1")
    assert (await alice.next("new_message"))["content"] == "from gateway 1"


async def test_a_group_too_large_to_name_its_members_reaches_each_on_either_gateway(
    connect: Connector,
) -> None:
    """Past BROADCAST_ABOVE_KEYS (100) a message goes to every gateway instead of naming its
    members: each gateway hands it to the members it holds, once, and the offline ones get it in
    their catch-up."""
    creator = unique("big")
    members = [unique(f"m{i}") for i in range(150)]
    chat = await connect.api(creator).create_chat(members)
    online = members[:20]
    clients = await asyncio.gather(*(connect(m, gateway=i % 2) for i, m in enumerate(online)))
    sender = await connect(creator, gateway=0)
    for client in (*clients, sender):
        await client.next("queue_flushed")

    await sender.send_message(chat, "to everyone")
    await sender.send_message(chat, "and again")

    for client in clients:
        got = await client.wait_messages(2, chat)
        assert [m["content"] for m in got] == ["to everyone", "and again"]
    late = await connect(members[-1], gateway=1)
    await late.next("queue_flushed")
    assert [m["content"] for m in late.messages(chat)] == ["to everyone", "and again"]
    await sender.send_message(chat, "marker")
    for client in clients:
        await client.wait_messages(3, chat)
        assert len(client.messages(chat)) == 3  # nothing twice


async def test_every_session_of_a_user_gets_every_message(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    phone, laptop = await connect(b, gateway=0), await connect(b, gateway=1)
    alice, alice_tablet = await connect(a, gateway=0), await connect(a, gateway=1)
    for client in (phone, laptop, alice, alice_tablet):
        await client.next("queue_flushed")

    for i in range(20):
        await alice.send_message(chat, f"m{i}")

    expected = [f"m{i}" for i in range(20)]
    for device in (phone, laptop, alice_tablet):
        got = await device.wait_messages(20)
        assert [m["content"] for m in got] == expected
    assert (await alice.next("message_delivery_info"))["delivered"] == 1
    await phone.send_message(chat, "marker")
    await alice.wait(lambda _: bool(alice.messages()))
    assert [m["content"] for m in alice.messages()] == ["marker"]


async def test_same_temp_id_stores_once_and_delivers_once(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    api = connect.api(a)
    chat = await api.create_chat([b], kind="direct")
    alice, bob = await connect(a), await connect(b)
    await bob.next("queue_flushed")

    # Back to back: the second usually lands in the same batch as the first.
    await alice.send_message(chat, "once", temp_id="same")
    await alice.send_message(chat, "once", temp_id="same")
    first = await alice.next("message_sent")
    second = await alice.next("message_sent")
    await alice.send_message(chat, "marker")
    await bob.wait(lambda _: any(m["content"] == "marker" for m in bob.messages()))

    assert first == second
    assert [m["content"] for m in bob.messages()] == ["once", "marker"]
    history = (await api.history(chat)).json()["messages"]
    assert [m["content"] for m in history] == ["once", "marker"]


async def test_health_and_metrics_endpoints(connect: Connector) -> None:
    user = unique("metrics")
    await connect(user)
    system = connect.system
    async with httpx.AsyncClient() as http:
        for process in system.processes.values():
            assert (await http.get(f"{process.url}/healthz")).json() == {"status": "ok"}
            assert (await http.get(f"{process.url}/readyz")).json() == {"status": "ready"}
        text = (await http.get(f"{system.gateway_url(0)}/metrics")).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["switchboard_gateway_sessions"].samples[0].value >= 1


async def test_a_reply_names_a_message_of_the_same_chat(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    other = await connect.api(a).create_chat([unique("c")], kind="direct")
    alice, bob = await connect(a), await connect(b)
    await bob.next("queue_flushed")
    await alice.send_message(chat, "question")
    question = (await alice.next("message_sent"))["message"]

    await bob.send_message(chat, "answer", reply_to=question["id"])
    answer = (await bob.next("message_sent"))["message"]
    assert answer["reply_to"] == question["id"] and answer["seq"] == 2
    await alice.send_message(other, "wrong chat", reply_to=question["id"])
    assert (await alice.next("message_error"))["code"] == "bad_request"
