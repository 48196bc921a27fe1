"""A real check of the baseline server: started by `running_baseline` on the local PostgreSQL,
driven over HTTP and real WebSockets by the integration tests' protocol client.

    .venv/bin/python -m bench.baseline.smoke

Checks authentication, a direct chat with a recipient on two sockets, a 50-member group with
online and offline members (each message exactly once, with the protocol's fields; offline
members get their queue in order on connect, then `queue_flushed` with its count), and the
`message_error` codes. About a hundred messages in all: it measures nothing.
"""

import asyncio
import os
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import websockets
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from tests.integration.client import Client, token, unique

from .launch import Baseline, running_baseline

SECRET = "baseline-smoke-secret-of-at-least-32-bytes"  # noqa: S105 - a throwaway for this run
MESSAGE_FIELDS = {"id", "chat_id", "seq", "sender_id", "content", "message_type", "reply_to", "created_at"}
# A large group, and its online / offline split: enough sockets to show the per-recipient loop and
# the queue, small enough to be no load on a shared machine.
GROUP_SIZE = 50
GROUP_OFFLINE = 10
GROUP_MESSAGES = 5

checks = 0


def check(condition: bool, what: str) -> None:
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


async def connect(baseline: Baseline, user_id: str) -> Client:
    """Client.connect, with a token signed by this run's secret."""
    headers = {"Authorization": f"Bearer {token(user_id, secret=SECRET)}"}
    client = Client(await websockets.connect(baseline.ws_url, additional_headers=headers, max_size=None))
    auth = await client.next("authenticated")
    client.user_id, client.session_id = auth["user_id"], auth["session_id"]
    check(auth["user_id"] == user_id and auth["session_id"].startswith("s-"), f"authenticated: {auth}")
    return client


def http(baseline: Baseline, user_id: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token(user_id, secret=SECRET)}"} if user_id else {}
    return httpx.AsyncClient(base_url=baseline.http_url, headers=headers, timeout=30)


async def create_chat(baseline: Baseline, owner: str, members: list[str], kind: str) -> dict[str, Any]:
    async with http(baseline, owner) as api:
        response = await api.post("/chats", json={"type": kind, "members": members})
    check(response.status_code == 201, f"POST /chats: {response.status_code} {response.text}")
    chat: dict[str, Any] = response.json()
    check(uuid.UUID(chat["id"]) is not None and chat["type"] == kind, f"chat: {chat}")
    check(chat["members"] == list(dict.fromkeys([owner, *members])), f"members: {chat['members']}")
    return chat


async def settle(client: Client) -> None:
    """Wait until every frame the server queued for this socket so far has arrived: the answer
    to a probe comes through the same queue, behind them."""

    def answered(frames: list[dict[str, Any]]) -> int:
        return sum(1 for f in frames if f["event"] == "error" and "smoke_probe" in f["data"]["message"])

    before = answered(client.frames)
    await client.send("smoke_probe", {})
    await client.wait(lambda frames: answered(frames) > before)


async def send(client: Client, chat_id: str, content: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send; the stored message from `message_sent`, and `message_delivery_info`."""
    temp_id = await client.send_message(chat_id, content)
    sent = await client.next("message_sent")
    check(sent["tempId"] == temp_id, f"message_sent tempId: {sent}")
    message: dict[str, Any] = sent["message"]
    check(set(message) == MESSAGE_FIELDS, f"message fields: {sorted(message)}")
    check(
        (message["chat_id"], message["sender_id"], message["content"], message["message_type"])
        == (chat_id, client.user_id, content, "text"),
        f"stored message: {message}",
    )
    check(message["created_at"].endswith("Z") and message["reply_to"] is None, f"created_at: {message}")
    info = await client.next("message_delivery_info")
    check(info["message_id"] == message["id"], f"delivery info: {info}")
    return message, info


def totals(info: dict[str, Any]) -> tuple[int, int, int]:
    return info["delivered"], info["queued"], info["total"]


def received_once(client: Client, sent: Sequence[dict[str, Any]]) -> None:
    """The socket got each sent message exactly once, in order, with the stored fields."""
    got = client.messages(sent[0]["chat_id"])
    check(
        got == list(sent), f"{client.user_id} got {[m['seq'] for m in got]}, not {[m['seq'] for m in sent]}"
    )


async def check_auth(baseline: Baseline) -> None:
    async with httpx.AsyncClient(base_url=baseline.http_url) as api:
        check((await api.get("/healthz")).status_code == 200, "/healthz")
        anonymous = await api.post("/chats", json={"type": "group", "members": ["x"]})
        check(
            anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated", anonymous.text
        )
        forged = {"Authorization": f"Bearer {token('mallory', secret=SECRET + '-forged')}"}
        refused = await api.post("/chats", json={"type": "group", "members": ["x"]}, headers=forged)
        check(refused.status_code == 401 and refused.json()["code"] == "invalid_token", refused.text)
        client = Client(await websockets.connect(baseline.ws_url, additional_headers=forged))
    check(await client.wait_closed() == 4401, f"bad token closed with {client.close_code}")
    check([e["code"] for e in client.of("error")] == ["invalid_token"], f"bad token: {client.frames}")
    print("auth: /healthz 200; POST /chats 401 without and with a forged token; ws forged token -> 4401")


async def check_direct(baseline: Baseline) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    chat = await create_chat(baseline, alice, [bob], "direct")
    async with http(baseline, alice) as api:
        three = await api.post("/chats", json={"type": "direct", "members": [bob, carol]})
    check(three.status_code == 422 and three.json()["code"] == "bad_request", three.text)

    sender = await connect(baseline, alice)
    phone, laptop = await connect(baseline, bob), await connect(baseline, bob)
    outsider = await connect(baseline, carol)
    for client in (sender, phone, laptop, outsider):
        check((await client.next("queue_flushed"))["count"] == 0, "empty queue")

    sent, infos = zip(*[await send(sender, chat["id"], f"hello {n}") for n in range(3)], strict=True)
    check([m["seq"] for m in sent] == [1, 2, 3], f"seqs {[m['seq'] for m in sent]}")
    check(all(totals(i) == (1, 0, 1) for i in infos), f"infos {infos}")
    for client in (phone, laptop, sender, outsider):
        await settle(client)
    received_once(phone, sent)
    received_once(laptop, sent)
    check(
        sender.messages() == [] and outsider.messages() == [], "the sender and outsiders get no new_message"
    )

    # Refusals: not a member, no such chat, a bad field. Nothing is stored for them.
    temp_id = await outsider.send_message(chat["id"], "let me in")
    refused = await outsider.next("message_error")
    check((refused["tempId"], refused["code"]) == (temp_id, "not_a_member"), f"non-member: {refused}")
    await outsider.send_message(str(uuid.uuid4()), "anyone?", temp_id="t-missing")
    missing = await outsider.next("message_error")
    check((missing["tempId"], missing["code"]) == ("t-missing", "chat_not_found"), f"no chat: {missing}")
    await sender.send("send_message", {"chat_id": chat["id"], "content": "", "tempId": 7})
    empty = await sender.next("message_error")
    check((empty["tempId"], empty["code"]) == (7, "bad_request"), f"empty content: {empty}")
    fourth, _ = await send(sender, chat["id"], "still here")
    check(fourth["seq"] == 4, f"refused sends take no seq: {fourth['seq']}")
    await sender.send("message_received", {"message_ids": "not a list"})
    check((await sender.next("error"))["code"] == "bad_request", "malformed message_received")

    for client in (sender, phone, laptop, outsider):
        await client.close()
    print(
        "direct: 4 messages, each exactly once on both of bob's sockets, none to the sender;"
        " message_error not_a_member / chat_not_found / bad_request"
    )


async def unacknowledged(baseline: Baseline, users: list[str]) -> int:
    conn = await asyncpg.connect(baseline.database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM message_status WHERE status = 'sent' AND user_id = ANY($1::text[])", users
        )
        return count
    finally:
        await conn.close()


async def check_group(baseline: Baseline) -> None:
    owner = unique("owner")
    members = [unique(f"m{n:02}") for n in range(GROUP_SIZE - 1)]
    chat = await create_chat(baseline, owner, members, "group")
    check(len(chat["members"]) == GROUP_SIZE, f"{len(chat['members'])} members")
    online_ids, offline_ids = members[GROUP_OFFLINE:], members[:GROUP_OFFLINE]

    sender = await connect(baseline, owner)
    online = [await connect(baseline, user) for user in online_ids]
    for client in [sender, *online]:
        check((await client.next("queue_flushed"))["count"] == 0, "empty queue")

    pairs = [await send(sender, chat["id"], f"group {n}") for n in range(GROUP_MESSAGES)]
    sent = [message for message, _ in pairs]
    check([m["seq"] for m in sent] == list(range(1, GROUP_MESSAGES + 1)), "group seqs")
    expected = (len(online_ids), len(offline_ids), GROUP_SIZE - 1)
    infos = [totals(info) for _, info in pairs]
    check(all(i == expected for i in infos), f"group delivery infos {infos}, not {expected}")
    await asyncio.gather(*(settle(client) for client in [sender, *online]))
    for client in online:
        received_once(client, sent)
    check(sender.messages() == [], "the sender gets no new_message")

    # Every online member but one acknowledges; the database shows when those updates are done.
    lazy, *diligent = online
    for client in diligent:
        await client.send("message_received", {"message_ids": [m["id"] for m in sent]})
    async for attempt in AsyncRetrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            left = await unacknowledged(baseline, [c.user_id or "" for c in diligent])
            check(left == 0, f"{left} acknowledged messages still queued")
    for client in online:
        await client.close()

    # Back online: the queue in order, then queue_flushed with its count. Acknowledged: nothing.
    returning = [await connect(baseline, user) for user in [*offline_ids, lazy.user_id or ""]]
    for client in returning:
        flushed = await client.next("queue_flushed")
        check(flushed["count"] == GROUP_MESSAGES, f"{client.user_id} flushed {flushed}")
        events = [f["event"] for f in client.frames]
        check(
            events == ["authenticated"] + ["new_message"] * GROUP_MESSAGES + ["queue_flushed"],
            f"catch-up frames {events}",
        )
        received_once(client, sent)
    again = await connect(baseline, diligent[0].user_id or "")
    check((await again.next("queue_flushed"))["count"] == 0, "an acknowledged queue is empty")

    outsider = await connect(baseline, unique("outsider"))
    await outsider.send_message(chat["id"], "hi all", temp_id="o-1")
    refused = await outsider.next("message_error")
    check((refused["tempId"], refused["code"]) == ("o-1", "not_a_member"), f"group non-member: {refused}")
    for client in [sender, *returning, again, outsider]:
        await client.close()
    print(
        f"group: {GROUP_SIZE} members, {GROUP_MESSAGES} messages; {len(online_ids)} online got each exactly"
        f" once; {len(offline_ids)} offline + 1 unacknowledging got {GROUP_MESSAGES} then"
        f" queue_flushed {{count: {GROUP_MESSAGES}}}; acknowledged -> count 0; non-member -> not_a_member"
    )


async def check_large_group(baseline: Baseline) -> None:
    owner = unique("big")
    chat = await create_chat(baseline, owner, [f"{owner}-{n}" for n in range(5_000)], "group")
    async with http(baseline, owner) as api:
        too_many = await api.post(
            "/chats", json={"type": "group", "members": [str(n) for n in range(10_001)]}
        )
    check(too_many.status_code == 422 and too_many.json()["code"] == "bad_request", too_many.text[:200])
    print(f"large group: 5,000 listed -> 201 with {len(chat['members'])} members; 10,001 listed -> 422")


async def main() -> None:
    database = os.environ.get(
        "CHAT_DATABASE_URL", "postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
    )
    async with running_baseline(database, secret=SECRET) as baseline:
        print(f"baseline pid {baseline.pid} at {baseline.ws_url} (database {baseline.database_url})")
        try:
            await check_auth(baseline)
            await check_direct(baseline)
            await check_group(baseline)
            await check_large_group(baseline)
        except BaseException:
            print(f"--- baseline log\n{baseline.logs()}")
            raise
    print(f"smoke: {checks} checks passed")


if __name__ == "__main__":
    asyncio.run(main())
