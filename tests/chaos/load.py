"""The load a chaos run keeps up: real clients over the real protocol that behave as the protocol
tells clients to (reconnect with back-off, resend unconfirmed sends with the same tempId,
acknowledge what they stored, de-duplicate by id), and remember everything they saw.
"""

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.integration.client import token

__all__ = ["Received", "Send", "User"]

# Reconnect back-off (protocol §7): from 0.2 s doubling to 2 s, with jitter. Short, because a
# chaos run measures recovery and a real client would use 0.5 s to 30 s.
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 2.0
# How often a client acknowledges what it stored, as the protocol suggests ("every few hundred
# milliseconds").
ACK_EVERY = 0.3
# A send with neither `message_sent` nor a final answer after this long goes again with the same
# tempId: its reply may have been lost with a gateway, or it was refused `internal` while the
# broker was away. Resending is safe: the server stores a tempId once.
RESEND_AFTER = 3.0


@dataclass
class Send:
    sender: str
    chat_id: str
    temp_id: str
    due: float
    last_attempt: float = 0.0
    message_id: str | None = None
    seq: int | None = None
    confirmed_at: float | None = None
    # Every message id a `message_sent` for this tempId named: more than one is a double store.
    ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Received:
    session: int
    message_id: str
    chat_id: str
    seq: int
    at: float


class User:
    """One user with one device that keeps itself connected, alternating between gateways."""

    def __init__(
        self, user_id: str, urls: list[str], chats: set[str], changed: asyncio.Condition | None = None
    ) -> None:
        self.id = user_id
        self.urls = urls
        self.chats = chats
        self.received: list[Received] = []
        self.sends: dict[str, Send] = {}
        self.sessions = 0
        # When each session (numbered from 1, as `Received.session`) opened and closed (None
        # while open): whether a device was online when a message was due.
        self.opened: list[float] = []
        self.closed: list[float | None] = []
        # The first arrival of every message id: (session, time).
        self.first_seen: dict[str, tuple[int, float]] = {}
        self.close_codes: list[int | None] = []
        # Every `message_error` the server answered a send with.
        self.errors: list[dict[str, Any]] = []
        self.flushed_at: list[float] = []
        self.wanted_online = True
        self._ws: ClientConnection | None = None
        self._to_ack: list[str] = []
        # Notified on every frame; shared by all users of a run, so a wait on a condition over
        # all of them wakes whoever's frame made it true.
        self._changed = changed or asyncio.Condition()
        # The gateway this device is connected to now.
        self.url: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._gateway = random.randrange(len(urls))

    # -- the device's life ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"user-{self.id}")

    async def stop(self) -> None:
        self.wanted_online = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def go_offline(self) -> None:
        """The phone goes off: the socket closes properly and stays closed."""
        self.wanted_online = False
        await self._close()

    def go_online(self) -> None:
        self.wanted_online = True
        self._wake()

    def cut(self) -> None:
        """The network drops mid-stream: no close frame, the TCP connection just ends."""
        if self._ws is not None:
            self._ws.transport.abort()

    def stop_reading(self) -> None:
        if self._ws is not None:
            self._ws.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.transport.resume_reading()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def session_at(self, moment: float) -> int | None:
        """The session that was open at `moment`, if any."""
        for index in range(len(self.opened) - 1, -1, -1):
            if self.opened[index] <= moment:
                closed = self.closed[index]
                return index + 1 if closed is None or closed > moment else None
        return None

    def open_until(self, session: int, moment: float) -> bool:
        """Session `session` was still open at `moment`."""
        closed = self.closed[session - 1]
        return closed is None or closed > moment

    async def _close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    def _wake(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            if not self.wanted_online:
                async with self._changed:
                    await self._changed.wait_for(lambda: self.wanted_online)
            url = self.urls[self._gateway]
            self._gateway = (self._gateway + 1) % len(self.urls)  # next time, the other one
            try:
                async with websockets.connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {token(self.id, expires_in=3600)}"},
                    max_size=None,
                    open_timeout=10,
                ) as ws:
                    self._ws, self.url = ws, url
                    self.sessions += 1
                    self.opened.append(time.perf_counter())
                    self.closed.append(None)
                    backoff = BACKOFF_FIRST
                    await self._session(ws, self.sessions)
            except (OSError, websockets.WebSocketException, TimeoutError):
                pass
            finally:
                self._ws = self.url = None
            if self.wanted_online:
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # back-off, not a sync
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, ws: ClientConnection, session: int) -> None:
        acker = asyncio.create_task(self._ack_loop(ws))
        try:
            # Every send not confirmed yet goes again, with its tempId (protocol §7, point 5).
            for send in list(self.sends.values()):
                if send.message_id is None:
                    await self._send(ws, send)
            async for raw in ws:
                await self._on_frame(json.loads(raw), session)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed[session - 1] = time.perf_counter()
            self.close_codes.append(ws.close_code)
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker
            async with self._changed:
                self._changed.notify_all()

    async def _on_frame(self, frame: dict[str, Any], session: int) -> None:
        event, data = frame["event"], frame["data"]
        now = time.perf_counter()
        if event == "new_message":
            self.received.append(Received(session, data["id"], data["chat_id"], data["seq"], now))
            self.first_seen.setdefault(data["id"], (session, now))
            self._to_ack.append(data["id"])
        elif event == "message_sent":
            send = self.sends.get(str(data["tempId"]))
            if send is not None:
                message = data["message"]
                send.ids.add(message["id"])
                if send.message_id is None:
                    send.message_id, send.seq, send.confirmed_at = message["id"], message["seq"], now
        elif event == "queue_flushed":
            self.flushed_at.append(now)
        elif event == "message_error":
            self.errors.append(data)
        async with self._changed:
            self._changed.notify_all()

    async def _ack_loop(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(ACK_EVERY)  # the client's own batching clock
            batch, self._to_ack = self._to_ack[:1000], self._to_ack[1000:]
            if batch:
                await ws.send(json.dumps({"event": "message_received", "data": {"message_ids": batch}}))
            stale = time.perf_counter() - RESEND_AFTER
            for send in list(self.sends.values()):
                if send.message_id is None and send.last_attempt < stale:
                    await self._send(ws, send)

    # -- sending -------------------------------------------------------------------------

    async def send(self, chat_id: str, due: float) -> Send:
        send = Send(self.id, chat_id, uuid.uuid4().hex, due)
        self.sends[send.temp_id] = send
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send(ws, send)
        return send  # not connected: it goes out when the device reconnects

    async def _send(self, ws: ClientConnection, send: Send) -> None:
        send.last_attempt = time.perf_counter()
        data = {"chat_id": send.chat_id, "content": f"chaos {send.temp_id}", "tempId": send.temp_id}
        await ws.send(json.dumps({"event": "send_message", "data": data}))

    async def wait(self, predicate: Any, timeout: float) -> bool:
        """Wait until `predicate()` holds, woken by every frame; False on timeout."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)
            return True
        except TimeoutError:
            return False
