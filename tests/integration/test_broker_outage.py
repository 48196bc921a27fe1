"""Sends while the message broker is away: held until it is back, or answered `unavailable`.

These tests stop and start the local RabbitMQ (`rabbitmqctl stop_app` / `start_app`, as the chaos
run does), so they need it on loopback with `rabbitmqctl` at hand; without it they fail saying so.
Every other system of the test run is idle while they run (the tests run one at a time) and
reconnects by itself afterwards.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.chaos.faults import Infra

from .client import WAIT, Api, Client, unique
from .system import System, running_system

# How long the broker stays stopped. Longer than the short hold below, so a send must outlast
# it; with `start_app` and the services' reconnect it stays well inside the default hold (10 s).
DOWN_SECONDS = 2.0
SENDS = 5


@contextlib.asynccontextmanager
async def broker_stopped(infra: Infra) -> AsyncIterator[None]:
    """The broker is stopped inside the block and started again (and awaited) on the way out."""
    await infra.stop_broker()
    try:
        yield
    finally:
        await infra.start_broker()


async def pair(system: System) -> tuple[Client, Client, Api, str]:
    alice, bob = unique("alice"), unique("bob")
    api = Api(system, alice)
    chat = await api.create_chat([alice, bob], "direct")
    sender = await Client.connect(system.ws_url(0), alice)
    reader = await Client.connect(system.ws_url(0), bob)
    await asyncio.gather(sender.next("queue_flushed"), reader.next("queue_flushed"))
    return sender, reader, api, chat


async def send_and_wait_for_the_answer(client: Client, chat: str, content: str, temp_id: str) -> None:
    refusals_before = len(client.of("message_error"))
    await client.send_message(chat, content, temp_id)
    await client.wait(
        lambda _: bool(client.of("message_sent")) or len(client.of("message_error")) > refusals_before
    )


async def test_a_broker_restart_costs_sends_latency_not_errors(infra_urls: tuple[str, str]) -> None:
    infra = Infra(*infra_urls)
    async with running_system(*infra_urls, gateways=1) as system:
        sender, reader, api, chat = await pair(system)
        try:
            async with broker_stopped(infra):
                temp_ids = [await sender.send_message(chat, f"during the outage {n}") for n in range(SENDS)]
                await asyncio.sleep(DOWN_SECONDS)  # the outage itself, not a wait for an event
            await sender.wait(lambda _: len(sender.of("message_sent")) == SENDS, timeout=WAIT)
            assert sender.of("message_error") == []
            assert [f["tempId"] for f in sender.of("message_sent")] == temp_ids
            received = await reader.wait_messages(SENDS, chat)
            assert [m["content"] for m in received] == [f"during the outage {n}" for n in range(SENDS)]
        finally:
            await asyncio.gather(sender.close(), reader.close(), api.aclose())


async def test_past_the_hold_a_send_is_unavailable_and_its_resend_is_stored_once(
    infra_urls: tuple[str, str],
) -> None:
    infra = Infra(*infra_urls)
    async with running_system(*infra_urls, gateways=1, CHAT_SEND_HOLD_SECONDS="0.5") as system:
        sender, reader, api, chat = await pair(system)
        try:
            async with broker_stopped(infra):
                temp_id = await sender.send_message(chat, "refused for now")
                refusal = await sender.next("message_error")
            assert refusal == {
                "tempId": temp_id,
                "code": "unavailable",
                "message": refusal["message"],
                "retry_after": 5,
            }
            # The client resends with the same tempId, as the protocol says; the gateway may still be
            # reconnecting, so a resend can be refused again the same way.
            async with asyncio.timeout(WAIT):
                while not sender.of("message_sent"):
                    await send_and_wait_for_the_answer(sender, chat, "refused for now", temp_id)
            assert {e["code"] for e in sender.of("message_error")} == {"unavailable"}
            stored = sender.of("message_sent")[0]["message"]
            received = await reader.wait_messages(1, chat)
            assert [m["id"] for m in received] == [stored["id"]]
            history = (await api.history(chat)).json()
            assert [m["id"] for m in history["messages"]] == [stored["id"]]
        finally:
            await asyncio.gather(sender.close(), reader.close(), api.aclose())
