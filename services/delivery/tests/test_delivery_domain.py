from uuid import uuid4

import pytest

from switchboard_delivery.domain import (
    delivery_info,
    member_frame_recipients,
    preview,
    recipients_of,
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
