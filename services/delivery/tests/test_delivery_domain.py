from uuid import uuid4

import pytest

from switchboard_delivery.domain import (
    StatusUpdate,
    advance_cursor,
    decode_cursor,
    delivery_info,
    encode_cursor,
    member_frame_recipients,
    preview,
    recipients_of,
    status_frame,
    webhook_retries,
)


def test_recipients_are_members_but_the_sender() -> None:
    assert recipients_of(["ann", "bob", "cy", "bob"], "ann") == ["bob", "cy"]
    assert recipients_of(["ann"], "ann") == []


def test_delivery_info_counts_the_rest_as_queued() -> None:
    message_id = uuid4()
    assert delivery_info(message_id, 5, 3) == {
        "message_id": str(message_id),
        "delivered": 3,
        "queued": 2,
        "total": 5,
    }


def test_a_membership_change_reaches_the_members_and_the_user_it_is_about() -> None:
    assert member_frame_recipients(["ann", "bob"], "cy") == ["ann", "bob", "cy"]
    assert member_frame_recipients(["ann", "bob"], "bob") == ["ann", "bob"]


def test_no_preview_unless_configured() -> None:
    assert preview("hello there", 0) is None
    assert preview("hello there", 5) == "hello"
    assert preview("hi", 5) == "hi"
    # Characters, not bytes: an emoji is not cut in half.
    assert preview("😀😀😀", 2) == "😀😀"


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (500, True),
        (503, True),
        (408, True),
        (429, True),
        (400, False),
        (404, False),
        (410, False),
        (301, False),
    ],
)
def test_webhook_retries_server_errors_timeouts_and_rate_limits(status: int, retried: bool) -> None:
    assert webhook_retries(status) is retried


def test_a_catch_up_cursor_starts_everywhere_after_the_position_it_is_given() -> None:
    assert decode_cursor("", 0, 4) == [0, 0, 0, 0, 0]
    # A gateway that sends no cursor, or one of another partition count: one position for all.
    assert decode_cursor("", 40, 4) == [40] * 5
    assert decode_cursor("1,2,3", 40, 4) == [40] * 5
    assert decode_cursor("1,2,x,4,5", 40, 4) == [40] * 5
    assert decode_cursor("1,2,3,4,5", 40, 4) == [1, 2, 3, 4, 5]


def test_a_catch_up_cursor_moves_each_partition_to_the_last_row_it_sent() -> None:
    # Partition 1's row at 12 was not committed yet when the page (rows 10, 11, 13) was read:
    # partition 1 continues after 11, not after 13, so the next page still finds 12.
    cursor = advance_cursor([0, 0, 0, 0], [(0, 10), (1, 11), (0, 13)])
    assert cursor == [13, 11, 0, 0]
    # A partition number past the count (from a larger count before) shares the last entry.
    assert advance_cursor(cursor, [(7, 20), (2, 14)]) == [13, 11, 14, 20]
    assert decode_cursor(encode_cursor(cursor), 13, 3) == cursor


def test_a_status_names_every_recipient_that_moved_and_the_last_as_user_id() -> None:
    update = StatusUpdate(uuid4(), uuid4(), "ann", ["bob", "cy"], delivered=2, read=0, total=3)
    data = status_frame(update, "delivered")
    assert (data["user_id"], data["user_ids"], data["status"]) == ("cy", ["bob", "cy"], "delivered")
    assert (data["delivered_count"], data["read_count"], data["total"]) == (2, 0, 3)
    assert "up_to_seq" not in data


def test_a_read_status_says_up_to_where() -> None:
    update = StatusUpdate(uuid4(), uuid4(), "ann", ["bob"], delivered=1, read=1, total=1)
    assert status_frame(update, "read", up_to_seq=7)["up_to_seq"] == 7
