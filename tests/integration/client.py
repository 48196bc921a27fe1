"""A protocol v1 client as a test drives it: real WebSocket, frames kept, waits on events."""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import websockets
from websockets.asyncio.client import ClientConnection

from .system import JWT_SECRET, System

Frame = dict[str, Any]
# Generous: a 2-core CI machine running five services and the tests can stall for a while.
WAIT = 30.0


def token(user_id: str, *, secret: str = JWT_SECRET, expires_in: int = 600, **claims: Any) -> str:
    payload = {"sub": user_id, "exp": int(time.time()) + expires_in, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Client:
    """Records every frame; `next(event)` and `wait(...)` await frames instead of sleeping."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        # perf_counter() at which each new_message frame arrived, in order.
        self.arrivals: list[float] = []
        self._cursor: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, url: str, user_id: str | None = None, **options: Any) -> "Client":
        headers = {"Authorization": f"Bearer {token(user_id)}"} if user_id else None
        client = cls(await websockets.connect(url, additional_headers=headers, max_size=None, **options))
        if user_id:
            auth = await client.next("authenticated")
            client.user_id, client.session_id = auth["user_id"], auth["session_id"]
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["event"] == "new_message":
                    self.arrivals.append(time.perf_counter())
                async with self._changed:
                    self.frames.append(frame)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            async with self._changed:
                self._changed.notify_all()

    async def send(self, event: str, data: Any) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def send_message(self, chat_id: str, content: str, temp_id: str | None = None, **extra: Any) -> str:
        temp_id = temp_id or uuid.uuid4().hex
        await self.send("send_message", {"chat_id": chat_id, "content": content, "tempId": temp_id, **extra})
        return temp_id

    async def wait(self, predicate: Callable[[list[Frame]], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.frames) or self._reader.done())
        if not predicate(self.frames):
            raise AssertionError(
                f"socket closed ({self.close_code}) before the expected frames; got {self.frames[-5:]}"
            )

    async def next(self, event: str, timeout: float = WAIT) -> Any:
        """The data of the next `event` frame not returned before."""
        start = self._cursor.get(event, 0)

        def found(frames: list[Frame]) -> bool:
            return any(f["event"] == event for f in frames[start:])

        await self.wait(found, timeout)
        index = next(i for i in range(start, len(self.frames)) if self.frames[i]["event"] == event)
        self._cursor[event] = index + 1
        return self.frames[index]["data"]

    def of(self, event: str) -> list[Any]:
        return [f["data"] for f in self.frames if f["event"] == event]

    def messages(self, chat_id: str | None = None) -> list[Frame]:
        return [m for m in self.of("new_message") if chat_id is None or m["chat_id"] == chat_id]

    async def wait_messages(
        self, count: int, chat_id: str | None = None, timeout: float = WAIT
    ) -> list[Frame]:
        """Wait until `count` distinct message ids arrived (a redelivered copy counts once)."""
        await self.wait(lambda _: len({m["id"] for m in self.messages(chat_id)}) >= count, timeout)
        return self.messages(chat_id)

    async def wait_closed(self, timeout: float = WAIT) -> int | None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


class Api:
    """The gateway's HTTP API as one user."""

    def __init__(self, system: System, user_id: str, gateway: int = 0) -> None:
        self.http = httpx.AsyncClient(
            base_url=system.gateway_url(gateway),
            headers={"Authorization": f"Bearer {token(user_id)}"},
            timeout=WAIT,
        )

    async def create_chat(self, members: list[str], kind: str = "group") -> str:
        response = await self.http.post("/chats", json={"type": kind, "members": members})
        assert response.status_code == 201, response.text
        chat_id: str = response.json()["id"]
        return chat_id

    async def history(self, chat_id: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/chats/{chat_id}/messages", params=params)

    async def add_member(self, chat_id: str, user_id: str) -> None:
        response = await self.http.post(f"/chats/{chat_id}/members", json={"user_id": user_id})
        assert response.status_code == 201, response.text

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        response = await self.http.delete(f"/chats/{chat_id}/members/{user_id}")
        assert response.status_code == 204, response.text

    async def aclose(self) -> None:
        await self.http.aclose()
