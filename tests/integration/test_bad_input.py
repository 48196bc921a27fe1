"""Done-when point 7: every bad input gets its documented error, and nothing else breaks."""

import json
import time
import uuid

import jwt
import pytest

from .client import Client, token, unique
from .conftest import Connector
from .system import JWT_SECRET


async def _chat_with_live_pair(connect: Connector) -> tuple[str, Client, Client]:
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    alice, bob = await connect(a), await connect(b)
    await bob.next("queue_flushed")
    return chat, alice, bob


async def _still_works(chat: str, sender: Client, receiver: Client) -> None:
    await sender.send_message(chat, "still here")
    await receiver.wait(lambda _: any(m["content"] == "still here" for m in receiver.messages()))


async def test_non_member_send_is_refused_and_nothing_is_stored(connect: Connector) -> None:
    chat, alice, bob = await _chat_with_live_pair(connect)
    mallory = await connect(unique("mallory"))

    temp_id = await mallory.send_message(chat, "let me in")
    error = await mallory.next("message_error")
    assert error["tempId"] == temp_id and error["code"] == "not_a_member"

    await mallory.send_message(str(uuid.uuid4()), "nowhere")
    assert (await mallory.next("message_error"))["code"] == "chat_not_found"

    await _still_works(chat, alice, bob)
    history = (await connect.api(alice.user_id or "").history(chat)).json()["messages"]
    assert [m["content"] for m in history] == ["still here"]
    forbidden = await connect.api(mallory.user_id or "").history(chat)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "not_a_member"


def _forged_tokens(user: str) -> dict[str, str]:
    now = int(time.time())
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
    body = jwt.utils.base64url_encode(json.dumps({"sub": user, "exp": now + 600}).encode()).decode()
    return {
        "wrong key": jwt.encode(
            {"sub": user, "exp": now + 600}, "another-secret-that-is-32-bytes-long!!", "HS256"
        ),
        "expired": token(user, expires_in=-60),
        "alg none": f"{header}.{body}.",
        "no exp": jwt.encode({"sub": user}, JWT_SECRET, "HS256"),
        "no sub": jwt.encode({"exp": now + 600}, JWT_SECRET, "HS256"),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("case", list(_forged_tokens("x")))
async def test_bad_tokens_are_refused_in_frame_and_at_handshake(connect: Connector, case: str) -> None:
    bad = _forged_tokens(unique("victim"))[case]

    by_frame = await connect.raw()
    await by_frame.send("user_authenticated", {"token": bad})
    assert (await by_frame.next("error"))["code"] == "invalid_token"
    assert await by_frame.wait_closed() == 4401

    at_handshake = await connect.raw(path=f"?token={bad}")
    assert (await at_handshake.next("error"))["code"] == "invalid_token"
    assert await at_handshake.wait_closed() == 4401


async def test_bare_user_id_authentication_is_refused(connect: Connector) -> None:
    client = await connect.raw()
    await client.send("user_authenticated", unique("someone"))
    assert (await client.next("error"))["code"] == "invalid_token"
    assert await client.wait_closed() == 4401
    assert client.of("authenticated") == []


async def test_events_before_authentication_are_refused_then_auth_works(connect: Connector) -> None:
    user = unique("late")
    client = await connect.raw()
    await client.send("send_message", {"chat_id": str(uuid.uuid4()), "content": "x", "tempId": "1"})
    assert (await client.next("error"))["code"] == "not_authenticated"
    await client.send("user_authenticated", {"token": token(user)})
    assert (await client.next("authenticated"))["user_id"] == user


async def test_malformed_frames_get_bad_request_and_the_connection_survives(connect: Connector) -> None:
    chat, alice, bob = await _chat_with_live_pair(connect)

    await alice.ws.send("{not json")
    await alice.ws.send("[1, 2, 3]")
    await alice.ws.send(b"\x00binary")
    await alice.send("no_such_event", {})
    for _ in range(4):
        assert (await alice.next("error"))["code"] == "bad_request"

    await alice.send("send_message", {"chat_id": chat, "tempId": "missing-content"})
    error = await alice.next("message_error")
    assert (
        error["code"] == "bad_request"
        and error["tempId"] == "missing-content"
        and "content" in error["message"]
    )
    await alice.send("send_message", {"chat_id": "not-a-uuid", "content": "x", "tempId": 7})
    error = await alice.next("message_error")
    assert error["code"] == "bad_request" and error["tempId"] == 7
    await alice.send("send_message", {"chat_id": chat, "content": "nul \u0000 inside", "tempId": "nul"})
    error = await alice.next("message_error")
    assert error["code"] == "bad_request" and error["tempId"] == "nul"
    await alice.send("send_message", {"chat_id": chat, "content": "", "tempId": "empty"})
    assert (await alice.next("message_error"))["code"] == "bad_request"
    await alice.send("message_received", {"message_ids": "nope"})
    assert (await alice.next("error"))["code"] == "bad_request"

    await _still_works(chat, alice, bob)


async def test_over_long_content_is_refused(connect: Connector) -> None:
    chat, alice, bob = await _chat_with_live_pair(connect)
    temp_id = await alice.send_message(chat, "x" * 65_537)
    error = await alice.next("message_error")
    assert error == {"tempId": temp_id, "code": "content_too_long", "message": error["message"]}
    await _still_works(chat, alice, bob)


async def test_oversized_frame_closes_only_that_socket(connect: Connector) -> None:
    chat, alice, bob = await _chat_with_live_pair(connect)
    flooder = await connect(alice.user_id or "")
    await flooder.ws.send(
        json.dumps({"event": "send_message", "data": {"content": "x" * (1024 * 1024 + 10)}})
    )
    assert (await flooder.next("error"))["code"] == "frame_too_large"
    assert await flooder.wait_closed() == 1009
    await _still_works(chat, alice, bob)


async def test_content_is_stored_and_returned_exactly_as_given(connect: Connector) -> None:
    chat, alice, bob = await _chat_with_live_pair(connect)
    tricky = "'; DROP TABLE messages; -- <script>alert(1)</script> \u202e\U0001f600 \t\r\n \\ \" end"
    await alice.send_message(chat, tricky)
    assert (await bob.next("new_message"))["content"] == tricky
    history = (await connect.api(alice.user_id or "").history(chat)).json()["messages"]
    assert history[-1]["content"] == tricky
