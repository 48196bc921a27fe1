"""Frames for clients packed many to a broker message, and split by routing keys."""

import pytest

from switchboard_contracts.batches import BATCH_CONTENT_TYPE, decode_events, encode_batch
from switchboard_contracts.routing import (
    Live,
    Reply,
    RouteFrame,
    Signal,
    pack_route,
    route_messages,
    unpack_route,
)


def test_every_kind_of_frame_comes_back_as_it_went() -> None:
    frames: list[RouteFrame] = [
        Live(b'{"event":"new_message"}', ("bob", "cy"), "m1", "c1", 7, except_session="s1", left_chat=None),
        Signal(b'{"event":"presence"}', ("ann",)),
        Reply(b'{"event":"message_sent"}', "gw-1", "s9"),
        Live(b'{"event":"member_left"}', ("dan",), left_chat="c2"),
    ]
    assert unpack_route(pack_route(frames)) == frames


def test_a_body_that_does_not_match_its_index_is_refused() -> None:
    body = pack_route([Signal(b"abc", ("ann",))])
    with pytest.raises(ValueError, match="accounts for"):
        unpack_route(body + b"x")
    with pytest.raises(ValueError, match="index"):
        unpack_route(b"no index line")


def test_one_message_names_every_user_and_gateway_once() -> None:
    frames: list[RouteFrame] = [Live(b"a", ("bob", "cy")), Signal(b"b", ("bob",)), Reply(b"c", "gw-1", "s1")]
    [(keys, body, count)] = route_messages(frames)
    assert keys == ["user.bob", "user.cy", "gw.gw-1"]
    assert count == 3 and unpack_route(body) == frames


def test_a_group_larger_than_the_key_limit_is_split_with_its_members() -> None:
    members = tuple(f"u{i}" for i in range(25))
    messages = route_messages([Live(b"hi", members, "m1", "c1", 1)], max_keys=10)
    assert [len(keys) for keys, _, _ in messages] == [10, 10, 5]
    users = [user for _, body, _ in messages for frame in unpack_route(body) for user in frame.users]  # type: ignore[union-attr]
    assert tuple(users) == members


def test_frames_past_the_key_limit_start_a_new_message() -> None:
    frames = [Signal(b"x", (f"u{i}",)) for i in range(5)]
    messages = route_messages(frames, max_keys=2)
    assert [keys for keys, _, _ in messages] == [["user.u0", "user.u1"], ["user.u2", "user.u3"], ["user.u4"]]


def test_a_batch_of_events_is_a_json_array_and_a_lone_event_reads_as_one() -> None:
    events = [b'{"id":"1"}', b'{"id":"2"}']
    assert decode_events(encode_batch(events), BATCH_CONTENT_TYPE) == [{"id": "1"}, {"id": "2"}]
    assert decode_events(b'{"id":"3"}', "application/json") == [{"id": "3"}]
    with pytest.raises(ValueError, match="array"):
        decode_events(b'{"id":"3"}', BATCH_CONTENT_TYPE)
