"""The live set of a partitioned service's instances, from heartbeats, on a clock of the test's."""

from types import SimpleNamespace
from typing import Any

import orjson

from switchboard_runtime.membership import Membership


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def heartbeat(instance: str, *, leaving: bool = False) -> Any:
    return SimpleNamespace(body=orjson.dumps({"instance": instance, "leaving": leaving}))


async def test_instances_join_expire_and_leave() -> None:
    clock = Clock()
    membership = Membership(SimpleNamespace(), "delivery", expiry_seconds=5.0, clock=clock)  # type: ignore[arg-type]
    me = membership.id
    assert membership.live == (me,)
    assert all(membership.owner(p) == me for p in range(16))

    await membership._on_heartbeat(heartbeat("other"))
    assert membership.live == tuple(sorted((me, "other")))
    assert membership.changed.is_set()
    assert membership.last_seen("other") == 100.0
    owners = {membership.owner(p) for p in range(16)}
    assert owners == {me, "other"}

    # Silent for longer than the expiry: taken for dead (this instance never is).
    membership.changed.clear()
    clock.now += 5.1
    membership._update()
    assert membership.live == (me,)
    assert membership.changed.is_set()

    # Back, then leaving on purpose: dropped at once, without waiting for the expiry.
    await membership._on_heartbeat(heartbeat("other"))
    await membership._on_heartbeat(heartbeat("other", leaving=True))
    assert membership.live == (me,)


async def test_an_unreadable_heartbeat_changes_nothing() -> None:
    membership = Membership(SimpleNamespace(), "messages")  # type: ignore[arg-type]
    bad: list[Any] = [SimpleNamespace(body=b"not json"), SimpleNamespace(body=b'{"no": "instance"}')]
    for message in bad:
        await membership._on_heartbeat(message)
    assert membership.live == (membership.id,)
    assert not membership.changed.is_set()
