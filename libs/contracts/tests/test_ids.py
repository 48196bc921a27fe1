import time
from uuid import UUID

from switchboard_contracts.events import Envelope, SessionOpened
from switchboard_contracts.ids import new_id


def _millis(value: UUID) -> int:
    return int(value.hex[:12], 16)


def test_new_ids_are_version_7_stdlib_uuids_with_the_time_first() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert type(made) is UUID
    assert made.version == 7
    assert before <= _millis(made) <= after


def test_an_id_made_in_a_later_millisecond_sorts_after() -> None:
    first = new_id()
    # Wait for the clock itself (no event to await): the next millisecond.
    while time.time_ns() // 1_000_000 <= _millis(first):
        pass
    second = new_id()
    assert second > first
    assert str(second) > str(first)  # the text form sorts the same way, as in an index on text


def test_event_ids_are_time_ordered() -> None:
    event = SessionOpened(session_id="s-1", user_id="u", gateway_id="gw-1")
    assert Envelope.wrap(event, "gateway").id.version == 7
    assert Envelope(type=SessionOpened.TYPE, source="gateway", data={}).id.version == 7
