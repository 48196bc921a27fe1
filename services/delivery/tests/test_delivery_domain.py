from uuid import uuid4

from switchboard_delivery.domain import delivery_info, recipients_of


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
