"""Multi-device catch-up: a device that was away replays exactly what it missed, per chat in
seq order, while new messages keep arriving; past the compaction limit it is told so."""

import asyncio
from collections import Counter
from typing import Any

from .client import Client, unique
from .conftest import Connector


async def send_all(sender: Client, plan: list[tuple[str, str]]) -> None:
    for chat, content in plan:
        await sender.send_message(chat, content)


def delivered(sender: Client) -> set[str]:
    """The sender's messages a recipient acknowledged, as its `message_status` frames say."""
    return {s["message_id"] for s in sender.of("message_status") if s["status"] == "delivered"}


def seqs(client: Client, chat: str) -> list[int]:
    return [m["seq"] for m in client.messages(chat)]


async def test_device_syncs_every_missed_message_in_order_while_live_ones_arrive(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    api = connect.api(a)
    chats = [await api.create_chat([b]) for _ in range(3)]
    alice = await connect(a, gateway=0)
    phone = await connect(b, gateway=1)
    await send_all(alice, [(chat, f"seen {i}") for chat in chats for i in range(5)])
    unread = [m["id"] for m in await phone.wait_messages(15) if m["chat_id"] != chats[0]]
    await phone.send("mark_read", {"chat_id": chats[0], "seq": 5})
    await phone.next("read_marked")
    # All 15 read or received, so the connect-time catch-up can only hold what the sync replays.
    await phone.send("message_received", {"message_ids": unread})
    await alice.wait(
        lambda _: (
            set(unread) <= delivered(alice) and any(s["status"] == "read" for s in alice.of("message_status"))
        )
    )
    await phone.close()  # the phone goes away knowing seq 5 of each chat

    await send_all(alice, [(chats[i % 3], f"missed {i}") for i in range(200)])
    await alice.wait(lambda _: len(alice.of("message_sent")) == 215)

    phone = await connect(b, gateway=1)
    live = asyncio.create_task(send_all(alice, [(chats[i % 3], f"live {i}") for i in range(30)]))
    await phone.send("sync", {"chats": {chat: 5 for chat in chats}})
    done = await phone.next("sync_done")
    await live
    await alice.wait(lambda _: len(alice.of("message_sent")) == 245)
    last = Counter(sent["message"]["chat_id"] for sent in alice.of("message_sent"))

    for chat in chats:
        await phone.wait(lambda _, chat=chat: bool(seqs(phone, chat)) and seqs(phone, chat)[-1] == last[chat])
        assert seqs(phone, chat) == list(range(6, last[chat] + 1))  # each once, in order, no gap
        outcome = done["chats"][chat]
        assert outcome["result"] == "replayed" and outcome["from_seq"] == 6
        assert 5 + 200 // 3 <= outcome["to_seq"] <= last[chat]
    assert done["chats"][chats[0]]["unread"] == done["chats"][chats[0]]["to_seq"] - 5
    assert set(done["chats"]) == set(chats)


async def test_sync_past_the_compaction_limit_says_compacted(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b])
    quiet = await connect.api(a).create_chat([b])
    alice = await connect(a)
    phone = await connect(b)
    await send_all(alice, [(chat, f"m{i}") for i in range(120)])
    # The phone acknowledges everything, so nothing is queued for the tablet: what the tablet
    # gets is the sync's replay alone, not a connect-time catch-up racing it.
    ids = [m["id"] for m in await phone.wait_messages(120, chat)]
    await phone.send("message_received", {"message_ids": ids})
    await alice.wait(lambda _: delivered(alice) == set(ids))
    await phone.close()
    tablet = await connect(b, gateway=1)
    assert await tablet.next("queue_flushed") == {"count": 0}
    await tablet.send("mark_read", {"chat_id": chat, "seq": 30})
    await tablet.next("read_marked")

    # The system's compaction limit is 100 (tests/integration/system.py): 110 missed is past it.
    await tablet.send("sync", {"chats": {chat: 10, quiet: 0}})
    done: dict[str, Any] = (await tablet.next("sync_done"))["chats"]
    assert done[chat] == {"result": "compacted", "from_seq": 21, "to_seq": 120, "unread": 90}
    assert done[quiet] == {"result": "replayed", "from_seq": None, "to_seq": None, "unread": 0}
    assert seqs(tablet, chat) == list(range(21, 121))

    # A device may ask for less (a metered link) on another connection.
    phone = await connect(b)
    assert await phone.next("queue_flushed") == {"count": 0}
    await phone.send("sync", {"chats": {chat: 10, quiet: 0}, "limit": 50})
    done = (await phone.next("sync_done"))["chats"]
    assert done[chat] == {"result": "compacted", "from_seq": 71, "to_seq": 120, "unread": 90}
    assert seqs(phone, chat) == list(range(71, 121))
    # History has the rest, for the client to page backwards from from_seq.
    older = (await connect.api(b).history(chat, before_seq=71, limit=200)).json()["messages"]
    assert [m["seq"] for m in older] == list(range(1, 71))


async def test_sync_refuses_bad_input_and_a_second_sync_at_once(connect: Connector) -> None:
    b = unique("b")
    device = await connect(b)
    await device.send("sync", {"chats": {"not-a-uuid": 1}})
    assert (await device.next("error"))["code"] == "bad_request"
    await device.send("sync", {"chats": {}, "since": "yesterday"})
    assert (await device.next("error"))["code"] == "bad_request"
    await device.send("sync", {"chats": {"00000000-0000-4000-8000-000000000000": 10**20}})
    assert (await device.next("error"))["code"] == "bad_request"
    await device.send("sync", {})
    assert await device.next("sync_done") == {"chats": {}}


async def test_sync_covers_a_left_chat_up_to_the_removal_and_never_a_stranger_chat(
    connect: Connector,
) -> None:
    a, b = unique("a"), unique("b")
    api = connect.api(a)
    left, stranger = await api.create_chat([b]), await connect.api(unique("s")).create_chat([unique("t")])
    alice = await connect(a)
    for i in range(3):
        await alice.send_message(left, f"m{i}")
    await alice.wait(lambda _: len(alice.of("message_sent")) == 3)
    await api.remove_member(left, b)
    await alice.send_message(left, "after the removal")
    await alice.next("message_sent")

    device = await connect(b)
    await device.send("sync", {"chats": {left: 1, stranger: 0}})
    done = (await device.next("sync_done"))["chats"]
    # unread counts from the read marker (never moved), not from what the device had.
    assert done == {left: {"result": "replayed", "from_seq": 2, "to_seq": 3, "unread": 3}}
    assert seqs(device, left) == [2, 3]
