"""Receipts over the real protocol: delivered on a device's ack, read up to a seq, totals."""

from .client import Client, unique
from .conftest import Connector


def statuses(client: Client, status: str) -> list[dict[str, object]]:
    return [s for s in client.of("message_status") if s["status"] == status]


async def test_delivered_then_read_up_to_seq_and_history(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=1)
    await bob.next("queue_flushed")
    for i in range(10):
        await alice.send_message(chat, f"m{i}")
    got = await bob.wait_messages(10, chat)
    ids = [m["id"] for m in got]

    await bob.send("message_received", {"message_ids": ids})
    await alice.wait(lambda _: len(statuses(alice, "delivered")) == 10)
    delivered = statuses(alice, "delivered")
    assert sorted(str(s["message_id"]) for s in delivered) == sorted(ids)
    assert all(
        s["user_id"] == b
        and s["chat_id"] == chat
        and (s["delivered_count"], s["read_count"], s["total"]) == (1, 0, 1)
        for s in delivered
    )

    await bob.send("mark_read", {"chat_id": chat, "seq": 5})
    assert await bob.next("read_marked") == {"chat_id": chat, "up_to_seq": 5, "unread": 5}
    read = await alice.next("message_status")
    while read["status"] != "read":
        read = await alice.next("message_status")
    assert read == {
        "message_id": ids[4],
        "chat_id": chat,
        "user_id": b,
        "user_ids": [b],
        "status": "read",
        "up_to_seq": 5,
        "delivered_count": 1,
        "read_count": 1,
        "total": 1,
    }

    history = (await connect.api(a).history(chat)).json()["messages"]
    assert [m["receipts"] for m in history] == [[{"user_id": b, "status": "read"}]] * 5 + [
        [{"user_id": b, "status": "delivered"}]
    ] * 5
    assert [(m["delivered_count"], m["read_count"], m["total"]) for m in history] == [(1, 1, 1)] * 5 + [
        (1, 0, 1)
    ] * 5

    # Statuses only move forward: acknowledging read messages again, or marking an earlier seq
    # read, changes nothing. The next real change is the only status that follows.
    await bob.send("message_received", {"message_ids": ids[:5]})
    await bob.send("mark_read", {"chat_id": chat, "seq": 3})
    assert (await bob.next("read_marked"))["up_to_seq"] == 5
    await bob.send("mark_read", {"chat_id": chat, "seq": 7})
    await alice.wait(lambda _: len(statuses(alice, "read")) == 2)
    assert statuses(alice, "read")[1]["up_to_seq"] == 7
    assert len(alice.of("message_status")) == 12

    history = (await connect.api(a).history(chat)).json()["messages"]
    by_seq = {m["seq"]: m for m in history}
    assert [by_seq[s]["receipts"] for s in range(1, 8)] == [[{"user_id": b, "status": "read"}]] * 7
    assert [by_seq[s]["receipts"] for s in range(8, 11)] == [[{"user_id": b, "status": "delivered"}]] * 3
    assert by_seq[1]["read_count"] == 1 and by_seq[10]["read_count"] == 0 and by_seq[10]["total"] == 1
    # Bob sees his own view of the chat: no receipts on messages he did not send.
    bob_view = (await connect.api(b).history(chat)).json()["messages"]
    assert all(m["receipts"] is None for m in bob_view)


async def test_group_statuses_carry_totals_and_one_read_per_sender(connect: Connector) -> None:
    a, b, c = unique("a"), unique("b"), unique("c")
    chat = await connect.api(a).create_chat([b, c])
    alice, bob, carol = await connect(a), await connect(b, gateway=1), await connect(c)
    await bob.next("queue_flushed")
    await carol.next("queue_flushed")
    await alice.send_message(chat, "from alice")
    first = (await bob.next("new_message"))["id"]
    await carol.next("new_message")
    await carol.send_message(chat, "from carol")
    from_carol = (await carol.next("message_sent"))["message"]["id"]
    await bob.next("new_message")

    await bob.send("message_received", {"message_ids": [first]})
    one = await alice.next("message_status")
    assert (one["status"], one["delivered_count"], one["read_count"], one["total"]) == ("delivered", 1, 0, 2)
    await carol.send("message_received", {"message_ids": [first]})
    two = await alice.next("message_status")
    assert (two["user_id"], two["delivered_count"], two["total"]) == (c, 2, 2)

    # One mark_read covering two senders' messages: each sender hears exactly once.
    await bob.send("mark_read", {"chat_id": chat, "seq": 2})
    to_alice, to_carol = await alice.next("message_status"), await carol.next("message_status")
    assert (to_alice["status"], to_alice["up_to_seq"], to_alice["read_count"], to_alice["total"]) == (
        "read",
        2,
        1,
        2,
    )
    assert (to_alice["message_id"], to_carol["message_id"]) == (first, from_carol)
    assert (to_carol["status"], to_carol["up_to_seq"], to_carol["read_count"]) == ("read", 2, 1)


async def test_mark_read_outside_the_chat_is_refused(connect: Connector) -> None:
    a, b, e = unique("a"), unique("b"), unique("e")
    chat = await connect.api(a).create_chat([b], kind="direct")
    eve = await connect(e)
    await eve.send("mark_read", {"chat_id": chat, "seq": 1})
    assert (await eve.next("error"))["code"] == "not_a_member"
    await eve.send("mark_read", {"chat_id": chat, "seq": 0})
    assert (await eve.next("error"))["code"] == "bad_request"
