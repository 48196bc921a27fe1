"""One client session: a bounded send buffer, its writer task, and catch-up ordering.

Each session has a bounded buffer drained by a writer task of its own, so a slow socket never
stalls the route consumer or other sessions. The buffer and the writer exist only while there
is something to write: most sessions are idle most of the time, and an idle one holds neither.

A session starts "catching up": delivery flushes what its user has not acknowledged, page by
page (the next page is asked for once the buffer has room), while live messages for the user
wait in arrival order. When the last page is in, `queue_flushed` goes out and the held live
messages follow, minus those the flush already sent and those older than what the flush sent
for their chat (another device acknowledged them meanwhile; history has them). So a session
sees each chat in seq order even when messages arrive while its backlog is in flight.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiolimiter import AsyncLimiter

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.ids import new_id
from switchboard_contracts.pages import unpack_page
from switchboard_contracts.wire import encode_frame

from .routed import Live, Page, ToSession

__all__ = ["CLOSE_TRY_AGAIN", "Session"]

log = structlog.get_logger()

# RFC 6455 1013 "try again later": the client reconnects and catches up from its queue.
CLOSE_TRY_AGAIN = 1013
CATCH_UP_TIMEOUT = "catch_up_timeout"
# Ask for the next flush page once no more than this many frames, and no more than a quarter of
# the byte bound, wait for the socket: a page (at most 4 MiB) then still fits, even of large
# messages, and the socket never runs dry for long.
NEXT_PAGE_WATERMARK = 100
# Message ids this session sent lately, so a sync does not send again what the live stream or a
# queue flush already did. A sync starts right after connecting, so the last 10,000 cover it.
RECENT_IDS = 10_000

# Writes frames to the socket, all that were waiting at once (ws.py `frame_sender`).
Send = Callable[[list[bytes]], Awaitable[None]]
# The same without waiting: False, with nothing written, when the socket has no room now.
SendNow = Callable[[list[bytes]], bool]
Close = Callable[[int, str], Coroutine[Any, Any, None]]

_background: set[asyncio.Task[None]] = set()


# Slots, and nothing made before it is needed: idle sessions are what a gateway holds most of (the
# target is 20,000 on one gateway at 30 KB each). Measured with tracemalloc in the gateway, per
# idle session: with an `asyncio.Queue` (three deques of 760 bytes each), an `asyncio.Event` (one
# more), a writer task waiting on the queue and an instance dict of 30 attributes, a session was
# 7.2 KB; with slots, and the buffer, writer and event made only when needed, it is 0.6 KB.
@dataclass(eq=False, slots=True)
class Session:
    user_id: str
    send: Send
    close: Close
    # Frames waiting for the socket (held live messages count separately against the same bound).
    buffer_limit: int
    # Bytes waiting for the socket, held or buffered: ten thousand 64 KB messages must not fit.
    buffer_bytes_limit: int = 16 * 1024 * 1024
    # A flush that has not finished by then (delivery or presence down) ends the session with
    # 1013, so the client reconnects and gets a whole flush rather than live messages out of order.
    flush_timeout: float = 120.0
    device_id: str | None = None
    # The client's address (or the one a trusted proxy names), for the per-address limits.
    address: str | None = None
    # Called with the position to continue after when a flush page is done and there is room.
    # Asks delivery for the next page of a queue flush: (after_position, after_cursor).
    request_page: Callable[[int, str], Coroutine[Any, Any, None]] | None = None
    # Writes at once when the socket has room (ws_protocol.py), so most bursts need no writer task.
    send_now: SendNow | None = None
    # How fast this session may send `typing` (created on its first `typing`).
    typing_limit: AsyncLimiter | None = None
    # How often this session may `sync` (created on its first `sync`).
    sync_limit: AsyncLimiter | None = None
    id: str = field(default_factory=lambda: f"s-{new_id().hex}")
    catching_up: bool = True
    # A `sync` is replaying history: live messages wait, queue flush pages are ignored.
    syncing: bool = False
    closed: bool = False
    # Frames waiting for the socket, oldest first; None when there are none (an empty deque is
    # 760 bytes, kept by every idle session if it stayed).
    _frames: deque[bytes] | None = None
    # Bytes waiting for the socket, and bytes of held live messages: bounded together, but only
    # the first drains while a catch-up is under way, so only it decides when there is room.
    _bytes: int = 0
    _held_bytes: int = 0
    _held: list[Live] = field(default_factory=list)
    _sent_ids: dict[str, None] = field(default_factory=dict)
    _flushed_seq: dict[str, int] = field(default_factory=dict)
    _flushed_count: int = 0
    _next_page_after: int | None = None
    _next_page_cursor: str = ""
    # The catch-up under way, and the page of it the session accepts next (None: none until the
    # next page is asked for). Anything else is a late or repeated page and is ignored.
    flush_id: str = ""
    _expected_after: int | None = None
    # Writes `_frames` while there are any, started by the push that finds none running. A task
    # that failed to write stays here, so no other starts: the frames then wait, as they did for
    # a writer that lived as long as the session, until the bound drops the session or it ends.
    _writer: asyncio.Task[None] | None = None
    # A write is due at the end of this event-loop turn (`_write_now`).
    _write_due: bool = False
    _flush_timer: asyncio.TimerHandle | None = None
    # Set when the socket took enough to have room; made by the first `room()` that must wait.
    _drained: asyncio.Event | None = None
    _sync_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.begin_catch_up()

    async def _write_loop(self) -> None:
        frames = self._frames
        while frames:
            # Everything waiting goes in one write; what comes meanwhile, in the next.
            burst = list(frames)
            self._taken(burst)
            await self.send(burst)
            self._written()
        # All written, and no await since the last look: a push from now on starts a new writer.
        self._frames = None
        self._writer = None

    def _has_room(self) -> bool:
        waiting = len(self._frames) if self._frames is not None else 0
        return waiting <= NEXT_PAGE_WATERMARK and self._bytes <= self.buffer_bytes_limit // 4

    def _room_made(self) -> None:
        if self._drained is not None:
            self._drained.set()

    async def room(self) -> None:
        """Wait until the socket has taken most of what waits for it (as for a flush page)."""
        while not self._has_room() and not self.closed:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    def push(self, frame: bytes) -> None:
        """Queue a frame for the socket; a client that lets the buffer fill is dropped."""
        if self.closed:
            return
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        full = len(frames) >= self.buffer_limit
        if self._bytes + self._held_bytes + len(frame) > self.buffer_bytes_limit or full:
            self.drop(ErrorCode.SLOW_CONSUMER.value)
            return
        frames.append(frame)
        self._bytes += len(frame)
        if self._writer is None and not self._write_due:
            # After this turn: what else the turn pushes (a reply and its delivery info, the
            # frames of one route batch) goes in the same write.
            self._write_due = True
            asyncio.get_running_loop().call_soon(self._write_now)

    def _write_now(self) -> None:
        """Write what waits if the socket takes it now; else start a writer task that waits."""
        self._write_due = False
        frames = self._frames
        if self._writer is not None or not frames:
            return
        burst = list(frames)
        if self.send_now is not None and self.send_now(burst):
            self._taken(burst)
            self._frames = None
            self._written()
            return
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")

    def _taken(self, burst: list[bytes]) -> None:
        """`burst`, everything that waited, is on its way to the socket."""
        if self._frames is not None:
            self._frames.clear()
        self._bytes -= sum(map(len, burst))

    def _written(self) -> None:
        if self._has_room():
            self._room_made()
        self._maybe_request_page()

    def drop(self, reason: str) -> None:
        """Close with 1013: the client reconnects and catches up from its queue."""
        if self.closed:
            return
        log.warning("session dropped", reason=reason, session_id=self.id, user_id=self.user_id)
        self.closed = True
        self._room_made()
        self._spawn(self.close(CLOSE_TRY_AGAIN, reason))

    def end(self, code: int, reason: str, frame: bytes) -> None:
        """Send `frame`, then close with `code`: the server ends the session for a reason of its
        own (an expired token), not the client's reading."""
        if self.closed:
            return
        self.push(frame)
        self.closed = True
        self._room_made()
        self._spawn(self.close(code, reason))

    def deliver(self, frame: ToSession) -> None:
        if isinstance(frame, Live):
            if self.catching_up:
                self._hold(frame)
            elif not self._caught_up_past(frame):
                self._push_message(frame.message_id, frame.frame)
        elif isinstance(frame, Page):
            if self._current_page(frame):
                self._take_page(frame)
        else:
            self.push(frame.frame)

    def _caught_up_past(self, live: Live) -> bool:
        """A message at or below what a catch-up already sent for its chat."""
        return live.seq is not None and live.seq <= self._flushed_seq.get(live.chat_id or "", 0)

    def sent_of(self, message_ids: Iterable[str]) -> list[str]:
        """Those of these ids this session has sent to its client (the last RECENT_IDS), in the
        canonical form it sent them; any other string, well-formed or not, is left out."""
        sent = self._sent_ids
        found = []
        for message_id in message_ids:
            if message_id in sent:
                found.append(message_id)
            elif (lowered := message_id.lower()) in sent:  # a client that upper-cases UUIDs
                found.append(lowered)
        return found

    def _push_message(self, message_id: str | None, frame: bytes) -> None:
        if message_id is not None:
            if message_id in self._sent_ids:
                return
            self._sent_ids[message_id] = None
            if len(self._sent_ids) > RECENT_IDS:
                del self._sent_ids[next(iter(self._sent_ids))]
        self.push(frame)

    def _current_page(self, page: Page) -> bool:
        return (
            self.catching_up
            and page.flush_id == self.flush_id
            and self._expected_after is not None
            and page.after == self._expected_after
        )

    def _take_page(self, page: Page) -> None:
        try:
            entries = unpack_page(page.body)
        except ValueError:
            log.exception("unreadable flush page", session_id=self.id)
            self.drop(ErrorCode.INTERNAL.value)
            return
        for entry in entries:
            # A message already sent (the page published twice, or live before) is sent once.
            self._push_message(entry.message_id, entry.frame)
            self._note_sent(entry.chat_id, entry.seq)
        self._expected_after = None  # a repeat of this page is ignored from now on
        self._flushed_count += page.count
        if page.more_after is not None:
            self._next_page_after, self._next_page_cursor = page.more_after, page.more_cursor
            self._maybe_request_page()
        else:
            self.push(encode_frame("queue_flushed", {"count": self._flushed_count}))
            self.end_catch_up()

    def _hold(self, live: Live) -> None:
        held_too_much = self._bytes + self._held_bytes + len(live.frame) > self.buffer_bytes_limit
        if len(self._held) >= self.buffer_limit or held_too_much:
            self.drop(ErrorCode.SLOW_CONSUMER.value)
            return
        self._held.append(live)
        self._held_bytes += len(live.frame)

    def _maybe_request_page(self) -> None:
        after = self._next_page_after
        if after is None or self.closed or self.request_page is None:
            return
        if self._has_room():
            self._next_page_after = None
            self._expected_after = after
            self._spawn(self.request_page(after, self._next_page_cursor))

    def begin_catch_up(self) -> None:
        """Hold live messages until delivery's flush for this session ends."""
        self.catching_up = True
        self.flush_id = new_id().hex
        self._expected_after = 0
        self._flushed_seq, self._flushed_count = {}, 0
        self._next_page_after = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = asyncio.get_running_loop().call_later(
            self.flush_timeout, self.drop, CATCH_UP_TIMEOUT
        )

    def start_sync(self, replay: Coroutine[Any, Any, None], seen: dict[str, int]) -> None:
        """Begin a sync whose replay runs as a task of this session (it ends with the session)."""
        self.begin_sync(seen)
        self._sync_task = asyncio.create_task(replay, name=f"sync-{self.id}")

    def begin_sync(self, seen: dict[str, int] | None = None) -> None:
        """A device replays what it missed itself: hold live messages, drop the queue flush.

        A new flush id makes every page of a queue flush under way stale. There is no time
        limit: the sync advances as fast as the client reads, and its held messages are bounded
        like the buffer.
        """
        self.syncing = True
        self.catching_up = True
        self.flush_id = new_id().hex
        self._expected_after = self._next_page_after = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        # What the device says it has is not sent again, by the sync or by a late live message.
        for chat_id, seq in (seen or {}).items():
            self._note_sent(chat_id, seq)

    def push_synced(self, message_id: str, chat_id: str, seq: int, frame: bytes) -> None:
        self._push_message(message_id, frame)
        self._note_sent(chat_id, seq)

    def end_sync(self) -> None:
        self.syncing = False
        self.end_catch_up()

    def _note_sent(self, chat_id: str | None, seq: int | None) -> None:
        if chat_id is not None and seq is not None:
            self._flushed_seq[chat_id] = max(seq, self._flushed_seq.get(chat_id, 0))

    def end_catch_up(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self.catching_up = False
        held, self._held = self._held, []
        self._held_bytes = 0
        for live in held:
            if self._caught_up_past(live):
                continue  # older than what the catch-up sent: already sent, or acknowledged meanwhile
            self._push_message(live.message_id, live.frame)  # skipped if the catch-up sent it
        # The per-chat floors stay: live messages of a chat arrive in seq order, so one at or
        # below what the catch-up sent, arriving after it, is a late copy (or one acknowledged
        # by another device meanwhile) and is dropped too.

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def stop(self) -> None:
        """End the writer; what it had not sent is still pending in delivery."""
        self.closed = True
        self._room_made()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        if self._sync_task is not None:
            self._sync_task.cancel()
        if self._writer is None:
            return
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer
