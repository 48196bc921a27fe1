"""Sessions held by this gateway, and the per-user routes that bring their messages here.

Each session has a bounded buffer drained by its own writer task, so a slow socket never stalls
the route consumer or other sessions. A session starts "catching up": live messages for its
user wait (in arrival order) until delivery has flushed the user's queue to it, then go out,
skipping any the flush already sent. So a session sees each chat in seq order even when
messages arrive while its backlog is in flight.
"""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import structlog
from aio_pika.abc import AbstractQueue

from switchboard_contracts.errors import ErrorCode
from switchboard_contracts.topology import Topology

__all__ = ["Registry", "Session"]

log = structlog.get_logger()

# RFC 6455 1013 "try again later": the client reconnects and catches up from its queue.
CLOSE_SLOW_CONSUMER = 1013

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]


@dataclass(eq=False)
class Session:
    user_id: str
    send: Send
    close: Close
    buffer_limit: int
    device_id: str | None = None
    id: str = field(default_factory=lambda: f"s-{uuid4().hex}")
    catching_up: bool = True
    _held: list[tuple[str | None, bytes]] = field(default_factory=list)
    _flushed: set[str] = field(default_factory=set)
    _buffer: asyncio.Queue[bytes | None] = field(init=False)
    _writer: asyncio.Task[None] | None = None
    closed: bool = False

    def __post_init__(self) -> None:
        self._buffer = asyncio.Queue(self.buffer_limit)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer-{self.id}")

    async def _write_loop(self) -> None:
        while (frame := await self._buffer.get()) is not None:
            await self.send(frame.decode())

    def push(self, frame: bytes) -> None:
        """Queue a frame for the socket; a client that lets the buffer fill is dropped."""
        if self.closed:
            return
        try:
            self._buffer.put_nowait(frame)
        except asyncio.QueueFull:
            self._drop()

    def _drop(self) -> None:
        if self.closed:
            return
        log.warning("slow consumer dropped", session_id=self.id, user_id=self.user_id)
        self.closed = True
        task = asyncio.create_task(self.close(CLOSE_SLOW_CONSUMER, ErrorCode.SLOW_CONSUMER.value))
        _background.add(task)
        task.add_done_callback(_background.discard)

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

    def end_catch_up(self) -> None:
        if not self.catching_up:
            return
        self.catching_up = False
        held, flushed = self._held, self._flushed
        self._held, self._flushed = [], set()
        for message_id, frame in held:
            if message_id is None or message_id not in flushed:
                self.push(frame)

    async def stop(self) -> None:
        """Let the writer finish what is buffered (bounded by the caller's timeout), then end it."""
        self.closed = True
        if self._writer is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._buffer.put_nowait(None)
        if not self._writer.done():
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer


_background: set[asyncio.Task[None]] = set()


class Registry:
    """Who is connected here, and which `user.<id>` routes this gateway's queue is bound to."""

    def __init__(self, queue: AbstractQueue, topology: Topology) -> None:
        self.queue = queue
        self.topology = topology
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[Session]] = defaultdict(set)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def attach(self, session: Session) -> None:
        """Bind the user's route (first session here) before the session counts as connected."""
        async with self._locks[session.user_id]:
            if not self.by_user.get(session.user_id):
                await self.queue.bind(self.topology.route_exchange, Topology.user_key(session.user_id))
            self.by_user[session.user_id].add(session)
            self.sessions[session.id] = session

    async def detach(self, session: Session) -> None:
        lock = self._locks[session.user_id]
        async with lock:
            self.sessions.pop(session.id, None)
            users = self.by_user.get(session.user_id)
            if users is not None:
                users.discard(session)
                if not users:
                    del self.by_user[session.user_id]
                    with contextlib.suppress(Exception):
                        await self.queue.unbind(
                            self.topology.route_exchange, Topology.user_key(session.user_id)
                        )
        if not lock.locked() and session.user_id not in self.by_user:
            self._locks.pop(session.user_id, None)

    def to_session(self, session_id: str, kind: str, frame: bytes, message_id: str | None) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.deliver(kind, frame, message_id)

    def to_user(
        self, user_id: str, except_session: str | None, kind: str, frame: bytes, message_id: str | None
    ) -> None:
        for session in self.by_user.get(user_id, ()):
            if session.id != except_session:
                session.deliver(kind, frame, message_id)
