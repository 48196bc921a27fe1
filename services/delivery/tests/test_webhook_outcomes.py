"""What the webhook says becomes of each message it consumed (the runtime settles it so)."""

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from switchboard_contracts.batches import BATCH_CONTENT_TYPE, encode_batch
from switchboard_contracts.events import Envelope, NotificationCancelled
from switchboard_delivery.settings import Settings
from switchboard_delivery.webhook import Webhook
from switchboard_runtime.settling import Outcome

URL = "http://receiver.test/hook"


@dataclass
class Message:
    body: bytes
    content_type: str | None = BATCH_CONTENT_TYPE
    routing_key: str | None = "chat.notification.cancelled.v1.0"


def envelope() -> Envelope:
    event = NotificationCancelled(
        recipient_id="bob", chat_id=uuid.uuid4(), message_id=uuid.uuid4(), reason="delivered"
    )
    return Envelope.wrap(event, "delivery")


def batch(*envelopes: Envelope) -> Message:
    return Message(encode_batch([e.model_dump_json().encode() for e in envelopes]))


async def forward(
    monkeypatch: pytest.MonkeyPatch, message: Message, refused: set[str], broker_takes: bool = True
) -> tuple[Outcome, list[str]]:
    """Forward `message` to a receiver refusing (400) the envelopes in `refused`; returns the
    outcome and the ids published to the webhook's dead-letter queue."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400 if request.headers["idempotency-key"] in refused else 204)

    dead: list[str] = []

    async def publish(exchange: str, routing_key: str, body: bytes, **options: Any) -> bool:
        if not broker_takes:
            raise ConnectionError("broker gone")
        dead.append(options["message_id"])
        return True

    webhook = Webhook(URL, Settings())
    monkeypatch.setattr(webhook.bus, "publish", publish)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        outcome = await webhook._forward(http, message)
    return outcome, dead


async def test_a_batch_posted_in_full_is_handled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await forward(monkeypatch, batch(envelope(), envelope()), set()) == (Outcome.HANDLED, [])


async def test_an_unreadable_message_is_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await forward(monkeypatch, Message(b"not json"), set()) == (Outcome.DEAD_LETTER, [])


async def test_a_batch_whose_every_event_gave_up_is_dead_lettered_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = envelope(), envelope()
    refused = {str(first.id), str(second.id)}
    assert await forward(monkeypatch, batch(first, second), refused) == (Outcome.DEAD_LETTER, [])


async def test_the_events_that_gave_up_are_dead_lettered_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = envelope(), envelope()
    assert await forward(monkeypatch, batch(good, bad), {str(bad.id)}) == (Outcome.HANDLED, [str(bad.id)])


async def test_a_batch_goes_back_when_its_dead_letters_are_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = envelope(), envelope()
    outcome, _ = await forward(monkeypatch, batch(good, bad), {str(bad.id)}, broker_takes=False)
    assert outcome is Outcome.REQUEUE
