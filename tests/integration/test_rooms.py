"""Chat rooms for typing, across gateways; old clients that join rooms still get messages once."""

from .client import unique
from .conftest import Connector


async def test_typing_reaches_only_sessions_that_joined_and_expires(connect: Connector) -> None:
    a, b, c, d, e = (unique(n) for n in "abcde")
    chat = await connect.api(a).create_chat([b, c, d])
    alice, bob, carol = await connect(a, gateway=0), await connect(b, gateway=0), await connect(c, gateway=1)
    dave, eve = await connect(d, gateway=1), await connect(e, gateway=0)
    for client in (alice, bob, carol):
        await client.send("join_chat", {"chat_id": chat})
        assert await client.next("chat_joined") == {"chat_id": chat}
    await eve.send("join_chat", {"chat_id": chat})
    assert (await eve.next("error"))["code"] == "not_a_member"
    await dave.send("typing", {"chat_id": chat, "is_typing": True})
    assert (await dave.next("error"))["code"] == "not_joined"
    await dave.send("join_chat", {"chat_id": "00000000-0000-4000-8000-000000000000"})
    assert (await dave.next("error"))["code"] == "chat_not_found"

    await alice.send("typing", {"chat_id": chat, "is_typing": True})
    typing = {"chat_id": chat, "user_id": a, "is_typing": True}
    assert await bob.next("user_typing") == typing
    assert await carol.next("user_typing") == typing
    # Alice never refreshes: the state ends by itself, on both gateways.
    stopped = {**typing, "is_typing": False}
    assert await bob.next("user_typing") == stopped
    assert await carol.next("user_typing") == stopped

    # Carol types and goes away without saying she stopped: the others hear it at once.
    await carol.send("typing", {"chat_id": chat, "is_typing": True})
    assert (await alice.next("user_typing"))["user_id"] == c
    await carol.close()
    assert await alice.next("user_typing", timeout=3) == {"chat_id": chat, "user_id": c, "is_typing": False}

    # Typing never replaces messages: Dave (no room) and Bob (room) get this once each; by the
    # time they have, Dave and Eve would have had any typing frame sent before it.
    await alice.send_message(chat, "after typing")
    assert (await dave.next("new_message"))["content"] == "after typing"
    await bob.next("new_message")
    assert dave.of("user_typing") == [] and eve.of("user_typing") == []
    assert alice.of("user_typing") == [
        {"chat_id": chat, "user_id": c, "is_typing": True},
        {"chat_id": chat, "user_id": c, "is_typing": False},
    ]


async def test_typing_is_rate_limited_per_session(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice = await connect(a)
    await alice.send("join_chat", {"chat_id": chat})
    await alice.next("chat_joined")
    for i in range(30):
        await alice.send("typing", {"chat_id": chat, "is_typing": i % 2 == 0})
    error = await alice.next("error")
    assert error["code"] == "rate_limited"
    # The connection is unharmed.
    await alice.send("leave_chat", {"chat_id": chat})
    assert await alice.next("chat_left") == {"chat_id": chat}


async def test_old_client_joining_the_room_gets_each_message_once(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b])
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=1)
    await bob.next("queue_flushed")
    # The Socket.IO guide's clients send the bare chat id.
    await bob.send("join_chat", chat)
    assert await bob.next("chat_joined") == {"chat_id": chat}
    await alice.send("join_chat", chat)
    await alice.next("chat_joined")
    for i in range(5):
        await alice.send_message(chat, f"m{i}")
    await bob.wait_messages(5, chat)
    # A sixth message proves nothing more of the first five was on its way.
    await alice.send_message(chat, "last")
    await bob.wait(lambda _: any(m["content"] == "last" for m in bob.messages()))
    assert [m["seq"] for m in bob.messages(chat)] == [1, 2, 3, 4, 5, 6]


async def test_leaving_the_room_ends_typing_at_once(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice, bob = await connect(a, gateway=0), await connect(b, gateway=1)
    for client in (alice, bob):
        await client.send("join_chat", chat)
        await client.next("chat_joined")
    await alice.send("typing", {"chat_id": chat, "is_typing": True})
    assert (await bob.next("user_typing"))["is_typing"] is True
    await alice.send("leave_chat", chat)
    assert await alice.next("chat_left") == {"chat_id": chat}
    # Well before the 6 s expiry.
    assert await bob.next("user_typing", timeout=3) == {"chat_id": chat, "user_id": a, "is_typing": False}
