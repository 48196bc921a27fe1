"""Abuse limits of one gateway (docs/protocol.md section 9, docs/reliability.md "Abuse limits").

All of them are per gateway process: counting across gateways would need shared state on every
connect and every send, and a load balancer spreading clients over N gateways bounds the total
at N times a limit anyway.

- open WebSockets per client address (`too_many_connections`, close 4429);
- sessions per user (`too_many_sessions`, close 4429);
- `send_message` per user, a token bucket shared by the user's sessions (`rate_limited`);
- browser origins allowed to open a WebSocket (`origin_not_allowed`, HTTP 403 before accept);
- a deadline for the head of every HTTP request, WebSocket upgrades included
  (`request_timeout`, HTTP 408): uvicorn has none of its own.
"""

import asyncio
import time
from collections import OrderedDict

import h11
import orjson
import structlog
from aiolimiter import AsyncLimiter
from uvicorn.protocols.http.h11_impl import H11Protocol

from switchboard_contracts.errors import ErrorCode

from .settings import Settings

__all__ = ["Counts", "HeaderDeadlineProtocol", "Limits", "UserLimits", "header_deadline_protocol"]

log = structlog.get_logger()


class Counts:
    """How many of something each key holds (sockets per address, sessions per user), at most
    `limit` each. Taking and giving back are synchronous, so a check and its increment cannot be
    split by another connection arriving in between."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def take(self, key: str) -> bool:
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)


class UserLimits:
    """Sessions per user, and one `send_message` token bucket per user shared by those sessions.

    A bucket outlives its user's last session until it has refilled: otherwise disconnecting and
    reconnecting would buy a fresh burst every time. Then it is dropped, so buckets of users long
    gone do not pile up.
    """

    def __init__(self, max_sessions: int, burst: int, per_second: float) -> None:
        self.sessions = Counts(max_sessions)
        self.burst = burst
        # Seconds an empty bucket takes to refill whole (aiolimiter's `time_period`).
        self.refill_seconds = burst / per_second
        self._buckets: dict[str, AsyncLimiter] = {}
        # Users with no session here, oldest first, with the monotonic time the last one left.
        self._gone: OrderedDict[str, float] = OrderedDict()

    def open(self, user_id: str) -> bool:
        """Count a new session of the user; False if the user already has the most allowed."""
        if not self.sessions.take(user_id):
            return False
        self._gone.pop(user_id, None)
        self._forget_refilled()
        return True

    def close(self, user_id: str) -> None:
        self.sessions.give_back(user_id)
        if not self.sessions.held(user_id) and user_id in self._buckets:
            self._gone[user_id] = time.monotonic()
        self._forget_refilled()

    async def take_send(self, user_id: str) -> bool:
        """One `send_message` token of the user's bucket; False, and nothing taken, if it is empty."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = AsyncLimiter(self.burst, self.refill_seconds)
        if not bucket.has_capacity():
            return False
        await bucket.acquire()  # it has capacity: returns at once
        return True

    def _forget_refilled(self) -> None:
        now = time.monotonic()
        while self._gone:
            user_id, left_at = next(iter(self._gone.items()))
            if now - left_at < self.refill_seconds:
                break
            del self._gone[user_id]
            self._buckets.pop(user_id, None)


class Buckets:
    """A token bucket per key (a client address), made on first use. Past `most` keys the least
    recently used is forgotten; it comes back full, which only errs towards letting through."""

    def __init__(self, burst: int, per_second: float, most: int = 100_000) -> None:
        self.burst = burst
        self.refill_seconds = burst / per_second
        self.most = most
        self._buckets: OrderedDict[str, AsyncLimiter] = OrderedDict()

    async def take(self, key: str) -> bool:
        bucket = self._buckets.pop(key, None) or AsyncLimiter(self.burst, self.refill_seconds)
        self._buckets[key] = bucket  # now the most recently used
        if len(self._buckets) > self.most:
            self._buckets.popitem(last=False)
        if not bucket.has_capacity():
            return False
        await bucket.acquire()  # it has capacity: returns at once
        return True


def normalize_origin(origin: str) -> str:
    # Browsers send `scheme://host[:port]` in lower case without a trailing slash; configured
    # values are compared the same way so `https://App.example/` still matches.
    return origin.strip().rstrip("/").lower()


class Limits:
    """This gateway's limits, shared by its WebSocket connections (`app.state.limits`)."""

    def __init__(self, settings: Settings) -> None:
        self.addresses = Counts(settings.max_connections_per_ip)
        self.users = UserLimits(
            settings.max_sessions_per_user, settings.message_burst, settings.messages_per_second
        )
        self.origins = frozenset(normalize_origin(o) for o in settings.allowed_origins)
        # `send_message` from all the users behind one address: many accounts from one host
        # cannot multiply the per-user allowance past this.
        self.address_sends = Buckets(settings.address_message_burst, settings.address_messages_per_second)

    def origin_allowed(self, origin: str | None) -> bool:
        """No list: any origin. No Origin header: not a browser, so not a cross-site page either."""
        return not self.origins or origin is None or normalize_origin(origin) in self.origins


def _timeout_response() -> bytes:
    body = orjson.dumps(
        {
            "code": ErrorCode.REQUEST_TIMEOUT.value,
            "message": "the request line and headers did not arrive in time",
        }
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


REQUEST_TIMEOUT_RESPONSE = _timeout_response()


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for the head of each request.

    uvicorn has no such timeout: `timeout_keep_alive` runs only between requests and every byte
    received resets it, so a client that opens a connection and sends nothing, or sends a request
    head a byte at a time (slowloris), holds a socket and a file descriptor for ever. ASGI
    middleware cannot help: the application is called only once the head is complete.

    The deadline is absolute: it starts when the connection opens (or when a kept-alive
    connection finished its previous response) and trickling bytes does not extend it. It ends
    once the request line and headers are in, so a WebSocket, once upgraded, is never affected.
    A client that sent part of a head by then gets `408` with code `request_timeout`; one that
    sent nothing is closed without a word, as uvicorn closes an idle kept-alive connection: it
    may have opened the connection ahead of use, and would read an unasked-for 408 as the answer
    to the request it sends next.
    """

    header_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # Past IDLE the head is in: a body is being read, the connection was upgraded to a
        # WebSocket, or it failed (and is being closed) and the deadline has nothing left to do.
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Kept alive for another request: its head gets the same time as the first one had.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        partial, _ = self.conn.trailing_data  # what has come of the head so far
        log.info("request head not received in time; closed", client=self.client, received=len(partial))
        if partial:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def header_deadline_protocol(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http` option, with this deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
