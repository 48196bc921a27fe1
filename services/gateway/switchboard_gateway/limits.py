"""Abuse limits of one gateway (docs/protocol.md section 9, docs/reliability.md "Abuse limits").

All of them are per gateway process: counting across gateways would need shared state on every
connect and every send, and a load balancer spreading clients over N gateways bounds the total
at N times a limit anyway.

- open WebSockets per client address (`too_many_connections`, close 4429);
- sessions per user (`too_many_sessions`, close 4429);
- `send_message` per user, a token bucket shared by the user's sessions (`rate_limited`);
- `send_message` and `sync` per client address (`rate_limited`);
- frames read per connection and per client address (read more slowly past it, never refused);
- new WebSockets per client address (`rate_limited`, HTTP 429 before the socket opens), each
  connection closed for a protocol violation costing its address more of that allowance;
- browser origins allowed to open a WebSocket (`origin_not_allowed`, HTTP 403 before accept);
- a deadline for the head of every HTTP request, WebSocket upgrades included
  (`request_timeout`, HTTP 408): uvicorn has none of its own.
"""

import asyncio
import contextlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import h11
import orjson
import structlog
from aiolimiter import AsyncLimiter
from uvicorn.protocols.http.h11_impl import H11Protocol

from switchboard_contracts.errors import ErrorCode

from .metrics import VIOLATIONS
from .settings import Settings

__all__ = [
    "Counts",
    "HeaderDeadlineProtocol",
    "Limits",
    "UserLimits",
    "header_deadline_protocol",
    "raw_response",
]

log = structlog.get_logger()

T = TypeVar("T")


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
        return take_now(bucket)

    def _forget_refilled(self) -> None:
        now = time.monotonic()
        while self._gone:
            user_id, left_at = next(iter(self._gone.items()))
            if now - left_at < self.refill_seconds:
                break
            del self._gone[user_id]
            self._buckets.pop(user_id, None)


def take_now(bucket: AsyncLimiter) -> bool:
    """One unit of `bucket` if it has one, without waiting; False otherwise.

    aiolimiter only offers an awaitable `acquire`, which completes without suspending when the
    bucket has capacity; driving it one step here lets code that is not a coroutine (a
    protocol's `connection_made`) take a token the same way.
    """
    if not bucket.has_capacity():
        return False
    step = bucket.acquire()
    try:
        step.send(None)
    except StopIteration:
        return True
    step.close()  # it would have waited after all: nothing was taken
    return False


class Keyed(Generic[T]):
    """One `T` per key (a client address), made on first use. Past `most` keys the least recently
    used is forgotten; it comes back new (full), which only errs towards letting through."""

    def __init__(self, make: Callable[[], T], most: int = 100_000) -> None:
        self.make = make
        self.most = most
        self._items: OrderedDict[str, T] = OrderedDict()

    def of(self, key: str) -> T:
        item = self._items.pop(key, None)
        if item is None:
            item = self.make()
        self._items[key] = item  # now the most recently used
        if len(self._items) > self.most:
            self._items.popitem(last=False)
        return item


class Pace:
    """A rate to wait on: `per_second` after a burst of `burst`, kept as the time the next unit is
    due (GCRA, the "virtual scheduling" form of a token bucket).

    Why not aiolimiter here: its `acquire` keeps a heap of waiting futures and re-arms a timer on
    every call; with a hundred connections of one address waiting on the same bucket that was a
    tenth of the gateway's CPU under a frame flood (py-spy, docs/reliability.md section 7). Here
    each caller learns at once how long to sleep, in O(1), and waiters are served in the order
    they asked.
    """

    # Every connection has one (its own read pace): no instance dict.
    __slots__ = ("due", "interval", "slack")

    def __init__(self, burst: float, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.slack = burst * self.interval
        self.due = 0.0  # monotonic time by which every unit handed out so far is paid for

    def reserve(self, amount: float = 1.0) -> float:
        """Take `amount` units now and return the seconds to wait before using them."""
        now = time.monotonic()
        self.due = max(self.due, now) + amount * self.interval
        return max(0.0, self.due - self.slack - now)

    def take_now(self, amount: float = 1.0) -> bool:
        """Take `amount` units if they are free now; False, and nothing taken, if not."""
        now = time.monotonic()
        due = max(self.due, now) + amount * self.interval
        if due - self.slack > now:
            return False
        self.due = due
        return True

    def charge(self, amount: float, most_seconds: float) -> None:
        """Take `amount` units whether free or not, running into debt: the units after them come
        that much later. The debt past the burst is kept under `most_seconds`."""
        now = time.monotonic()
        self.due = min(max(self.due, now) + amount * self.interval, now + self.slack + most_seconds)


class Buckets(Keyed[Pace]):
    """A token bucket per key, to be refused by when empty (or charged past it: `Pace.charge`)."""

    def __init__(self, burst: int, per_second: float, most: int = 100_000) -> None:
        super().__init__(lambda: Pace(burst, per_second), most)

    def take(self, key: str) -> bool:
        """One token of the key's bucket, or False and nothing taken; callable outside a task."""
        return self.of(key).take_now()


class ReadPace:
    """Waits before each frame is read until both the connection's pace and its address's allow.

    Past either rate nothing is refused: the gateway reads that socket more slowly, so the
    client's own TCP window fills and a flood costs the gateway no more than the rates allow.
    """

    __slots__ = ("address", "own")

    def __init__(self, own: Pace, address: Pace | None) -> None:
        self.own = own
        self.address = address

    async def take(self, amount: float = 1) -> None:
        if (wait := self.own.reserve(amount)) > 0:
            await asyncio.sleep(wait)
        if self.address is not None and (wait := self.address.reserve(amount)) > 0:
            await asyncio.sleep(wait)


# However many violations an address piles up, its new connections are refused at most this long
# past its burst: long enough that a violating loop gets nearly nothing through, short enough
# that the other users of a NAT it shares are not locked out for long after it stops.
PENALTY_MOST_SECONDS = 60.0


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
        # `sync` from one address, all its connections together (each has its own limit too).
        self.address_syncs = Buckets(settings.address_sync_burst, settings.address_syncs_per_second)
        # Frames read from one address, all its connections together (each has its own pace too).
        self.address_reads = Keyed(
            lambda: Pace(settings.address_frame_burst, settings.address_frames_per_second)
        )
        # New connections from one address (a reconnect loop is work for three services), and
        # what a connection closed for a protocol violation costs the address on top.
        self.address_connects = Buckets(settings.address_connect_burst, settings.address_connects_per_second)
        self.violation_cost = settings.address_violation_cost
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies)
        self.frame_burst = settings.frame_burst
        self.frames_per_second = settings.frames_per_second

    @property
    def count_connects_per_socket(self) -> bool:
        """Only when proxies are trusted does a WebSocket's address differ from the TCP peer's,
        which the HTTP protocol already counted against `address_connects` on accept."""
        return bool(self.trusted_proxies)

    def read_pace(self, address: str | None) -> "ReadPace":
        """How fast one new connection's frames are read (docs/protocol.md section 9)."""
        own = Pace(self.frame_burst, self.frames_per_second)
        return ReadPace(own, self.address_reads.of(address) if address is not None else None)

    def connect_allowed(self, peer: str) -> bool:
        """A new TCP connection from `peer`: counted against its address's connect rate, unless
        it is a trusted proxy (its clients are counted one by one at their handshakes)."""
        if self.trusted_proxies:
            with contextlib.suppress(ValueError):
                if any(ipaddress.ip_address(peer) in net for net in self.trusted_proxies):
                    return True
        return self.address_connects.take(peer)

    def violation(self, address: str | None, kind: str) -> None:
        """A connection from `address` was closed for breaking the protocol (`kind`: the error
        code): the address pays for `violation_cost` new connections on top of the one it made,
        so a loop of violating reconnects is answered 429 before it costs the gateway a parse,
        an authentication and a session (docs/protocol.md section 9)."""
        VIOLATIONS.labels(kind).inc()
        if address is not None and self.violation_cost:
            self.address_connects.of(address).charge(self.violation_cost, PENALTY_MOST_SECONDS)

    def origin_allowed(self, origin: str | None) -> bool:
        """No list: any origin. No Origin header: not a browser, so not a cross-site page either."""
        return not self.origins or origin is None or normalize_origin(origin) in self.origins


def raw_response(status: str, code: ErrorCode, message: str, *headers: str) -> bytes:
    """A whole HTTP/1.1 answer with the JSON error body, written before uvicorn parses anything."""
    body = orjson.dumps({"code": code.value, "message": message})
    head = "".join(
        f"{line}\r\n"
        for line in (
            f"HTTP/1.1 {status}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *headers,
            "connection: close",
        )
    )
    return f"{head}\r\n".encode() + body


REQUEST_TIMEOUT_RESPONSE = raw_response(
    "408 Request Timeout",
    ErrorCode.REQUEST_TIMEOUT,
    "the request line and headers did not arrive in time",
)
TOO_FAST_RESPONSE = raw_response(
    "429 Too Many Requests",
    ErrorCode.RATE_LIMITED,
    "this address opens connections too fast; reconnect with back-off",
    "retry-after: 1",
)


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
    limits: "Limits | None" = None
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # New connections from one address past its rate are answered before anything is read:
        # a reconnect loop then costs the gateway an accept and a write, not a handshake.
        peer = transport.get_extra_info("peername")
        if self.limits is not None and isinstance(peer, tuple) and not self.limits.connect_allowed(peer[0]):
            transport.write(TOO_FAST_RESPONSE)
            transport.close()
            return
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
            if self.limits is not None:
                self.limits.violation(self.client[0] if self.client else None, ErrorCode.REQUEST_TIMEOUT)
        self.transport.close()


def header_deadline_protocol(seconds: float, limits: Limits | None = None) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http` option, with this deadline and connect limit."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds, "limits": limits}
    )
