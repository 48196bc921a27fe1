"""Chat rooms: the live channel of a chat for the ephemeral things (typing), never for messages.

A session joins a chat's room with `join_chat` (members only). This gateway's route queue is
bound to `chat.<id>` while at least one of its sessions is in that room, so a `typing` frame
published once to the room key reaches every gateway with a session in the room, and each hands
it to its own sessions there (but not to the typer's).

Typing is never stored. Each gateway expires a typing state itself when no refresh came within
the TTL, so a typer whose gateway died still stops "typing" everywhere; the typer's own gateway
says `is_typing: false` at once when the session leaves the room or goes away.
"""

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from switchboard_contracts.topology import Headers, Kind, Topology
from switchboard_contracts.wire import encode_frame

from .registry import Bindable, BoundGroups
from .routed import RoomFrame
from .sessions import Session

__all__ = ["Rooms", "typing_frame"]

Publish = Callable[[str, bytes, dict[str, object]], Awaitable[object]]


def typing_frame(chat_id: str, user_id: str, is_typing: bool) -> bytes:
    return encode_frame("user_typing", {"chat_id": chat_id, "user_id": user_id, "is_typing": is_typing})


class Rooms:
    def __init__(self, bindings: Bindable, publish: Publish, typing_ttl: float) -> None:
        self.rooms = BoundGroups(bindings, Topology.room_key)
        self.publish = publish
        self.typing_ttl = typing_ttl
        # Receiving side: (chat, typer) -> the timer that ends that typing state here.
        self._expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # Sending side: session id -> {chat: monotonic time of its last `is_typing: true`}.
        self._typing: dict[str, dict[str, float]] = defaultdict(dict)

    def joined(self, session: Session, chat_id: str) -> bool:
        return session in self.rooms.members(chat_id)

    async def join(self, session: Session, chat_id: str) -> None:
        await self.rooms.add(chat_id, session)

    async def leave(self, session: Session, chat_id: str) -> bool:
        """Take the session out of the room; True if it was in it."""
        if not await self.rooms.discard(chat_id, session):
            return False
        await self._stop_typing(session, chat_id)
        return True

    async def leave_all(self, session: Session) -> None:
        for chat_id in [chat for chat, room in self.rooms.groups.items() if session in room]:
            await self.leave(session, chat_id)
        self._typing.pop(session.id, None)

    async def typing(self, session: Session, chat_id: str, is_typing: bool) -> None:
        """Tell the room; the typer's own sessions never hear about themselves."""
        states = self._typing[session.id]
        if is_typing:
            states[chat_id] = time.monotonic()
        elif states.pop(chat_id, None) is None:
            return  # it was not typing there: nothing to take back
        headers: dict[str, object] = {
            Headers.KIND: Kind.ROOM,
            Headers.CHAT: chat_id,
            Headers.USER: session.user_id,
            Headers.TYPING: int(is_typing),
        }
        await self.publish(
            Topology.room_key(chat_id), typing_frame(chat_id, session.user_id, is_typing), headers
        )

    async def _stop_typing(self, session: Session, chat_id: str) -> None:
        since = self._typing.get(session.id, {}).get(chat_id)
        if since is not None and time.monotonic() - since < self.typing_ttl:
            with contextlib.suppress(Exception):
                await self.typing(session, chat_id, False)
        else:
            self._typing.get(session.id, {}).pop(chat_id, None)

    def deliver(self, room: RoomFrame) -> None:
        """A frame published to a room: to this gateway's sessions in it but the typer's."""
        chat_id, typer = room.chat_id, room.user_id
        key = (chat_id, typer)
        timer = self._expiry.pop(key, None)
        if timer is not None:
            timer.cancel()
        if room.typing:
            self._expiry[key] = asyncio.get_running_loop().call_later(
                self.typing_ttl, self._expire, chat_id, typer
            )
        self._push(chat_id, typer, room.frame)

    def _expire(self, chat_id: str, typer: str) -> None:
        self._expiry.pop((chat_id, typer), None)
        self._push(chat_id, typer, typing_frame(chat_id, typer, False))

    def _push(self, chat_id: str, typer: str, frame: bytes) -> None:
        for session in self.rooms.members(chat_id):
            if session.user_id != typer:
                session.push(frame)

    async def evict(self, user_id: str, chat_id: str, sessions: set[Session]) -> None:
        """The user was removed from the chat: their sessions here leave its room at once."""
        for session in sessions:
            if await self.leave(session, chat_id):
                session.push(encode_frame("chat_left", {"chat_id": chat_id, "reason": "removed"}))
