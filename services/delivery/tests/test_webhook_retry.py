"""The webhook's retry policy against a fake transport: what is retried, what gives up at once."""

import uuid

import httpx
import pytest

from switchboard_contracts.events import Envelope, NotificationCancelled
from switchboard_delivery.settings import Settings
from switchboard_delivery.webhook import Webhook

URL = "http://receiver.test/hook"


def envelope() -> Envelope:
    event = NotificationCancelled(
        recipient_id="bob", chat_id=uuid.uuid4(), message_id=uuid.uuid4(), reason="delivered"
    )
    return Envelope.wrap(event, "delivery")


async def post(statuses: list[int], retry_seconds: float = 30.0) -> list[httpx.Request]:
    """POST one envelope to a receiver answering `statuses` in turn; returns the requests it got."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(statuses[min(len(requests), len(statuses)) - 1])

    webhook = Webhook(URL, Settings(webhook_retry_seconds=retry_seconds))
    env = envelope()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        await webhook._post(http, env.model_dump_json().encode(), env)
    return requests


async def test_the_envelope_is_posted_as_is_with_its_id_as_idempotency_key() -> None:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    env = envelope()
    body = env.model_dump_json().encode()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        await Webhook(URL, Settings())._post(http, body, env)
    [request] = requests
    assert request.method == "POST" and str(request.url) == URL
    assert request.content == body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == str(env.id)


async def test_a_server_error_is_retried_until_it_passes() -> None:
    assert len(await post([503, 200])) == 2


async def test_a_client_error_gives_up_at_once() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        await post([400, 200])


async def test_retries_stop_after_the_configured_time() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        await post([500], retry_seconds=0.1)
