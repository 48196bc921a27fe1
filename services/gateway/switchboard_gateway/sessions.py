"""One client session: a bounded send buffer, its writer task, and catch-up ordering.

Each session has a bounded buffer drained by its own writer task, so a slow socket never stalls
the route consumer or other sessions. A session starts "catching up": live messages for its
user wait (in arrival order) until delivery has flushed the user's queue to it, then go out,
skipping any the flush already sent. So a session sees each chat in seq order even when
messages arrive while its backlog is in flight.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import structlog

from switchboard_contracts.errors import ErrorCode

__all__ = ["CLOSE_SLOW_CONSUMER", "Session"]

log = structlog.get_logger()

# RFC 6455 1013 "try again later": the client reconnects and catches up from its queue.
CLOSE_SLOW_CONSUMER = 1013

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]

_closing: set[asyncio.Task[None]] = set()


@dataclass(eq=False)
class Session:
    user_id: str
    send: Send
    close: Close
    # Frames waiting for the socket; one bound of the buffer.
    buffer_limit: int
    # Bytes waiting for the socket, the other bound: ten thousand 64 KB messages must not fit.
    buffer_bytes_limit: int = 16 * 1024 * 1024
    # How long live messages wait behind a queue flush before they are sent anyway.
    flush_timeout: float = 30.0
    device_id: str | None = None
    id: str = field(default_factory=lambda: f"s-{uuid4().hex}")
    catching_up: bool = True
    closed: bool = False
    _held: list[tuple[str | None, bytes]] = field(default_factory=list)
    _flushed: set[str] = field(default_factory=set)
    _buffer: asyncio.Queue[bytes | None] = field(init=False)
    _buffered_bytes: int = 0
    _writer: asyncio.Task[None] | None = None
    _flush_timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self._buffer = asyncio.Queue(self.buffer_limit)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")
        self.begin_catch_up()

    async def _write_loop(self) -> None:
        while (frame := await self._buffer.get()) is not None:
            self._buffered_bytes -= len(frame)
            await self.send(frame.decode())

    def push(self, frame: bytes) -> None:
        """Queue a frame for the socket; a client that lets the buffer fill is dropped."""
        if self.closed:
            return
        if self._buffered_bytes + len(frame) > self.buffer_bytes_limit or self._buffer.full():
            self._drop()
            return
        self._buffer.put_nowait(frame)
        self._buffered_bytes += len(frame)

    def _drop(self) -> None:
        if self.closed:
            return
        log.warning("slow consumer dropped", session_id=self.id, user_id=self.user_id)
        self.closed = True
        task = asyncio.create_task(self.close(CLOSE_SLOW_CONSUMER, ErrorCode.SLOW_CONSUMER.value))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def deliver(self, kind: str, frame: bytes, message_id: str | None) -> None:
        if kind == "live" and self.catching_up:
            if len(self._held) >= self.buffer_limit:
                self._drop()
            else:
                self._held.append((message_id, frame))
        elif kind == "flush":
            if message_id:
                self._flushed.add(message_id)
            self.push(frame)
        elif kind == "flush-done":
            self.push(frame)
            self.end_catch_up()
        else:
            self.push(frame)

    def begin_catch_up(self) -> None:
        """Hold live messages until delivery's flush for this session ends (or the timeout)."""
        self.catching_up = True
        self._flushed = set()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = asyncio.get_running_loop().call_later(self.flush_timeout, self.end_catch_up)

    def end_catch_up(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self.catching_up:
            return
        self.catching_up = False
        held, flushed = self._held, self._flushed
        self._held, self._flushed = [], set()
        for message_id, frame in held:
            if message_id is None or message_id not in flushed:
                self.push(frame)

    async def stop(self) -> None:
        """End the writer; what it had not sent is still pending in delivery."""
        self.closed = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        if self._writer is None:
            return
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer
