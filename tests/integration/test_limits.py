"""Abuse limits: each limit is hit for real, answers its documented code, and leaves
the other sessions on the same gateway working.

One gateway with small limits for the whole module. Linux routes all of 127.0.0.0/8 to the
loopback interface, so each test connects from a loopback address of its own and the
per-address limit of one test never counts another test's sockets.
"""

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from .client import WAIT, Client, token, unique
from .conftest import Connector
from .system import System, running_system

MAX_PER_ADDRESS = 5
MAX_SESSIONS = 2
BURST = 5
# A token back every 10 s: none comes back while a test sends its burst, however slow the machine.
PER_SECOND = 0.1
HEADER_TIMEOUT = 2.0
AUTH_TIMEOUT = 1.0
# Frames read per second from one connection, and the burst read at once.
FRAMES_PER_SECOND = 50.0
FRAME_BURST = 10
# Frames read per second from all the connections of one address together, and their burst.
ADDRESS_FRAMES_PER_SECOND = 60.0
ADDRESS_FRAME_BURST = 10
# `sync` from one address: a burst of four, then none.
ADDRESS_SYNC_BURST = 4
# New TCP connections from one address: a burst the harness's own calls from 127.0.0.1 never
# reach in this module, then none.
CONNECT_BURST = 300
# The only proxy whose X-Forwarded-For is believed.
PROXY = "127.0.0.9"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
async def system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """Overrides the shared system for this module, so `connect` and the failure logs use it."""
    async with running_system(
        *infra_urls,
        gateways=1,
        CHAT_MAX_CONNECTIONS_PER_IP=str(MAX_PER_ADDRESS),
        CHAT_MAX_SESSIONS_PER_USER=str(MAX_SESSIONS),
        CHAT_MESSAGE_BURST=str(BURST),
        CHAT_MESSAGES_PER_SECOND=str(PER_SECOND),
        CHAT_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        CHAT_AUTH_TIMEOUT_SECONDS=str(AUTH_TIMEOUT),
        CHAT_FRAMES_PER_SECOND=str(FRAMES_PER_SECOND),
        CHAT_FRAME_BURST=str(FRAME_BURST),
        CHAT_ADDRESS_FRAMES_PER_SECOND=str(ADDRESS_FRAMES_PER_SECOND),
        CHAT_ADDRESS_FRAME_BURST=str(ADDRESS_FRAME_BURST),
        CHAT_ADDRESS_SYNC_BURST=str(ADDRESS_SYNC_BURST),
        CHAT_ADDRESS_SYNCS_PER_SECOND="0.01",
        CHAT_ADDRESS_CONNECT_BURST=str(CONNECT_BURST),
        # A token back every 100 s: none while the test opens its burst.
        CHAT_ADDRESS_CONNECTS_PER_SECOND="0.01",
        # A protocol violation costs its address the whole connect burst.
        CHAT_ADDRESS_VIOLATION_COST=str(CONNECT_BURST),
        CHAT_TRUSTED_PROXIES=PROXY,
        CHAT_ALLOWED_ORIGINS=f"{ORIGIN},https://web.example",
    ) as system:
        yield system


def fresh_address() -> str:
    """A loopback address no other test uses (never 127.0.0.x, so never the proxy's)."""
    n = uuid.uuid4().int
    return f"127.{n % 254 + 1}.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


async def open_socket(
    connect: Connector,
    address: str,
    user: str | None = None,
    *,
    forwarded_for: str | None = None,
    origin: str | None = None,
) -> Client:
    """A client from `address`; with `user`, authenticated at the handshake (not awaited here)."""
    headers = {"Authorization": f"Bearer {token(user)}"} if user else {}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    ws = await websockets.connect(
        connect.system.ws_url(),
        additional_headers=headers,
        origin=origin,
        max_size=None,
        local_addr=(address, 0),
    )
    client = Client(ws)
    connect.clients.append(client)
    return client


async def session(connect: Connector, address: str, user: str, **options: Any) -> Client:
    client = await open_socket(connect, address, user, **options)
    auth = await client.next("authenticated")
    client.user_id, client.session_id = auth["user_id"], auth["session_id"]
    return client


async def refused(client: Client, code: str, close_code: int) -> None:
    assert (await client.next("error"))["code"] == code
    assert await client.wait_closed() == close_code
    assert client.of("authenticated") == []


async def pair(connect: Connector, address: str) -> tuple[str, Client, Client]:
    """A direct chat and both members connected from `address`."""
    a, b = unique("a"), unique("b")
    chat = await connect.api(a).create_chat([b], kind="direct")
    return chat, await session(connect, address, a), await session(connect, address, b)


async def still_works(chat: str, sender: Client, receiver: Client) -> None:
    content = f"still here {uuid.uuid4().hex[:6]}"
    await sender.send_message(chat, content)
    await receiver.wait(lambda _: any(m["content"] == content for m in receiver.messages()))


async def answered(client: Client, temp_ids: set[str]) -> None:
    def all_answered(_: object) -> bool:
        answers = client.of("message_sent") + client.of("message_error")
        return {a["tempId"] for a in answers} >= temp_ids

    await client.wait(all_answered)


async def reconnects(connect: Connector, address: str, user: str) -> Client:
    """A new session once the server has counted a closed one out.

    The server counts a socket out just after the closing handshake the client saw end, and
    nothing tells the client when; so this tries again, briefly, while the answer is a 4429.
    """
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(WAIT), wait=wait_fixed(0.1), retry=retry_if_exception_type(AssertionError)
    ):
        with attempt:
            return await session(connect, address, user)
    raise AssertionError("unreachable")


async def test_sends_past_the_users_rate_are_refused_and_not_stored(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    laptop = await session(connect, address, alice.user_id or "")

    # Both of alice's sessions draw on one bucket: 8 sends against a burst of 5.
    for n, client in enumerate((alice, laptop)):
        temp_ids = {await client.send_message(chat, f"m{n}-{i}") for i in range(4)}
        await answered(client, temp_ids)
    accepted = alice.of("message_sent") + laptop.of("message_sent")
    errors = alice.of("message_error") + laptop.of("message_error")
    assert len(accepted) == BURST and len(errors) == 8 - BURST
    assert {e["code"] for e in errors} == {"rate_limited"}

    stored = (await connect.api(bob.user_id or "").history(chat)).json()["messages"]
    assert sorted(m["content"] for m in stored) == sorted(m["message"]["content"] for m in accepted)
    # Neither of alice's sockets was closed, and bob's own allowance is untouched.
    assert alice.close_code is None and laptop.close_code is None
    await still_works(chat, bob, alice)


async def test_sessions_past_the_per_user_limit_are_refused(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    laptop = await session(connect, address, alice.user_id or "")

    third = await open_socket(connect, address, alice.user_id)
    await refused(third, "too_many_sessions", 4429)

    await still_works(chat, alice, bob)
    await still_works(chat, laptop, bob)
    await still_works(chat, bob, alice)

    await laptop.close()
    tablet = await reconnects(connect, address, alice.user_id or "")
    await still_works(chat, tablet, bob)


async def test_connections_past_the_per_address_limit_are_refused(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    others = [await session(connect, address, unique("u")) for _ in range(MAX_PER_ADDRESS - 2)]

    # Refused before authentication: an unauthenticated socket is what a flood would open.
    extra = await open_socket(connect, address)
    await refused(extra, "too_many_connections", 4429)
    chat_elsewhere, carol, dave = await pair(connect, fresh_address())

    await still_works(chat, alice, bob)
    await still_works(chat_elsewhere, carol, dave)

    await others[0].close()
    await reconnects(connect, address, unique("u"))


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(connect: Connector) -> None:
    chat, alice, bob = await pair(connect, fresh_address())
    client_a, client_b = "203.0.113.7", "203.0.113.8"

    # Through the proxy, each forwarded address has a limit of its own.
    for _ in range(MAX_PER_ADDRESS):
        await session(connect, PROXY, unique("p"), forwarded_for=client_a)
    await refused(
        await open_socket(connect, PROXY, unique("p"), forwarded_for=client_a), "too_many_connections", 4429
    )
    await session(connect, PROXY, unique("p"), forwarded_for=client_b)

    # From anyone else the header is ignored: a new made-up address each time does not help.
    direct = fresh_address()
    for i in range(MAX_PER_ADDRESS):
        await session(connect, direct, unique("d"), forwarded_for=f"198.51.100.{i + 1}")
    await refused(
        await open_socket(connect, direct, unique("d"), forwarded_for="198.51.100.99"),
        "too_many_connections",
        4429,
    )
    await still_works(chat, alice, bob)


async def test_a_browser_origin_outside_the_allow_list_is_refused_before_the_socket_opens(
    connect: Connector,
) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)

    with pytest.raises(websockets.InvalidStatus) as refusal:
        await open_socket(connect, address, unique("victim"), origin="https://evil.example")
    assert refusal.value.response.status_code == 403
    assert json.loads(refusal.value.response.body)["code"] == "origin_not_allowed"

    await session(connect, address, unique("web"), origin=ORIGIN)  # an allowed page
    await session(connect, address, unique("app"))  # no Origin: a native app or a bot
    await still_works(chat, alice, bob)


async def _until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dribble: bytes
) -> tuple[bytes, float]:
    """Send `dribble` a byte every half second until the server hangs up; what it answered, and
    how long after connecting. At most 60 bytes: the server must have hung up long before."""
    start = time.monotonic()
    answer = asyncio.create_task(reader.read())  # everything up to the server's EOF
    for byte in dribble[:60]:
        done, _ = await asyncio.wait({answer}, timeout=0.5)
        if done:
            break
        writer.write(bytes([byte]))
    received = await asyncio.wait_for(answer, WAIT)
    elapsed = time.monotonic() - start
    writer.close()
    return received, elapsed


HEAD = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


@pytest.mark.parametrize(
    ("start", "dribble"),
    [(b"", b""), (HEAD, b""), (HEAD, b"X-Slow: " + b"a" * 60)],
    ids=["nothing sent", "head never finished", "slowloris"],
)
async def test_a_request_head_not_sent_in_time_is_cut_off(
    connect: Connector, start: bytes, dribble: bytes
) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)

    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    writer.write(start)
    received, elapsed = await _until_closed(reader, writer, dribble)

    if start:
        assert received.startswith(b"HTTP/1.1 408 ")
        assert json.loads(received.split(b"\r\n\r\n", 1)[1])["code"] == "request_timeout"
    else:
        assert received == b""  # nothing asked, nothing answered: just closed
    # Not before the deadline, and not long after it (a busy 2-core machine may lag a little).
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + 3
    # WebSockets opened before are older than the deadline by now and are not touched by it.
    assert alice.close_code is None and bob.close_code is None
    await still_works(chat, alice, bob)


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (UPGRADE + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (UPGRADE + b"".join(b"X-H%d: v\r\n" % i for i in range(130)) + b"\r\n", b"431"),
        (b"GET /ws?" + b"a" * 9000 + UPGRADE.removeprefix(b"GET /ws") + b"\r\n", b"414"),
        (UPGRADE + b"Content-Length: 5\r\n\r\nhello", b"400"),
    ],
    ids=["a header line over 8 KiB", "over 128 headers", "a request line over 8 KiB", "with a body"],
)
async def test_an_upgrade_head_the_handshake_refuses_is_answered_and_closed_at_once(
    connect: Connector, head: bytes, status: bytes
) -> None:
    """Read whole by h11 (within its 16 KiB) but refused by the WebSocket handshake: answered
    with `bad_handshake` and closed at once, not held past every deadline."""
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    writer.write(head)
    received, elapsed = await _until_closed(reader, writer, b"")
    assert received.startswith(b"HTTP/1.1 " + status + b" ")
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["code"] == "bad_handshake"
    assert elapsed < HEADER_TIMEOUT  # answered, not left to a deadline
    await still_works(chat, alice, bob)


def open_descriptors(system: System) -> int:
    popen = system.processes["gateway-0"].popen
    assert popen is not None
    return len(os.listdir(f"/proc/{popen.pid}/fd"))


async def test_hundreds_of_refused_heads_and_silent_sockets_are_closed_and_hold_no_descriptor(
    connect: Connector,
) -> None:
    """200 upgrade heads the handshake refuses and 200 WebSockets that never authenticate, each
    from an address of its own (past the per-address limits): every one is closed within its
    deadline, and the gateway holds as many descriptors after as before."""
    chat, alice, bob = await pair(connect, fresh_address())
    before = open_descriptors(connect.system)
    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    heads = [
        UPGRADE + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
        UPGRADE + b"Content-Length: 5\r\n\r\nhello",
    ]

    async def refused_head(n: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(fresh_address(), 0))
        writer.write(heads[n % 2])
        received, elapsed = await _until_closed(reader, writer, b"")
        assert received.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 "))
        return elapsed

    async def silent_socket() -> float:
        start = time.monotonic()
        client = await open_socket(connect, fresh_address())
        assert await client.wait_closed() == 4401
        return time.monotonic() - start

    elapsed = await asyncio.gather(
        *(refused_head(n) for n in range(200)), *(silent_socket() for _ in range(200))
    )
    # A busy 2-core machine may lag: each within its deadline plus a few seconds.
    assert max(elapsed[:200]) < HEADER_TIMEOUT + 3
    assert max(elapsed[200:]) < AUTH_TIMEOUT + 3
    async for attempt in AsyncRetrying(
        # The gateway offers no event for a descriptor closed: read /proc, briefly, bounded.
        stop=stop_after_delay(5),
        wait=wait_fixed(0.1),
        retry=retry_if_exception_type(AssertionError),
    ):
        with attempt:
            assert open_descriptors(connect.system) <= before
    await still_works(chat, alice, bob)


async def test_a_socket_that_never_authenticates_is_closed(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    idle = await open_socket(connect, address)
    assert (await idle.next("error"))["code"] == "invalid_token"
    assert await idle.wait_closed() == 4401
    await still_works(chat, alice, bob)


async def test_a_flooding_connection_is_read_at_the_pace_and_nothing_is_refused(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    flooder = await session(connect, address, unique("flood"))
    frames = 200
    started = time.perf_counter()
    for _ in range(frames):
        await flooder.send("nope", {})
    # Meanwhile another session of the same gateway is served as usual.
    await still_works(chat, alice, bob)
    await flooder.wait(lambda _: len(flooder.of("error")) == frames)
    took = time.perf_counter() - started
    # Every frame answered (nothing dropped, the socket open), and no faster than the pace: a
    # lower bound, which a slow machine cannot break.
    assert all(e["code"] == "bad_request" for e in flooder.of("error")) and flooder.close_code is None
    assert took >= (frames - FRAME_BURST) / FRAMES_PER_SECOND * 0.9


def pieces(frame: str, count: int) -> list[str]:
    """`frame` cut into `count` pieces. websockets sends an iterable of pieces as one message,
    a frame per piece and then an empty final frame: `count + 1` frames in all."""
    cuts = [len(frame) * i // count for i in range(count + 1)]
    return [frame[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


async def test_a_message_in_too_many_fragments_closes_the_connection(connect: Connector) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    # At the limit (16 fragments, the default) a message is read as any other.
    content = f"in pieces {uuid.uuid4().hex[:6]}"
    frame = json.dumps(
        {"event": "send_message", "data": {"chat_id": chat, "content": content, "tempId": "f1"}}
    )
    await alice.ws.send(iter(pieces(frame, 15)))
    await bob.wait(lambda _: any(m["content"] == content for m in bob.messages()))
    # One fragment more and the connection is refused, with the code, before the message is read.
    fragmenter = await session(connect, address, unique("frag"))
    await fragmenter.ws.send(iter(pieces(json.dumps({"event": "nope", "data": {"x": "y" * 40}}), 16)))
    assert (await fragmenter.next("error"))["code"] == "too_many_fragments"
    assert await fragmenter.wait_closed() == 1008
    assert fragmenter.of("error")[1:] == []  # the message itself was never answered
    await still_works(chat, alice, bob)


async def test_frames_sent_in_one_burst_are_all_answered_in_order(connect: Connector) -> None:
    """The gateway parses a burst a slice at a time (ws_protocol.py): frames that straddle the
    slices, small and large, arrive whole and in order."""
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    sender = await session(connect, address, unique("burst"))
    temp_ids = [f"t{n}" for n in range(60)]
    # Sends to another user's chat: past the user's burst each is refused `rate_limited` at
    # once, so those answers come back in the order the frames were read.
    for n, temp_id in enumerate(temp_ids):
        data = {"chat_id": chat, "content": "z" * (n * 157 % 9000 + 1), "tempId": temp_id}
        await sender.ws.send(json.dumps({"event": "send_message", "data": data}))
    await answered(sender, set(temp_ids))
    refused_now = [e["tempId"] for e in sender.of("message_error") if e["code"] == "rate_limited"]
    assert len(refused_now) >= len(temp_ids) - BURST - 1
    assert refused_now == sorted(refused_now, key=temp_ids.index)
    await still_works(chat, alice, bob)


async def test_connections_opened_too_fast_from_one_address_are_refused_before_the_socket_opens(
    connect: Connector,
) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)  # two of the address's burst
    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    for _ in range(CONNECT_BURST - 2):
        # Every TCP connection counts, whatever it goes on to send.
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        writer.close()
        await writer.wait_closed()
    with pytest.raises(websockets.InvalidStatus) as refused_with:
        await open_socket(connect, address)
    response = refused_with.value.response
    assert response.status_code == 429
    assert json.loads(response.body or b"{}")["code"] == "rate_limited"
    # The address's open sessions carry on, and another address is not affected.
    await still_works(chat, alice, bob)
    await session(connect, fresh_address(), unique("other"))


async def test_with_trusted_proxies_a_direct_clients_websocket_counts_once(connect: Connector) -> None:
    """Proxies are trusted in this module, so forwarded clients are counted at their handshakes;
    a client connecting directly is counted when its TCP connection is accepted, and only then."""
    address = fresh_address()
    await pair(connect, address)  # two of the burst of 300
    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    for _ in range(CONNECT_BURST - 3):
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        writer.close()
        await writer.wait_closed()
    await session(connect, address, unique("last"))  # the 300th connection: allowed
    with pytest.raises(websockets.InvalidStatus) as refused_with:
        await open_socket(connect, address)
    assert refused_with.value.response.status_code == 429


async def test_the_connections_of_one_address_share_one_read_pace(connect: Connector) -> None:
    address = fresh_address()
    flooders = [await session(connect, address, unique("flood")) for _ in range(2)]
    # A pair elsewhere: the flood of one address must not slow it.
    chat, alice, bob = await pair(connect, fresh_address())
    frames = 100
    started = time.perf_counter()
    for _ in range(frames):
        for flooder in flooders:
            await flooder.send("nope", {})
    await still_works(chat, alice, bob)
    for flooder in flooders:
        await flooder.wait(lambda _, f=flooder: len(f.of("error")) == frames)  # type: ignore[misc]
    took = time.perf_counter() - started
    # Each connection alone would be read in (100 - 10) / 50 s; the two together are held to
    # the address's pace: a lower bound, which a slow machine cannot break.
    assert took >= (2 * frames - ADDRESS_FRAME_BURST) / ADDRESS_FRAMES_PER_SECOND * 0.9
    assert all(f.close_code is None for f in flooders)


async def test_syncs_past_the_addresss_allowance_are_refused_whatever_the_connection(
    connect: Connector,
) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    first, second = [await session(connect, address, unique("sync")) for _ in range(2)]
    # Three from one connection (its own limit), one from the other: the address's four.
    for client, times in ((first, 3), (second, 1)):
        for n in range(times):
            await client.send("sync", {"chats": {}})
            await client.wait(lambda _, c=client, n=n: len(c.of("sync_done")) == n + 1)  # type: ignore[misc]
    # The second connection has syncs left of its own, but the address has none.
    await second.send("sync", {"chats": {}})
    refusal = await second.next("error")
    assert refusal["code"] == "rate_limited" and "address" in refusal["message"]
    assert second.close_code is None
    # Another address still syncs, and the refused address's sessions still chat.
    other = await session(connect, fresh_address(), unique("sync-other"))
    await other.send("sync", {"chats": {}})
    await other.next("sync_done")
    await still_works(chat, alice, bob)


async def _too_many_fragments(connect: Connector, address: str) -> None:
    client = await session(connect, address, unique("frag"))
    # The gateway closes at the 17th fragment, sometimes while the client is still writing the
    # rest: its write then fails, and the kernel's reset can discard the error frame and the
    # close frame before the client reads them (1006). The 429 that follows in the test is the
    # proof the violation was seen.
    with contextlib.suppress(websockets.ConnectionClosed):
        await client.ws.send(iter(pieces(json.dumps({"event": "nope", "data": {}}), 20)))
    code = await client.wait_closed()
    if code != 1006:
        assert code == 1008
        assert (await client.next("error"))["code"] == "too_many_fragments"


async def _frame_too_large(connect: Connector, address: str) -> None:
    client = await session(connect, address, unique("big"))
    await client.ws.send("x" * (1024 * 1024 + 10))  # over the 1 MiB default, under the cut-off
    assert (await client.next("error"))["code"] == "frame_too_large"
    assert await client.wait_closed() == 1009


async def _frame_far_too_large(connect: Connector, address: str) -> None:
    client = await session(connect, address, unique("huge"))
    # Cut off by the WebSocket layer itself, often before the client has finished sending it:
    # the send then fails with the close the server sent.
    with contextlib.suppress(websockets.ConnectionClosed):
        await client.ws.send("x" * (3 * 1024 * 1024))
    assert await client.wait_closed() == 1009


async def _head_not_in_time(connect: Connector, address: str) -> None:
    port = int(connect.system.gateway_url().rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    writer.write(HEAD)
    received, _ = await _until_closed(reader, writer, b"")
    assert received.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize(
    "violate",
    [_too_many_fragments, _frame_too_large, _frame_far_too_large, _head_not_in_time],
    ids=["too many fragments", "frame too large", "frame far too large", "head not in time"],
)
async def test_a_protocol_violation_costs_the_address_its_new_connections(
    connect: Connector, violate: Any
) -> None:
    address = fresh_address()
    chat, alice, bob = await pair(connect, address)
    await violate(connect, address)
    # Three connections of a burst of 300 were made, but the violation cost the rest of it.
    with pytest.raises(websockets.InvalidStatus) as refused_with:
        await open_socket(connect, address, unique("after"))
    assert refused_with.value.response.status_code == 429
    assert json.loads(refused_with.value.response.body or b"{}")["code"] == "rate_limited"
    # The address's sessions opened before carry on, and another address is not affected.
    await still_works(chat, alice, bob)
    await session(connect, fresh_address(), unique("other"))


async def test_a_connection_closed_for_a_limit_costs_the_address_nothing(connect: Connector) -> None:
    """Only breaking the protocol is charged: a socket closed for not authenticating in time
    (a phone that lost signal) leaves the address's connect allowance as it was."""
    address = fresh_address()
    idle = await open_socket(connect, address)
    assert await idle.wait_closed() == 4401
    await session(connect, address, unique("after"))
