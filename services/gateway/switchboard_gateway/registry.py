"""Who is connected to this gateway, and which `user.<id>` routes its queue is bound to."""

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

from aio_pika.abc import AbstractQueue

from switchboard_contracts.topology import Topology

from .routed import Routed
from .sessions import Session

__all__ = ["KeyedLocks", "Registry"]


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


class Registry:
    def __init__(self, queue: AbstractQueue, topology: Topology) -> None:
        self.queue = queue
        self.topology = topology
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[str, set[Session]] = defaultdict(set)
        self._user_lock = KeyedLocks()

    async def attach(self, session: Session) -> None:
        """Bind the user's route (first session here) before the session counts as connected."""
        async with self._user_lock(session.user_id):
            if not self.by_user.get(session.user_id):
                await self.queue.bind(self.topology.route_exchange, Topology.user_key(session.user_id))
            self.by_user[session.user_id].add(session)
            self.sessions[session.id] = session

    async def detach(self, session: Session) -> None:
        async with self._user_lock(session.user_id):
            if self.sessions.pop(session.id, None) is None:
                return
            users = self.by_user[session.user_id]
            users.discard(session)
            if not users:
                del self.by_user[session.user_id]
                with contextlib.suppress(Exception):
                    await self.queue.unbind(self.topology.route_exchange, Topology.user_key(session.user_id))

    def to_session(self, session_id: str, routed: Routed) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            session.deliver(routed)

    def to_user(self, user_id: str, except_session: str | None, routed: Routed) -> None:
        for session in self.by_user.get(user_id, ()):
            if session.id != except_session:
                session.deliver(routed)
