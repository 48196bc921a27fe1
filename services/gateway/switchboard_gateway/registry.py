"""Who is connected to this gateway, and which routing keys its queue is bound to for them."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from switchboard_contracts.topology import Topology

from .routed import ToSession
from .sessions import Session

__all__ = ["BoundGroups", "Bindable", "KeyedLocks", "Registry"]


class Bindable(Protocol):
    """The route queue's bindings (the runtime's `Bindings`): `bind` returns once the broker
    routes the key here, `unbind` lets it go without waiting."""

    async def bind(self, routing_key: str) -> None: ...

    def unbind(self, routing_key: str) -> None: ...

    async def restore(self) -> None: ...


class KeyedLocks:
    """One lock per key (a user, a chat room), kept only while someone holds or waits for it.

    Each lock counts its holders and waiters and is dropped at zero, so no waiter is ever left
    holding a lock that a newcomer has replaced.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class BoundGroups:
    """Sessions grouped by a key (a user, a chat room); this gateway's queue is bound to the
    key's routing key while its group has anyone, and unbound when the last one leaves."""

    def __init__(self, bindings: Bindable, routing_key: Callable[[str], str]) -> None:
        self.bindings = bindings
        self.routing_key = routing_key
        self.groups: dict[str, set[Session]] = {}
        self._lock = KeyedLocks()

    async def add(self, key: str, session: Session) -> None:
        """Bound before the session counts as a member, so nothing routed meanwhile is missed."""
        async with self._lock(key):
            if not self.groups.get(key):
                await self.bindings.bind(self.routing_key(key))
            self.groups.setdefault(key, set()).add(session)

    async def discard(self, key: str, session: Session) -> bool:
        """Take the session out of the group; True if it was in it."""
        async with self._lock(key):
            group = self.groups.get(key)
            if group is None or session not in group:
                return False
            group.discard(session)
            if not group:
                del self.groups[key]
                self.bindings.unbind(self.routing_key(key))
            return True

    def members(self, key: str) -> set[Session]:
        return self.groups.get(key, set())


class Registry:
    def __init__(self, bindings: Bindable) -> None:
        self.sessions: dict[str, Session] = {}
        self.by_user = BoundGroups(bindings, Topology.user_key)

    async def attach(self, session: Session) -> None:
        """Bind the user's route (first session here) before the session counts as connected."""
        await self.by_user.add(session.user_id, session)
        self.sessions[session.id] = session

    async def detach(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            await self.by_user.discard(session.user_id, session)

    def to_session(self, session_id: str, frame: ToSession) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.deliver(frame)

    def to_user(self, user_id: str, except_session: str | None, frame: ToSession) -> None:
        group = self.by_user.groups.get(user_id)
        if group is None:
            return  # a user this gateway does not hold: another gateway's
        for session in group:
            if session.id != except_session:
                session.deliver(frame)
