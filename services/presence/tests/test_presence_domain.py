from datetime import UTC, datetime

import orjson

from switchboard_presence.domain import presence_of, presence_signal

SEEN = datetime(2026, 11, 25, 20, 17, 14, tzinfo=UTC)


def test_online_has_no_last_seen() -> None:
    presence = presence_of("bob", online=True, last_seen=SEEN)
    assert presence.status == "online" and presence.last_seen is None


def test_offline_keeps_last_seen_and_never_seen_is_null() -> None:
    assert presence_of("bob", online=False, last_seen=SEEN).last_seen == SEEN
    never = presence_of("bob", online=False, last_seen=None)
    assert never.status == "offline" and never.last_seen is None


def test_every_contact_gets_one_frame_as_a_signal() -> None:
    signal = presence_signal(presence_of("bob", online=False, last_seen=SEEN), ["carol", "alice", "carol"])

    assert signal is not None
    assert signal.users == ("alice", "carol")
    assert orjson.loads(signal.frame) == {
        "event": "presence",
        "data": {"user_id": "bob", "status": "offline", "last_seen": "2026-11-25T20:17:14Z"},
    }


def test_the_user_is_never_told_about_themselves() -> None:
    signal = presence_signal(presence_of("bob", online=True, last_seen=None), ["bob", "alice"])
    assert signal is not None and signal.users == ("alice",)
    assert presence_signal(presence_of("bob", online=True, last_seen=None), ["bob"]) is None
