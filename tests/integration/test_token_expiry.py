"""A session lives as long as its token: closed with 4401 `token_expired` when it expires, unless
the client renewed it with `user_authenticated`; a gateway refuses to start with a short secret.

One gateway for the module, with no leeway on `exp`, so that a token that expires in two seconds
ends its session in two seconds.
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .client import WAIT, Client, token, unique
from .conftest import Connector
from .system import BIN, System, running_system

# Seconds a short-lived token lives: long enough to connect and catch up on a busy machine.
LIFETIME = 3


@pytest.fixture(scope="module")
async def system(infra_urls: tuple[str, str]) -> AsyncIterator[System]:
    """Overrides the shared system for this module, so `connect` and the failure logs use it."""
    async with running_system(*infra_urls, gateways=1, CHAT_JWT_LEEWAY_SECONDS="0") as system:
        yield system


async def short_lived(connect: Connector, user: str) -> tuple[Client, Any]:
    client = await Client.connect(connect.system.ws_url(), None)
    connect.clients.append(client)
    await client.send("user_authenticated", {"token": token(user, expires_in=LIFETIME)})
    return client, await client.next("authenticated")


async def test_a_session_ends_when_its_token_expires(connect: Connector) -> None:
    user = unique("ann")
    client, auth = await short_lived(connect, user)
    assert isinstance(auth["expires_at"], int) and auth["expires_at"] <= time.time() + LIFETIME
    assert await client.wait_closed(timeout=LIFETIME + WAIT) == 4401
    assert client.of("error")[-1]["code"] == "token_expired"
    assert time.time() >= auth["expires_at"]


async def test_a_renewed_session_outlives_its_first_token_and_keeps_working(connect: Connector) -> None:
    user, friend = unique("ann"), unique("bob")
    chat = await connect.api(user).create_chat([friend], kind="direct")
    client, first = await short_lived(connect, user)
    await client.next("queue_flushed")
    other = await connect(friend)
    await other.next("queue_flushed")

    # A token of another user, and a broken one, renew nothing and end nothing.
    await client.send("user_authenticated", {"token": token(friend)})
    await client.send("user_authenticated", {"token": "not-a-jwt"})
    await client.wait(lambda _: len(client.of("error")) == 2)
    assert {e["code"] for e in client.of("error")} == {"invalid_token"}

    await client.send("user_authenticated", {"token": token(user, expires_in=600)})
    await client.wait(lambda _: len(client.of("authenticated")) == 2)
    renewed = client.of("authenticated")[-1]
    assert renewed["session_id"] == first["session_id"] and renewed["expires_at"] > first["expires_at"]

    # Past the first token's expiry, the session still sends and receives.
    await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 1))  # the clock is the subject
    assert client.close_code is None
    await client.send_message(chat, "still here")
    assert (await other.next("new_message"))["content"] == "still here"
    await other.send_message(chat, "so am I")
    assert (await client.next("new_message"))["content"] == "so am I"


async def test_a_gateway_with_a_secret_under_32_bytes_does_not_start(system: System) -> None:
    env = {**os.environ, **system.processes["gateway-0"].env, "CHAT_JWT_SECRET": "too-short"}
    env["CHAT_GATEWAY_PORT"] = "0"
    process = await asyncio.create_subprocess_exec(
        str(BIN / "switchboard-gateway"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(WAIT):
        output, _ = await process.communicate()
    assert process.returncode != 0
    assert b"at least 32 bytes" in output
