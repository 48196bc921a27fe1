"""The services' internal APIs act only for a user the gateway signed a token for, and every user
id the protocol allows (non-ASCII ones included) works through the whole API.

Calls go straight to each service's port, as any process that reaches it could; the signed calls
use the shared system's internal secret, as the gateway does.
"""

import time
import uuid
from urllib.parse import quote

import httpx
import jwt
import pytest

from switchboard_runtime.internal_auth import AUDIENCE, InternalTokens

from .client import WAIT, Client, token, unique
from .conftest import Connector
from .system import INTERNAL_SECRET, System

# One call per service: (service, method, path, JSON body).
CALLS = [
    ("messages", "GET", "/internal/chats", None),
    ("presence", "GET", "/internal/users/mallory/presence", None),
    ("delivery", "POST", "/internal/receipts", {"message_ids": [str(uuid.uuid4())]}),
]


def forged(**claims: object) -> str:
    good = {"sub": "mallory", "aud": AUDIENCE, "exp": int(time.time()) + 60}
    return jwt.encode({**good, **claims}, INTERNAL_SECRET, algorithm="HS256")


REFUSED = {
    "no credential": None,
    "a bare user header": None,
    "another secret": jwt.encode(
        {"sub": "mallory", "aud": AUDIENCE, "exp": int(time.time()) + 3600},
        "another-secret-that-is-at-least-32-bytes",
        algorithm="HS256",
    ),
    "another audience": forged(aud="switchboard-clients"),
    "expired": forged(exp=int(time.time()) - 60),
    "no sub": forged(sub=None),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize(("service", "method", "path", "body"), CALLS, ids=[c[0] for c in CALLS])
async def test_an_internal_call_without_a_valid_signed_token_is_refused(
    system: System, service: str, method: str, path: str, body: object, case: str
) -> None:
    headers = {"X-Switchboard-User": "mallory"} if case == "a bare user header" else {}
    if (token := REFUSED[case]) is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=system.processes[service].url, timeout=WAIT) as http:
        response = await http.request(method, path, headers=headers, json=body)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_token"
        # The same call, signed as the gateway signs it, is answered.
        signed = {"Authorization": f"Bearer {InternalTokens(INTERNAL_SECRET).sign('mallory')}"}
        assert (await http.request(method, path, headers=signed, json=body)).status_code == 200


@pytest.mark.parametrize("name", ["josé", "ユーザー", "👩‍💻 dev", "Ω≈ç√"])
async def test_a_user_with_a_non_ascii_id_uses_the_whole_api(connect: Connector, name: str) -> None:
    me, friend, other = unique(name), unique("bob"), unique("cy")
    api = connect.api(me)
    chat = await api.create_chat([friend, other])
    direct = await api.create_chat([friend], kind="direct")
    assert {c["id"] for c in (await api.http.get("/chats")).json()} == {chat, direct}
    await api.remove_member(chat, other)
    await api.add_member(chat, other)
    presence = await connect.api(friend).http.get(f"/users/{me}/presence")
    assert presence.status_code == 200, presence.text
    assert presence.json()["user_id"] == me

    client = await connect(me)
    await client.next("queue_flushed")
    await client.send("join_chat", {"chat_id": chat})
    assert (await client.next("chat_joined"))["chat_id"] == chat
    await client.send_message(chat, "hello")
    stored = (await client.next("message_sent"))["message"]
    history = await api.history(chat)
    assert history.status_code == 200, history.text
    assert [m["id"] for m in history.json()["messages"]] == [stored["id"]]
    await client.send("sync", {"chats": {chat: 0}})
    done = await client.next("sync_done")
    assert client.close_code is None, done


@pytest.mark.parametrize("bad", ["nul\x00id", "esc\x1b[31mid", "del\x7fid"], ids=["NUL", "ESC", "DEL"])
async def test_a_user_id_with_a_control_character_is_refused_wherever_it_comes_in(
    connect: Connector, bad: str
) -> None:
    """At auth (`invalid_token`, 4401), in a request's body or path (422 `bad_request`); the
    caller's connection and other users are unharmed."""
    client = await Client.connect(connect.system.ws_url(), None)
    connect.clients.append(client)
    await client.send("user_authenticated", {"token": token(bad)})
    assert (await client.next("error"))["code"] == "invalid_token"
    assert await client.wait_closed() == 4401

    me, friend = unique("ann"), unique("bob")
    api = connect.api(me)
    chat = await api.create_chat([friend])
    for response in (
        await api.http.post("/chats", json={"type": "group", "members": [friend, bad]}),
        await api.http.post(f"/chats/{chat}/members", json={"user_id": bad}),
        await api.http.delete(f"/chats/{chat}/members/{quote(bad, safe='')}"),
        await api.http.get(f"/users/{quote(bad, safe='')}/presence"),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "bad_request"
    assert (await api.http.get("/chats")).status_code == 200
    alice = await connect(me)
    bob = await connect(friend)
    await alice.next("queue_flushed")
    await bob.next("queue_flushed")
    await alice.send_message(chat, "unharmed")
    assert (await bob.next("new_message"))["content"] == "unharmed"
