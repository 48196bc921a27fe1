"""The load generator's parts: a client session as a chat app holds one, the ledger of what was
sent and what arrived, and the open-loop clock.

Every message's content starts with `<run>:<n>`, so each arrival is matched to the send it came
from: its due time (latency is measured from when the send was *due*, not from when it went out,
so a late send cannot hide a slow system: no coordinated omission), who must receive it, and who
already did. Latencies go into HDR histograms in microseconds.
"""

import asyncio
import contextlib
import functools
import gc
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets
from hdrh.histogram import HdrHistogram
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.typing import BytesLike

from tests.integration.client import token

# 1 µs to 10 minutes at 3 significant digits: a latency past ten minutes is a failed run anyway.
LOWEST_US, HIGHEST_US, DIGITS = 1, 600_000_000, 3
# A send more than 10 ms behind its schedule counts as late: the generator itself fell behind.
LATE_SECONDS = 0.010


def quiet_collector() -> None:
    """Keep the garbage collector's full passes out of the load generator's measurements.

    With thousands of sessions alive, every object of every one of them is walked by each full
    collection; with the default thresholds (700, 10, 10) a reconnect storm of 5,000 ran seven
    of them, 4.4 of the load generator's 7.5 s of CPU, on the cores the system under test also
    needs, and each stalled every session's reads for over half a second. A young generation of
    50,000 objects makes full passes rare without letting a run's memory grow unbounded; cyclic
    garbage is still collected, by the young passes that find it.
    """
    gc.set_threshold(50_000, 20, 100)


def histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def summary(h: HdrHistogram) -> dict[str, float]:
    """p50 / p90 / p99 / p99.9 / max in milliseconds."""
    if h.get_total_count() == 0:
        return {"count": 0}
    ms = {f"p{q:g}": h.get_value_at_percentile(q) / 1000 for q in (50, 90, 99, 99.9)}
    return {"count": h.get_total_count(), **ms, "max": h.get_max_value() / 1000}


# A client keeps its token and reconnects with it: one is signed per user, the first time it is
# needed. Every user belongs to one scenario, and an hour is longer than any scenario runs.
TOKEN_SECONDS = 3600


def bearer(user_id: str, secret: str) -> dict[str, str]:
    """The Authorization header of one user, as the tests' clients sign it."""
    return {"Authorization": f"Bearer {_token(user_id, secret)}"}


@functools.cache
def _token(user_id: str, secret: str) -> str:
    return token(user_id, secret=secret, expires_in=TOKEN_SECONDS)


@dataclass
class Message:
    chat_id: str
    due: float
    waiting: set[str]
    last: float = 0.0
    # Whether its sender's `message_sent` has come (the first one is the one timed).
    confirmed: bool = False


@dataclass
class Ledger:
    """What was sent, what each member must receive, and what arrived, message by message."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    messages: dict[int, Message] = field(default_factory=dict)
    # Send -> the last member to receive it (the group scenarios' figure), send -> each member,
    # and send -> the sender's `message_sent` (what a sender waits for before showing it sent).
    to_last: HdrHistogram = field(default_factory=histogram)
    to_each: HdrHistogram = field(default_factory=histogram)
    to_confirm: HdrHistogram = field(default_factory=histogram)
    confirmed: int = 0
    unconfirmed: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    outstanding: int = 0
    out_of_order: int = 0
    _settled: asyncio.Event = field(default_factory=asyncio.Event)
    _confirmed: asyncio.Event = field(default_factory=asyncio.Event)

    def content(self, n: int, padding: str) -> str:
        return f"{self.run}:{n} {padding}"

    def expect(
        self, n: int, chat_id: str, due: float, recipients: Iterable[str], *, confirmed: bool = True
    ) -> None:
        """Message n must reach `recipients`; with `confirmed`, its sender must also get
        `message_sent` through a session of this ledger."""
        waiting = set(recipients)
        self.messages[n] = Message(chat_id, due, waiting)
        self.outstanding += len(waiting)
        self.unconfirmed += 1 if confirmed else 0
        self._settled.clear()
        if confirmed:
            self._confirmed.clear()

    def temp_id(self, n: int) -> str:
        """The tempId send n goes out with: `confirm` reads n back from the `message_sent`."""
        return f"{self.run}-{n}"

    def confirm(self, temp_id: object, now: float) -> None:
        """A `message_sent` arrived at `now`. Every one counts towards `confirmed` (a repeated
        one shows as more confirmations than sends); only the first for a send of this run is
        timed, from when that send was due."""
        self.confirmed += 1
        self.unconfirmed -= 1
        run, _, n = str(temp_id).rpartition("-")
        message = self.messages.get(int(n)) if run == self.run and n.isdigit() else None
        if message is not None and not message.confirmed:
            message.confirmed = True
            self.to_confirm.record_value(max(LOWEST_US, int((now - message.due) * 1e6)))
        self._check()

    def number(self, content: str) -> int | None:
        head = content.split(" ", 1)[0]
        run, _, n = head.partition(":")
        return int(n) if run == self.run and n.isdigit() else None

    def arrived(self, user: str, n: int, now: float) -> None:
        message = self.messages.get(n)
        if message is None or user not in message.waiting:
            # Not expected by this user (or already counted for them on this or another device).
            return
        message.waiting.discard(user)
        self.to_each.record_value(max(LOWEST_US, int((now - message.due) * 1e6)))
        message.last = max(message.last, now)
        if not message.waiting:
            self.to_last.record_value(max(LOWEST_US, int((message.last - message.due) * 1e6)))
        self.outstanding -= 1
        self._check()

    def _check(self) -> None:
        if self.unconfirmed <= 0:
            self._confirmed.set()
            if self.outstanding <= 0:
                self._settled.set()

    async def settled(self, timeout: float) -> bool:
        """Wait until every send was confirmed (`message_sent`) and every expected delivery
        arrived; False when some are still missing at the timeout."""
        return await self._wait(self._settled, timeout)

    async def confirmations(self, timeout: float) -> bool:
        """Wait until every send was confirmed; False when some were not at the timeout."""
        return await self._wait(self._confirmed, timeout)

    async def _wait(self, event: asyncio.Event, timeout: float) -> bool:
        self._check()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return event.is_set()

    def lost(self) -> int:
        return sum(len(m.waiting) for m in self.messages.values())


class FrameReader(ClientConnection):
    """A client connection that hands each text frame to `on_text` as it is parsed.

    websockets' own reading puts each frame through a queue and a future for `recv()`; with
    thousands of sessions in one process that was most of the load generator's CPU per frame, on
    the cores the system under test needs. The server sends every frame whole (never
    fragmented); a fragment would go to the library's queue, which nobody reads, and show up as
    a lost message.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_text: Callable[[BytesLike], None] | None = None
        # Frames parsed before the session set `on_text` (right after the handshake).
        self.early: list[BytesLike] = []

    def process_event(self, event: Any) -> None:
        if (
            self.response is not None
            and isinstance(event, Frame)
            and event.opcode is Opcode.TEXT
            and event.fin
        ):
            if self.on_text is None:
                self.early.append(event.data)
            else:
                self.on_text(event.data)
            return
        super().process_event(event)


class Session:
    """One client connection, as a chat app holds it: reads every frame, acknowledges messages.

    Acknowledgements are coalesced the way a client on a fast stream does: the ids that arrived
    while the reader was busy go out in one `message_received` when it next waits for data.
    """

    def __init__(self, ws: FrameReader, user: str, ledger: Ledger | None) -> None:
        self.ws = ws
        self.user = user
        self.ledger = ledger
        self.authenticated = asyncio.Event()
        self.flushed = asyncio.Event()
        self.flushed_count = 0
        self.received = 0
        self.seen: set[str] = set()
        # Highest seq seen per chat: a lower one after it is a reordering.
        self.last_seq: dict[str, int] = {}
        self._acks: list[str] = []
        self._ack_wanted = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._acker = asyncio.create_task(self._ack())

    @classmethod
    async def open(cls, url: str, user: str, secret: str, ledger: Ledger | None) -> "Session":
        async for attempt in AsyncRetrying(
            # A refused or reset connection under a storm is retried as a client would, with
            # backoff; so is one the gateway closed before answering (its request-head deadline
            # passed while one side was too busy to send or read it).
            retry=retry_if_exception_type(
                (OSError, websockets.InvalidStatus, websockets.InvalidMessage, TimeoutError)
            ),
            stop=stop_after_attempt(5),
            wait=wait_exponential_jitter(multiplier=0.2, max=3),
            reraise=True,
        ):
            with attempt:
                ws = await websockets.connect(
                    url,
                    additional_headers=bearer(user, secret),
                    max_size=None,
                    # The benchmark measures the server; keep-alive pings from 20,000 clients
                    # would be load the scenario does not describe.
                    ping_interval=None,
                    open_timeout=60,
                    # Every target is on loopback: no proxy is ever in the way, and looking for
                    # one reads the whole environment at each connect.
                    proxy=None,
                    create_connection=FrameReader,
                )
        if not isinstance(ws, FrameReader):
            raise TypeError(f"websockets made a {type(ws).__name__}, not the FrameReader asked for")
        return cls(ws, user, ledger)

    async def _read(self) -> None:
        """Until the connection closes; its frames come to `_on_frame` as they are parsed."""
        ws = self.ws
        early, ws.early = ws.early, []
        for raw in early:
            self._on_frame(raw)
        ws.on_text = self._on_frame
        await ws.wait_closed()

    def _on_frame(self, raw: BytesLike) -> None:
        frame = orjson.loads(raw)
        event, data = frame["event"], frame["data"]
        if event == "new_message":
            self._on_message(data)
        elif event == "authenticated":
            self.authenticated.set()
        elif event == "queue_flushed":
            self.flushed_count = data["count"]
            self.flushed.set()
        elif event == "message_sent":
            if self.ledger is not None:
                self.ledger.confirm(data.get("tempId"), time.perf_counter())
        elif event in ("message_error", "error") and self.ledger is not None:
            self.ledger.errors[f"{event}:{data.get('code')}"] += 1

    def _on_message(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.received += 1
        message_id = data["id"]
        self._acks.append(message_id)
        self._ack_wanted.set()
        if message_id in self.seen:
            if self.ledger is not None:
                self.ledger.duplicates += 1
            return
        self.seen.add(message_id)
        chat, seq = data["chat_id"], data["seq"]
        if seq <= self.last_seq.get(chat, 0) and self.ledger is not None:
            self.ledger.out_of_order += 1
        self.last_seq[chat] = max(seq, self.last_seq.get(chat, 0))
        if self.ledger is not None and (n := self.ledger.number(data["content"])) is not None:
            self.ledger.arrived(self.user, n, now)

    async def _ack(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self._ack_wanted.wait()
                self._ack_wanted.clear()
                # The protocol takes at most 1,000 ids per acknowledgement.
                while self._acks:
                    ids, self._acks = self._acks[:1000], self._acks[1000:]
                    await self.send("message_received", {"message_ids": ids})

    async def wait(self, event: asyncio.Event, timeout: float = 120) -> None:
        """Wait for one of this session's events, failing at once (not at the timeout) if the
        socket closes first."""
        waiter = asyncio.create_task(event.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not event.is_set():
            state = f"closed with {self.ws.close_code}" if self._reader in done else "timed out"
            raise RuntimeError(f"session of {self.user} {state} before the expected frame")

    async def send(self, event: str, data: Any) -> None:
        await self.ws.send(orjson.dumps({"event": event, "data": data}).decode())

    async def send_message(self, chat_id: str, content: str, temp_id: str) -> None:
        await self.send("send_message", {"chat_id": chat_id, "content": content, "tempId": temp_id})

    def drop(self) -> None:
        """The connection vanishes (a phone leaving coverage): no close frame."""
        transport = self.ws.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        self._acker.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(BaseException):
            await self._acker


async def open_sessions(
    urls: list[str],
    users: list[str],
    secret: str,
    ledger: Ledger | None,
    *,
    concurrency: int = 200,
    flushed: bool = True,
    ready: HdrHistogram | None = None,
) -> list[Session]:
    """Connect every user (user i to urls[i % len(urls)]), `concurrency` handshakes at a time,
    and wait for each to be authenticated and, with `flushed`, caught up. With `ready`, how
    long each took from this call (µs) goes into that histogram."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, user: str) -> Session:
        async with gate:
            session = await Session.open(urls[i % len(urls)], user, secret, ledger)
            await session.wait(session.flushed if flushed else session.authenticated)
            if ready is not None:
                ready.record_value(max(LOWEST_US, int((time.perf_counter() - started) * 1e6)))
            return session

    return list(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))


async def close_all(sessions: Iterable[Session]) -> None:
    await asyncio.gather(*(s.close() for s in sessions))


@dataclass
class Schedule:
    """How the open-loop clock kept time."""

    target_rate: float
    sent: int
    seconds: float
    late: int
    worst_lag: float

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def open_loop(rate: float, seconds: float, send: Callable[[int, float], Awaitable[None]]) -> Schedule:
    """Call `send(n, due)` for n = 0, 1, ... with message n due at start + n / rate, whatever
    happened to the sends before it (open loop)."""
    total = max(1, int(rate * seconds))
    # A short lead so the first sends are not late because of the set-up before this call.
    start = time.perf_counter() + 0.2
    late, worst = 0, 0.0
    last = start
    for n in range(total):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > LATE_SECONDS:
            late += 1
            worst = max(worst, -delay)
        await send(n, due)
        last = time.perf_counter()
    # n sends span n intervals of 1 / rate: the last one's interval ends one beyond it.
    return Schedule(rate, total, last - start + 1 / rate, late, worst)
