"""Session events with the store in memory: who goes online, and who hears of it."""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

import orjson

from switchboard_contracts.events import SessionOpened, SessionRegistered, UserWentOnline
from switchboard_contracts.routing import Signal
from switchboard_presence.handlers import on_sessions_opened
from switchboard_presence.store import OpenedSession, Store
from switchboard_runtime.uow import Outbox, UnitOfWork


class MemoryStore:
    def __init__(self, contacts: dict[str, list[str]], within_grace: set[str]) -> None:
        self.sessions: dict[str, str] = {}
        self.contacts = contacts
        self.within_grace = within_grace

    async def beat(self, gateway_ids: Sequence[str], now: datetime) -> set[str]:
        return set()

    async def online_among(self, users: Iterable[str]) -> set[str]:
        return set(users) & set(self.sessions.values())

    async def add_sessions(self, sessions: Sequence[OpenedSession]) -> set[str]:
        new = {s[0] for s in sessions if s[0] not in self.sessions}
        self.sessions.update((s[0], s[1]) for s in sessions)
        return new

    async def cancel_graces(self, users: Iterable[str]) -> set[str]:
        returning = set(users) & self.within_grace
        self.within_grace -= returning
        return returning

    async def online_contacts(self, users: Sequence[str]) -> dict[str, list[str]]:
        online = set(self.sessions.values())
        return {user: [c for c in self.contacts.get(user, []) if c in online] for user in users}


def opened(session: str, user: str) -> SessionOpened:
    return SessionOpened(session_id=session, user_id=user, gateway_id="gw-1", flush_id=f"f-{session}")


async def test_a_batch_of_sessions_registers_each_and_announces_each_user_online_once() -> None:
    store = MemoryStore({"ann": ["bob", "cy", "dan"], "dan": ["ann"]}, within_grace={"dan"})
    store.sessions["s-bob"] = "bob"
    uow = UnitOfWork(cast(Store, store), Outbox("presence", partitions=4))

    # Ann opens two sessions at once; Dan comes back within his grace period (his first session:
    # flushed as one that came online, but nobody is told he was ever gone).
    await on_sessions_opened([opened("s1", "ann"), opened("s2", "ann"), opened("s3", "dan")], uow)

    types = [key.rsplit(".", 1)[0] for key in uow.outbox.keys]
    assert types == [UserWentOnline.TYPE] + [SessionRegistered.TYPE] * 3
    registered = [orjson.loads(body)["data"] for body in uow.outbox.bodies[1:]]
    assert [(r["session_id"], r["user_went_online"]) for r in registered] == [
        ("s1", True),
        ("s2", False),
        ("s3", True),
    ]
    # Ann's contacts with a session hear it once: Bob (online), and Dan (his session just opened).
    [signal] = uow.outbox.frames
    assert isinstance(signal, Signal) and signal.users == ("bob", "dan")
    assert orjson.loads(signal.frame)["data"] == {"user_id": "ann", "status": "online", "last_seen": None}
