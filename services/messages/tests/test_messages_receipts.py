"""Sync plans and status frames: the pure rules behind receipts and multi-device catch-up."""

from uuid import uuid4

from switchboard_messages.domain import StatusChange, plan_chat_sync, status_updates

CHAT = uuid4()


def plan(**kwargs: int | None) -> tuple[str, int | None, int | None]:
    args = {"joined_seq": 0, "end_seq": 100, "seen": None, "since_seq": None, "unread": 0, "limit": 500}
    args.update(kwargs)
    sync = plan_chat_sync(CHAT, **args)  # type: ignore[arg-type]
    return sync.result, sync.from_seq, sync.to_seq


def test_replays_everything_after_what_the_device_saw() -> None:
    assert plan(seen=40) == ("replayed", 41, 100)


def test_nothing_missed_is_an_empty_replay() -> None:
    assert plan(seen=100) == ("replayed", None, None)
    assert plan(seen=150) == ("replayed", None, None)


def test_past_the_limit_sends_the_newest_and_says_compacted() -> None:
    assert plan(seen=0, limit=30) == ("compacted", 71, 100)
    assert plan(seen=70, limit=30) == ("replayed", 71, 100)


def test_never_before_the_user_joined() -> None:
    assert plan(joined_seq=60, seen=10) == ("replayed", 61, 100)
    assert plan(joined_seq=60) == ("replayed", 61, 100)


def test_unnamed_chat_starts_at_since_else_at_the_beginning() -> None:
    assert plan(since_seq=90) == ("replayed", 91, 100)
    assert plan() == ("replayed", 1, 100)


def change(sender: str, seq: int) -> StatusChange:
    return StatusChange(uuid4(), CHAT, seq, sender, 1, 1, 3)


def test_delivered_is_one_frame_per_message() -> None:
    changes = [change("a", 1), change("a", 2), change("c", 3)]
    updates = status_updates(changes, "b", "delivered")
    assert [(sender, data["message_id"]) for sender, data in updates] == [
        (c.sender_id, str(c.message_id)) for c in changes
    ]
    assert all("up_to_seq" not in data for _, data in updates)


def test_read_is_one_frame_per_sender_naming_its_newest_message() -> None:
    changes = [change("a", 1), change("c", 2), change("a", 4), change("a", 3)]
    updates = status_updates(changes, "b", "read", up_to_seq=4)
    assert [(sender, data["message_id"], data["up_to_seq"]) for sender, data in updates] == [
        ("a", str(changes[2].message_id), 4),
        ("c", str(changes[1].message_id), 4),
    ]
    assert updates[0][1]["total"] == 3 and updates[0][1]["user_id"] == "b"
