"""Sync plans: the pure rules behind a device's catch-up from history."""

from uuid import uuid4

from switchboard_messages.domain import plan_chat_sync

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
