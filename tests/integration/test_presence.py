"""Presence to clients: `presence` frames to contacts only, the grace period, the HTTP query."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from .client import WAIT, Api, Client, unique
from .conftest import Connector


def about(client: Client, user_id: str) -> list[Any]:
    return [p for p in client.of("presence") if p["user_id"] == user_id]


async def once_contacts(api: Api, user_id: str) -> httpx.Response:
    """GET `user_id`'s presence once the presence service has learnt of the shared chat.

    Chats reach presence as events, after `POST /chats` answered, and it offers nothing to await
    for that, so this polls (as `System` polls /readyz) until the answer is no longer 403.
    """
    async for attempt in AsyncRetrying(stop=stop_after_delay(WAIT), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            response = await api.http.get(f"/users/{user_id}/presence")
            assert response.status_code != 403, response.text
    return response


async def online(connect: Connector, user_id: str, gateway: int = 0) -> Client:
    """Connected, and known to presence: the catch-up is only sent once presence registered it."""
    client = await connect(user_id, gateway)
    await client.next("queue_flushed")
    return client


async def test_contacts_see_going_offline_and_online_and_strangers_do_not(connect: Connector) -> None:
    a, b, e, f = unique("a"), unique("b"), unique("e"), unique("f")
    await connect.api(a).create_chat([b], kind="direct")
    await connect.api(e).create_chat([f], kind="direct")
    await once_contacts(connect.api(a), b)
    await once_contacts(connect.api(e), f)
    alice, eve = await online(connect, a, gateway=0), await online(connect, e, gateway=1)
    bob = await online(connect, b, gateway=1)
    assert await alice.next("presence") == {"user_id": b, "status": "online", "last_seen": None}

    await bob.close()
    offline = await alice.next("presence")
    assert offline["user_id"] == b and offline["status"] == "offline" and offline["last_seen"]
    assert (await connect.api(a).http.get(f"/users/{b}/presence")).json() == offline

    await online(connect, b, gateway=1)
    assert await alice.next("presence") == {"user_id": b, "status": "online", "last_seen": None}

    # Eve's own contact comes online after all that: presence sent Eve anything about Bob before
    # this frame, in order, so its arrival makes the absence below meaningful.
    await online(connect, f)
    assert await eve.next("presence") == {"user_id": f, "status": "online", "last_seen": None}
    assert about(eve, b) == []


async def test_reconnect_within_grace_is_not_seen(connect: Connector) -> None:
    a, b = unique("a"), unique("b")
    await connect.api(a).create_chat([b], kind="direct")
    await once_contacts(connect.api(a), b)
    alice = await online(connect, a, gateway=0)
    bob = await online(connect, b, gateway=1)
    assert (await alice.next("presence"))["status"] == "online"

    await bob.close()
    # Away for one second (a network switch), well inside the 5 s grace: the scenario, not a wait.
    await asyncio.sleep(1.0)
    bob = await online(connect, b, gateway=1)
    reconnected = datetime.now(UTC)
    await bob.close()
    # Bob's final goodbye, told apart by its time, is announced after the grace: had the
    # reconnect shown, its offline and online would have come before it.
    await alice.wait(
        lambda _: any(
            p["status"] == "offline" and datetime.fromisoformat(p["last_seen"]) > reconnected
            for p in about(alice, b)
        )
    )
    assert [p["status"] for p in about(alice, b)] == ["online", "offline"]


async def test_presence_over_http_only_for_contacts(connect: Connector) -> None:
    a, b, e = unique("a"), unique("b"), unique("e")
    await connect.api(a).create_chat([b], kind="direct")
    await connect.api(e).create_chat([unique("f")], kind="direct")
    path = f"/users/{b}/presence"

    never = await once_contacts(connect.api(a), b)
    assert never.status_code == 200
    assert never.json() == {"user_id": b, "status": "offline", "last_seen": None}

    await online(connect, b)
    for caller in (a, b):
        seen = await connect.api(caller, gateway=1).http.get(path)
        assert seen.status_code == 200
        assert seen.json() == {"user_id": b, "status": "online", "last_seen": None}

    refused = await connect.api(e).http.get(path)
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_a_contact"
