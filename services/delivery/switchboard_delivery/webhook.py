"""The webhook: notification events POSTed to one URL, for a push service to act on.

Runs in the delivery process when `CHAT_WEBHOOK_URL` is set. It consumes its own durable queue
(`<ns>.webhook`, bound to NotificationRequested and NotificationCancelled) and POSTs each
envelope as it is, with `Idempotency-Key: <envelope id>`: delivery is at least once (a crash
before the ack posts again), and the receiver de-duplicates on that key. Events are posted one
at a time, in queue order (those of a batch in their order), so a cancellation never overtakes
the request it cancels.
"""

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiormq.exceptions
import httpx
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic_core import to_json
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from switchboard_contracts.batches import EVENT_CONTENT_TYPE, decode_events
from switchboard_contracts.events import Envelope
from switchboard_runtime.amqp import Bus, declare_service_queues
from switchboard_runtime.consumer import DeathHeaders

from .domain import webhook_retries
from .settings import Settings

__all__ = ["QUEUE", "Webhook"]

log = structlog.get_logger()

# The name in OPTIONAL_SUBSCRIPTIONS: queue `<ns>.webhook`, dead letters in `<ns>.webhook.dead`.
QUEUE = "webhook"
# Posting is sequential; a few envelopes waiting locally keep the next POST from waiting on the
# broker, and a small window leaves the rest for a standby instance should this one die.
PREFETCH = 32
# Backoff between attempts: 0.5 s doubling, capped so that a receiver back up is noticed soon.
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 15.0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return webhook_retries(exc.response.status_code)
    return isinstance(exc, httpx.TransportError)  # refused, reset, timed out


class Webhook:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.timeout = settings.webhook_timeout_seconds
        self.retry_seconds = settings.webhook_retry_seconds
        # A connection of its own, so a slow receiver never holds up delivery's channel.
        self.bus = Bus(settings.amqp_url, settings.topology(), source="delivery-webhook")
        self._queue: AbstractQueue | None = None

    async def declare(self) -> None:
        """Connect and declare the queue; what is published from then on waits for `run`."""
        await self.bus.connect()
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        (self._queue,) = await declare_service_queues(channel, self.bus.topology, QUEUE)

    async def close(self) -> None:
        await self.bus.close()

    @contextlib.asynccontextmanager
    async def declared(self) -> AsyncIterator[None]:
        """Declared for as long as the service runs: the queue must exist before delivery can
        emit a notification, since an event published while it does not is not kept for it."""
        try:
            await self.declare()
            yield
        finally:
            await self.close()

    async def run(self) -> None:
        if self._queue is None:
            raise RuntimeError("Webhook.declare() has not been called")
        async with httpx.AsyncClient(timeout=self.timeout) as http, self._queue.iterator() as messages:
            async for message in messages:
                await self._forward(http, message)

    async def _forward(self, http: httpx.AsyncClient, message: AbstractIncomingMessage) -> None:
        try:
            events = decode_events(message.body, message.content_type)
        except ValueError:
            log.exception("unreadable webhook message dead-lettered", routing_key=message.routing_key)
            await _settle(message, ok=False)
            return
        failed = []
        for raw in events:
            body = to_json(raw)
            try:
                await self._post(http, body, Envelope.model_validate(raw))
            except Exception as exc:
                log.exception("webhook gave up; event dead-lettered", routing_key=message.routing_key)
                failed.append((body, raw, exc))
        if failed and len(failed) == len(events):
            await _settle(message, ok=False)
        elif failed and not await self._dead_letter(failed):
            await _requeue(message)
        else:
            await _settle(message, ok=True)

    async def _dead_letter(self, failed: list[tuple[bytes, object, Exception]]) -> bool:
        """The events of a batch that gave up, each alone to `<ns>.webhook.dead`; False if the
        broker did not take them (the batch is then posted again, the receiver de-duplicating)."""
        try:
            for body, raw, exc in failed:
                await self.bus.publish(
                    "dead-letter",
                    QUEUE,
                    body,
                    headers={
                        DeathHeaders.REASON: "rejected",
                        DeathHeaders.QUEUE: self.bus.topology.service_queue(QUEUE),
                        DeathHeaders.TIME: datetime.now(UTC).isoformat(),
                        DeathHeaders.ERROR: repr(exc)[:500],
                    },
                    message_id=str(raw.get("id")) if isinstance(raw, dict) else None,
                    persistent=True,
                    content_type=EVENT_CONTENT_TYPE,
                )
        except Exception:
            log.exception("dead-lettering a webhook event failed; its batch goes back to the queue")
            return False
        return True

    async def _post(self, http: httpx.AsyncClient, body: bytes, envelope: Envelope) -> None:
        headers = {"content-type": "application/json", "Idempotency-Key": str(envelope.id)}
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential_jitter(multiplier=FIRST_WAIT_SECONDS, max=MAX_WAIT_SECONDS),
            stop=stop_after_delay(self.retry_seconds),
            before_sleep=lambda state: log.warning(
                "webhook failed; retrying",
                event_id=str(envelope.id),
                attempt=state.attempt_number,
                error=repr(state.outcome.exception() if state.outcome else None),
            ),
            reraise=True,
        ):
            with attempt:
                (await http.post(self.url, content=body, headers=headers)).raise_for_status()


async def _requeue(message: AbstractIncomingMessage) -> None:
    try:
        await message.nack(requeue=True)
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
        log.warning("channel closed before requeueing a webhook batch; the broker redelivers it")


async def _settle(message: AbstractIncomingMessage, *, ok: bool) -> None:
    try:
        if ok:
            await message.ack()
        else:
            await message.reject(requeue=False)  # to `<ns>.webhook.dead`
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
        # The channel it came on is gone; the broker redelivers it, and the key de-duplicates.
        log.warning("channel closed before settling a webhook event; the broker redelivers it")
