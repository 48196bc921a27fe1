"""Live membership: a removed member stops getting the chat at once and reads its history only
up to the removal; a new member gets and reads only what came after joining."""

from .client import unique
from .conftest import Connector


async def test_removed_member_stops_and_new_member_starts_at_the_change(connect: Connector) -> None:
    a, b, c, d = (unique(n) for n in "abcd")
    api = connect.api(a)
    chat = await api.create_chat([b, c])
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=0)
    carol, dave = await connect(c, gateway=1), await connect(d, gateway=1)
    for client in (carol, bob, alice):
        await client.send("join_chat", {"chat_id": chat})
        await client.next("chat_joined")
    for i in range(2):
        await alice.send_message(chat, f"before {i}")
    await carol.wait_messages(2, chat)

    await api.remove_member(chat, c)
    left = {"chat_id": chat, "user_id": c, "by": a}
    assert await carol.next("member_left") == left
    assert await bob.next("member_left") == left
    # Out of the typing room at once, too.
    assert await carol.next("chat_left") == {"chat_id": chat, "reason": "removed"}
    await api.add_member(chat, d)
    assert await dave.next("member_joined") == {"chat_id": chat, "user_id": d, "by": a}

    # Typing stops reaching Carol at once: Bob, in the room on the other gateway, gets it, and
    # by then Carol would have too.
    await alice.send("typing", {"chat_id": chat, "is_typing": True})
    assert (await bob.next("user_typing"))["user_id"] == a
    await alice.send_message(chat, "after")
    assert (await dave.next("new_message"))["content"] == "after"
    await bob.wait_messages(3, chat)
    assert [m["content"] for m in carol.messages(chat)] == ["before 0", "before 1"]
    assert carol.of("user_typing") == []

    carol_history = (await connect.api(c).history(chat)).json()["messages"]
    assert [m["seq"] for m in carol_history] == [1, 2]
    dave_history = (await connect.api(d).history(chat)).json()["messages"]
    assert [m["seq"] for m in dave_history] == [3]
    await carol.send_message(chat, "still here?")
    assert (await carol.next("message_error"))["code"] == "not_a_member"
    await carol.send("typing", {"chat_id": chat, "is_typing": True})
    assert (await carol.next("error"))["code"] == "not_joined"
    stranger = await connect.api(unique("e")).history(chat)
    assert stranger.status_code == 403 and stranger.json()["code"] == "not_a_member"


async def test_a_member_can_be_removed_again_after_being_added_back(connect: Connector) -> None:
    a, c = unique("a"), unique("c")
    api = connect.api(a)
    chat = await api.create_chat([c])
    await api.remove_member(chat, c)
    await api.add_member(chat, c)
    await api.remove_member(chat, c)  # no message between: the same period, kept once
    await api.add_member(chat, c)
    alice = await connect(a)
    await alice.send_message(chat, "back")
    await alice.next("message_sent")
    history = (await connect.api(c).history(chat)).json()["messages"]
    assert [m["content"] for m in history] == ["back"]
    missing = await api.http.delete(f"/chats/{chat}/members/{unique('x')}")
    assert missing.status_code == 403 and missing.json()["code"] == "not_a_member"
