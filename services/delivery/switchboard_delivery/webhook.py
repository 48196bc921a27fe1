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

import httpx
import structlog
from pydantic_core import to_json
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from switchboard_contracts.batches import EVENT_CONTENT_TYPE, decode_events
from switchboard_contracts.events import Envelope
from switchboard_runtime.amqp import Bus, declare_service_queues
from switchboard_runtime.consumer import DeathHeaders
from switchboard_runtime.settling import InOrderQueue, Outcome, Received

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
        self._queue: InOrderQueue | None = None

    async def declare(self) -> None:
        """Connect and declare the queue; what is published from then on waits for `run`."""
        await self.bus.connect()
        channel = await self.bus.connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        (queue,) = await declare_service_queues(channel, self.bus.topology, QUEUE)
        self._queue = InOrderQueue(queue)

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
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            await self._queue.consume(lambda message: self._forward(http, message))

    async def _forward(self, http: httpx.AsyncClient, message: Received) -> Outcome:
        """Post a message's events, and say what is to become of the message."""
        try:
            events = decode_events(message.body, message.content_type)
        except ValueError:
            log.exception("unreadable webhook message dead-lettered", routing_key=message.routing_key)
            return Outcome.DEAD_LETTER
        failed = []
        for raw in events:
            body = to_json(raw)
            try:
                await self._post(http, body, Envelope.model_validate(raw))
            except Exception as exc:
                log.exception("webhook gave up; event dead-lettered", routing_key=message.routing_key)
                failed.append((body, raw, exc))
        if failed and len(failed) == len(events):
            return Outcome.DEAD_LETTER  # to `<ns>.webhook.dead`
        if failed and not await self._dead_letter(failed):
            return Outcome.REQUEUE
        return Outcome.HANDLED

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
