from datetime import UTC, datetime

import orjson

from switchboard_contracts.topology import Headers, Kind
from switchboard_presence.domain import presence_of, presence_signals

SEEN = datetime(2026, 11, 25, 20, 17, 14, tzinfo=UTC)


def test_online_has_no_last_seen() -> None:
    presence = presence_of("bob", online=True, last_seen=SEEN)
    assert presence.status == "online" and presence.last_seen is None


def test_offline_keeps_last_seen_and_never_seen_is_null() -> None:
    assert presence_of("bob", online=False, last_seen=SEEN).last_seen == SEEN
    never = presence_of("bob", online=False, last_seen=None)
    assert never.status == "offline" and never.last_seen is None


def test_each_contact_gets_the_frame_on_its_own_user_key_as_a_signal() -> None:
    signals = presence_signals(presence_of("bob", online=False, last_seen=SEEN), ["alice", "carol"])

    assert [(key, headers) for key, _, headers in signals] == [
        ("user.alice", {Headers.USER: "alice", Headers.KIND: Kind.SIGNAL}),
        ("user.carol", {Headers.USER: "carol", Headers.KIND: Kind.SIGNAL}),
    ]
    assert orjson.loads(signals[0][1]) == {
        "event": "presence",
        "data": {"user_id": "bob", "status": "offline", "last_seen": "2026-11-25T20:17:14Z"},
    }


def test_the_user_is_never_told_about_themselves() -> None:
    signals = presence_signals(presence_of("bob", online=True, last_seen=None), ["bob", "alice"])
    assert [key for key, _, _ in signals] == ["user.alice"]
